"""Rows to response bodies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from swarmstation.api.schemas import JobOut, OutputOut, PriceOut, ToolDetail, ToolOutputOut, ToolSummary
from swarmstation.config import Settings
from swarmstation.domain.tools import ToolSpec, input_schema, tool_from_dict, tool_to_dict
from swarmstation.domain.workflow import required_models
from swarmstation.localtools.registry import unavailable_reason as registry_reason
from swarmstation.store.models import Job, Output, Tool


def hit_rates(info: dict[str, Any]) -> tuple[float | None, float | None]:
    """An instance's cache hit rate in requests and in bytes, from its heartbeat's counters."""
    cache = info.get("cache") or {}
    hits, misses = float(cache.get("hits", 0)), float(cache.get("misses", 0))
    bhit, bmiss = float(cache.get("bytes_hit", 0)), float(cache.get("bytes_downloaded", 0))
    return (
        hits / (hits + misses) if hits + misses else None,
        bhit / (bhit + bmiss) if bhit + bmiss else None,
    )


def output_url(job_id: str, output_id: str) -> str:
    return f"/v1/jobs/{job_id}/outputs/{output_id}"


def job_out(s: Session, job: Job, outputs: Iterable[Output] | None = None) -> JobOut:
    """`outputs`: the job's uploaded outputs when the caller knows them (none for a job just
    submitted), else they are read."""
    if outputs is None:
        outputs = s.scalars(
            select(Output)
            .where(Output.job_id == job.id, Output.uploaded.is_(True))
            .order_by(Output.created_at)
        )
    return JobOut(
        id=job.id,
        tool=job.tool_slug,
        state=job.state,
        backend=job.backend,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        progress=job.progress,
        inputs=job.inputs,
        required_models=[
            {k: v for k, v in m.items() if k not in ("key", "source_url")} for m in job.required_models
        ],
        applied_loras=job.applied_loras,
        warnings=job.warnings,
        instance_id=job.instance_id,
        error=job.error,
        created_at=job.created_at,
        assigned_at=job.assigned_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        timings=job.timings,
        outputs=[
            OutputOut(
                id=o.id,
                filename=o.filename,
                content_type=o.content_type,
                size=o.size,
                url=output_url(job.id, o.id),
            )
            for o in outputs
        ],
    )


def unavailable_reason(slug: str, settings: Settings | None) -> str | None:
    """Why the tool cannot run with these settings (a local LLM tool without an endpoint), from
    the local tools' registry; None for ComfyUI tools, available ones, or when no settings are
    given (a caller that cannot tell)."""
    if settings is None:
        return None
    return registry_reason(slug, settings)


def _summary(t: Tool, spec: ToolSpec, price: PriceOut | None, settings: Settings | None) -> ToolSummary:
    reason = unavailable_reason(t.slug, settings)
    return ToolSummary(
        slug=t.slug,
        name=t.name,
        description=spec.description,
        category=t.category,
        base_model=t.base_model,
        pool=t.pool,
        builtin=t.builtin,
        kind=spec.kind,
        outputs=[
            ToolOutputOut(name=o.name, type=o.type, many=o.many, description=o.description)
            for o in spec.outputs
        ],
        available=reason is None,
        unavailable_reason=reason,
        price=price,
    )


def tool_summary(t: Tool, price: PriceOut | None = None, *, settings: Settings | None = None) -> ToolSummary:
    """A tool as listed. Pass ``settings`` so that a local tool that cannot run here (no LLM
    endpoint) is listed as unavailable, with the reason, rather than failing when used."""
    return _summary(t, tool_from_dict(t.spec), price, settings)


def tool_detail(t: Tool, price: PriceOut | None = None, *, settings: Settings | None = None) -> ToolDetail:
    spec = tool_from_dict(t.spec)
    as_dict: dict[str, Any] = tool_to_dict(spec)
    return ToolDetail(
        **_summary(t, spec, price, settings).model_dump(),
        input_schema=input_schema(spec),
        required_models=[{"folder": m.folder, "name": m.name} for m in required_models(spec.workflow)],
        workflow=dict(spec.workflow),
        inputs=as_dict.get("inputs", []),
    )
