"""Submitting a job: from a tool and a user's inputs to a queued job.

One function, `submit`, does every step in order, in the caller's transaction: check the inputs'
lengths, resolve LoRA tags and trigger words in the prompt (the encoder gets the cleaned text),
bind the inputs into the tool's workflow, insert the LoRA loaders, resolve image uploads, queue
the job with its models' sources, pick where it runs (the ComfyUI Deploy traffic split), count
each LoRA's use and hold the job's quote (control/charging.py). The public API calls it; so can
the simulator or a pipeline runner. The caller commits. `prepare` does the checking and binding
alone, writing nothing, for a quote (POST /v1/quotes).

An image input takes an upload (`upload:<id>`) or an output of one of the user's own jobs
(`output:<id>`, uploaded): that is how an image passes from one pipeline step to the next without
going through the client. A `many` image input takes a list of them. A tool that is not a
ComfyUI workflow (an LLM text tool, an image utility) has no graph: no LoRAs, no models; its job
runs on the control plane (`backend = "local"`, control/local_jobs.py). A pipeline run's step job
(`run=RunLink(...)`) is charged out of the run's hold and records its run, step, item and attempt.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from swarmstation.control import charging
from swarmstation.control import jobs as jobs_ops
from swarmstation.control.charging import ChargeSettings, PipelineRoyalty, Quote, RunHold
from swarmstation.control.models import model_sources
from swarmstation.domain.lora_graph import LoraGraphError, apply_loras
from swarmstation.domain.loras import PromptTooLong, Resolution, TriggerMatcher, resolve
from swarmstation.domain.tools import BoundJob, ToolInputError, ToolSpec, bind_inputs, tool_from_dict
from swarmstation.domain.traffic_split import choose_executor
from swarmstation.domain.workflow import required_models
from swarmstation.store import queries
from swarmstation.store.models import Job, Lora, Output, Tool, Upload, User

if TYPE_CHECKING:
    from swarmstation.config import Settings

UPLOAD_REF_PREFIX = "upload:"
OUTPUT_REF_PREFIX = "output:"
#: Where a job of a tool that is not a ComfyUI workflow runs (control/local_jobs.py).
LOCAL_BACKEND = "local"


@dataclass(frozen=True)
class RunLink:
    """What makes a job a pipeline run's step job: which run, step, item (variation) and run
    attempt it belongs to; `hold` its part of the run's hold (None: the run is free); `royalty`
    the saved pipeline's author's share."""

    run_id: str
    step: str
    item: int
    attempt: int
    hold: RunHold | None = None
    royalty: PipelineRoyalty | None = None


class MatcherSource(Protocol):
    """Where a user's trigger matcher comes from (control.loras.MatcherCache in the server)."""

    def matcher_for(self, s: Session, user: User, now: datetime) -> TriggerMatcher: ...


@dataclass(frozen=True)
class SubmissionLimits:
    """The settings submission obeys (from `Settings`: max_prompt_chars, max_loras_per_job,
    max_attempts)."""

    max_prompt_chars: int
    max_loras_per_job: int
    max_attempts: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SubmissionLimits:
        return cls(settings.max_prompt_chars, settings.max_loras_per_job, settings.max_attempts)


@dataclass(frozen=True)
class Prepared:
    """A user's run of a tool, checked and bound, not yet queued: what `submit` queues and what
    `quote_run` prices."""

    tool: Tool
    bound: BoundJob
    resolution: Resolution | None
    lora_rows: dict[str, Lora]
    images: dict[str, Any]

    @property
    def applied_loras(self) -> list[tuple[str, str | None]]:
        """(slug, owner id) of each LoRA the run applies, in order (for royalties)."""
        return [(a.slug, a.owner_id) for a in self.resolution.loras] if self.resolution else []


def prepare(
    s: Session,
    *,
    user: User,
    tool_slug: str,
    inputs: dict[str, Any],
    matchers: MatcherSource,
    limits: SubmissionLimits,
    now: datetime,
    random_seed: int | None = None,
) -> Prepared:
    """Check and bind a run of `tool_slug` for `user`, writing nothing. Raises NotFound for an
    unknown tool and ToolInputError for inputs the tool cannot take."""
    tool = queries.tool_by_slug(s, tool_slug, hint="; GET /v1/tools lists them")
    spec = tool_from_dict(tool.spec)
    for name, value in inputs.items():
        if isinstance(value, str) and len(value) > limits.max_prompt_chars:
            raise ToolInputError(
                name, f"too long ({len(value)} characters, the limit is {limits.max_prompt_chars})"
            )
    resolution: Resolution | None = None
    if spec.kind == "comfyui":  # a local tool has no graph to put LoRAs in
        inputs, resolution = _resolve_loras(s, matchers, user, spec, inputs, limits, now)
    bound = bind_inputs(
        spec, inputs, random_seed=secrets.randbits(63) if random_seed is None else random_seed
    )
    rows = _lora_rows(s, resolution)
    if resolution is not None and resolution.loras:
        try:
            graph = apply_loras(bound.workflow, resolution.loras)
        except LoraGraphError as exc:
            raise ToolInputError("prompt", f"this tool cannot take LoRAs: {exc}") from exc
        bound = replace(bound, workflow=graph, required_models=required_models(graph))
    image_bindings = {
        i.name: [[b.node_id, b.input_name] for b in i.bindings] for i in spec.inputs if i.type == "image"
    }
    images = _resolve_images(s, user, bound.input_images, image_bindings)
    return Prepared(tool=tool, bound=bound, resolution=resolution, lora_rows=rows, images=images)


def quote_run(
    s: Session,
    prepared: Prepared,
    *,
    user: User,
    pricing: ChargeSettings,
    pipeline: PipelineRoyalty | None = None,
) -> Quote:
    """The most the prepared run can cost `user` (POST /v1/quotes and the hold at submission)."""
    return charging.quote(
        s,
        tool=prepared.tool,
        workflow=prepared.bound.workflow,
        applied_loras=prepared.applied_loras,
        payer=user,
        cfg=pricing,
        pipeline=pipeline,
    )


def submit(
    s: Session,
    *,
    user: User,
    tool_slug: str,
    inputs: dict[str, Any],
    matchers: MatcherSource,
    limits: SubmissionLimits,
    now: datetime,
    random_seed: int | None = None,
    pricing: ChargeSettings | None = None,
    run: RunLink | None = None,
) -> Job:
    """Queue a job of `tool_slug` for `user` (flushed, not committed). Raises NotFound for an
    unknown tool and ToolInputError for inputs the tool cannot take. With `pricing`, the job's
    quote is held in the same transaction (InsufficientCredits, 402, when the user's available
    credits are fewer: the caller rolls back and nothing is queued); without, it is free. With
    `run`, the job is a step job of that run, charged out of the run's hold (no hold of its own)."""
    prepared = prepare(
        s,
        user=user,
        tool_slug=tool_slug,
        inputs=inputs,
        matchers=matchers,
        limits=limits,
        now=now,
        random_seed=random_seed,
    )
    tool, bound, resolution, rows = prepared.tool, prepared.bound, prepared.resolution, prepared.lora_rows
    # Priced before anything is written: a tool whose price cannot apply is refused, not queued.
    royalty = run.royalty if run is not None else None
    priced = (
        quote_run(s, prepared, user=user, pricing=pricing, pipeline=royalty) if pricing is not None else None
    )
    local = tool_from_dict(tool.spec).kind != "comfyui"
    sources = {} if local else model_sources(s, [(m.folder, m.name) for m in bound.required_models])
    job = jobs_ops.submit_job(
        s,
        user_id=user.id,
        tool_slug=tool.slug,
        pool=tool.pool,
        bound=bound,
        input_images=prepared.images,
        max_attempts=limits.max_attempts,
        now=now,
        model_sources=sources,
    )
    if local:
        job.backend = LOCAL_BACKEND
    else:
        job.backend = choose_executor(
            job.id, tool.comfydeploy_percent if tool.comfydeploy_deployment_id else 0
        )
    if run is not None:
        job.run_id, job.run_step, job.run_item, job.run_attempt = run.run_id, run.step, run.item, run.attempt
    if resolution is not None:
        job.warnings = list(resolution.warnings)
        job.applied_loras = [
            {
                "slug": a.slug,
                "lora_id": rows[a.slug].id if a.slug in rows else None,
                "owner_id": a.owner_id,
                "file_name": a.file_name,
                "weight": a.weight,
                "strength_model": a.strength_model,
                "strength_clip": a.strength_clip,
                "source": a.source,
                "matched_text": a.matched_text,
            }
            for a in resolution.loras
        ]
        for a in resolution.loras:
            if a.slug in rows:
                rows[a.slug].usage_count += 1
    s.flush()
    if priced is not None and pricing is not None:
        charging.hold_for_job(
            s,
            job=job,
            payer=user,
            priced=priced,
            cfg=pricing,
            now=now,
            run_hold=run.hold if run is not None else None,
        )
    return job


def _resolve_images(
    s: Session, user: User, images: dict[str, str | list[str]], bindings: dict[str, list[list[str]]]
) -> dict[str, Any]:
    """Each image input's object: `{key, filename, content_type, bindings}` (a list of them for a
    `many` input), from the user's own upload or the user's own job's uploaded output."""
    resolved: dict[str, Any] = {}
    for name, refs in images.items():
        if isinstance(refs, list):
            resolved[name] = [_resolve_image(s, user, name, ref, []) for ref in refs]
        else:
            resolved[name] = _resolve_image(s, user, name, refs, bindings.get(name, []))
    return resolved


def _resolve_image(
    s: Session, user: User, name: str, ref: object, bindings: list[list[str]]
) -> dict[str, Any]:
    if isinstance(ref, str) and ref.startswith(UPLOAD_REF_PREFIX):
        upload = s.get(Upload, ref.removeprefix(UPLOAD_REF_PREFIX))
        if upload is None or upload.user_id != user.id:
            raise ToolInputError(name, f"unknown upload {ref!r}")
        return {
            "key": upload.key,
            "filename": f"{upload.id}.{upload.key.rsplit('.', 1)[-1]}",
            "content_type": upload.content_type,
            "bindings": bindings,
        }
    if isinstance(ref, str) and ref.startswith(OUTPUT_REF_PREFIX):
        output = s.get(Output, ref.removeprefix(OUTPUT_REF_PREFIX))
        owner = s.get(Job, output.job_id) if output is not None else None
        # someone else's output is as unknown as a missing one: never say it exists
        if output is None or owner is None or owner.user_id != user.id or not output.uploaded:
            raise ToolInputError(name, f"unknown output {ref!r}")
        return {
            "key": output.key,
            "filename": f"{output.id}.{output.key.rsplit('.', 1)[-1]}",
            "content_type": output.content_type,
            "bindings": bindings,
        }
    raise ToolInputError(
        name,
        f"must be an upload reference ('{UPLOAD_REF_PREFIX}<id>' from POST /v1/uploads) or an output "
        f"reference ('{OUTPUT_REF_PREFIX}<id>', an image one of your jobs made)",
    )


def _resolve_loras(
    s: Session,
    matchers: MatcherSource,
    user: User,
    spec: ToolSpec,
    inputs: dict[str, Any],
    limits: SubmissionLimits,
    now: datetime,
) -> tuple[dict[str, Any], Resolution | None]:
    """Resolve LoRA tags and trigger words in the prompt; the encoder gets the cleaned text."""
    prompt = inputs.get("prompt")
    if not isinstance(prompt, str) or not any(i.name == "prompt" and i.type == "string" for i in spec.inputs):
        return inputs, None
    # A tool that takes no LoRAs still gets its tags removed (ComfyUI would encode them as text).
    matcher = matchers.matcher_for(s, user, now) if spec.accepts_loras else TriggerMatcher()
    try:
        resolution = resolve(
            prompt,
            matcher,
            tool_base_model=spec.base_model,
            max_loras=limits.max_loras_per_job,
            max_prompt_chars=limits.max_prompt_chars,
        )
    except PromptTooLong as exc:
        raise ToolInputError("prompt", str(exc)) from exc
    return {**inputs, "prompt": resolution.prompt}, resolution


def _lora_rows(s: Session, resolution: Resolution | None) -> dict[str, Lora]:
    if resolution is None or not resolution.loras:
        return {}
    slugs = [a.slug for a in resolution.loras]
    return {r.slug: r for r in s.scalars(select(Lora).where(Lora.slug.in_(slugs)))}
