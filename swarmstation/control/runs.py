"""Pipeline runs: quote a pipeline, start a run with one hold, advance it step by step, cancel and
retry it (contract §4 of issue 14).

The pure policy is `domain.pipelines.engine`: this module reads a run into an `engine.RunSnapshot`
(its steps and their current-attempt jobs, from the database), asks `next_actions` what to do,
and applies each action through the RUN and STEP lifecycles in one transaction per run, writing a
`RunEvent` for every change. All of a run's state is in the database, so a control plane that
restarts picks its runs up where they were; the leader's loop (`advance_all`) advances every
unfinished run every `run_interval_seconds`.

Money: a run is quoted as a whole (`quote_pipeline`: per step, per item, the tool's own quote with
the values known before the run; an upstream output's value is not known yet, so the tool input
it feeds is quoted at the input's default), and `create_run` holds the total ONCE
(`hold:run:<id>:<attempt>`). Each step job is submitted against that hold
(`submission.RunLink`, `charging.RunHold`: at most its step's share) and its charge captures a
part of it when the job ends (`charging.settle_job` → `ledger.capture_part`), paying the saved
pipeline's author `pipeline_royalty_bps` of it when the payer is someone else. When the run ends,
what no step used is released (`ledger.settle_rest`, `release:run:<id>:<attempt>`). A retry holds
the quote of the steps it runs again under the next attempt's keys.

A step job that the scheduler retries by itself (its worker was killed: the job goes back to
QUEUED with attempt + 1) is still the same item of a RUNNING step; only a job that ends FAILED
(or is cancelled on its own) fails its step.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from swarmstation.control import charging, ledger, submission
from swarmstation.control import jobs as jobs_ops
from swarmstation.control.charging import ChargeSettings, PipelineRoyalty, Quote, RunHold
from swarmstation.control.notify import user_runs_key
from swarmstation.control.submission import MatcherSource, RunLink, SubmissionLimits
from swarmstation.domain.errors import Conflict, InvalidInput, NotFound, SwarmError
from swarmstation.domain.loras import TriggerMatcher
from swarmstation.domain.pipelines import (
    RUN,
    STEP,
    TERMINAL_RUN_STATES,
    TERMINAL_STEP_STATES,
    CancelStep,
    CompleteStep,
    FailStep,
    FinishRun,
    FromStep,
    ItemSnapshot,
    Pipeline,
    PipelineError,
    RunSnapshot,
    RunState,
    RunTrigger,
    SkipStep,
    StartStep,
    StepSnapshot,
    StepState,
    StepTrigger,
    check_run_inputs,
    item_counts,
    next_actions,
    pipeline_from_dict,
    pipeline_to_dict,
    retry_steps,
    run_outputs,
    topological_order,
    validate_pipeline,
)
from swarmstation.domain.states import TERMINAL_JOB_STATES, JobState
from swarmstation.domain.tools import InputSpec, ToolInputError, ToolSpec, bind_inputs, tool_from_dict
from swarmstation.store.db import transaction
from swarmstation.store.models import Job, JobCharge, Output, Run, RunEvent, RunStep, Tool, User

if TYPE_CHECKING:
    from swarmstation.config import Settings
    from swarmstation.control.saved_pipelines import SavedRef

log = logging.getLogger(__name__)

__all__ = [
    "CheckedPipeline",
    "PipelineQuote",
    "Runner",
    "StepQuote",
    "advance",
    "advance_all",
    "cancel_run",
    "check_pipeline",
    "create_run",
    "quote_pipeline",
    "retry_run",
    "run_for_user",
    "run_jobs",
    "run_result",
    "run_steps",
    "snapshot",
    "tools_for",
]

RUN_REF = charging.RUN_REF
#: Port types whose values are files (Output rows), not values in `job.result`.
FILE_PORT_TYPES = frozenset({"image", "video", "audio", "mask"})
#: What an image input fed by an earlier step is quoted with (its value is not known yet).
_PENDING_IMAGE = "output:pending"
_PENDING_TEXT = "pending"
#: A run's seed (variations by seed count up from it) stays well below any seed input's limit.
_SEED_BITS = 62
#: At most this many rounds of actions in one `advance` (each round at least finishes or starts
#: a step, so a pipeline of n steps needs about 2n + 2).
_MAX_ROUNDS = 1000


def _no_matchers() -> MatcherSource:
    class _Empty:
        def matcher_for(self, s: Session, user: User, now: datetime) -> TriggerMatcher:
            return TriggerMatcher()

    return _Empty()


# -- checking ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedPipeline:
    """A pipeline that validated against the tools in the database: its topological order, the
    jobs each step fans out to, its tools' rows and specs by slug."""

    pipeline: Pipeline
    order: tuple[str, ...]
    items: dict[str, int]
    rows: dict[str, Tool]
    specs: dict[str, ToolSpec]


def tools_for(s: Session, slugs: Sequence[str]) -> tuple[dict[str, Tool], dict[str, ToolSpec]]:
    """The rows and specs of the tools `slugs` that exist, by slug."""
    rows = {row.slug: row for row in s.scalars(select(Tool).where(Tool.slug.in_(sorted(set(slugs)))))}
    return rows, {slug: tool_from_dict(row.spec) for slug, row in rows.items()}


def check_pipeline(s: Session, *, pipeline_dict: object, settings: Settings) -> CheckedPipeline:
    """Parse and validate a pipeline in its wire form: unknown or unavailable tools, types,
    cycles, limits. Raises PipelineError (422, naming the step and the port); writes nothing."""
    from swarmstation.localtools.registry import unavailable_reason

    pipeline = pipeline_from_dict(pipeline_dict)
    slugs = sorted({step.tool for step in pipeline.steps.values()})
    rows, specs = tools_for(s, slugs)
    unavailable = {slug: reason for slug in slugs if (reason := unavailable_reason(slug, settings))}
    order = validate_pipeline(
        pipeline,
        specs,
        unavailable=unavailable,
        max_steps=settings.max_pipeline_steps,
        max_items=settings.max_step_items,
    )
    return CheckedPipeline(pipeline, order, item_counts(pipeline, specs), rows, specs)


# -- quoting -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepQuote:
    """One step's part of a run's quote: `items` jobs of `tool`, `credits` in all; `lines` are
    each item's quote lines (the tool, then royalties out of it), with the item's index."""

    step: str
    tool: str
    items: int
    credits: int
    lines: tuple[dict[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "tool": self.tool,
            "items": self.items,
            "credits": self.credits,
            "lines": list(self.lines),
        }


@dataclass(frozen=True)
class PipelineQuote:
    """The most a run of a pipeline can cost (`total`, what a run holds once) and its steps'
    parts. `charged` is False when the user's runs are free (an admin's, by default)."""

    total: int
    steps: tuple[StepQuote, ...]
    charged: bool
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def lines(self) -> list[dict[str, Any]]:
        """One line per step ({kind: step, step, tool, items, credits}), then the royalties summed
        by step and author (paid out of the total, never added to it)."""
        out: list[dict[str, Any]] = [
            {"kind": "step", "step": x.step, "tool": x.tool, "items": x.items, "credits": x.credits}
            for x in self.steps
        ]
        for x in self.steps:
            summed: dict[tuple[str, str, str], dict[str, Any]] = {}
            for line in x.lines:
                if line.get("kind") != "royalty":
                    continue
                ref = "pipeline" if "pipeline" in line else "lora"
                key = (ref, str(line.get(ref)), str(line.get("author")))
                if key in summed:
                    summed[key]["credits"] += int(line["credits"])
                else:
                    summed[key] = {**{k: v for k, v in line.items() if k != "item"}, "step": x.step}
            out.extend(summed.values())
        return out


def _pending_value(inp: InputSpec) -> Any:
    """What a tool input fed by an earlier step is quoted with: its default, else a value of its
    type (the output is not known before the run)."""
    if inp.default is not None:
        return inp.default
    if inp.choices:
        return inp.choices[0]
    if inp.type == "image":
        return [_PENDING_IMAGE] if inp.many else _PENDING_IMAGE
    if inp.type == "string":
        return _PENDING_TEXT
    if inp.type == "integer":
        return int(inp.minimum) if inp.minimum is not None else 0
    if inp.type == "number":
        return inp.minimum if inp.minimum is not None else 0.0
    if inp.type == "boolean":
        return False
    return 0  # a seed


def _placeholder_output(kind: str) -> Any:
    return {"image": _PENDING_IMAGE, "text": _PENDING_TEXT, "boolean": False, "number": 0.0}.get(
        kind, _PENDING_IMAGE if kind in FILE_PORT_TYPES else 0
    )


def planned_items(
    pipeline: Pipeline, specs: Mapping[str, ToolSpec], inputs: Mapping[str, Any], seed: int
) -> dict[str, tuple[Mapping[str, Any], ...]]:
    """Each step's items as the engine will start them, with placeholders for the outputs of
    earlier steps: the engine is run over a snapshot in which every started step completed."""
    steps: dict[str, StepSnapshot] = {}
    planned: dict[str, tuple[Mapping[str, Any], ...]] = {}
    counts = item_counts(pipeline, specs)
    for _ in range(len(pipeline.steps) + 1):
        snap = RunSnapshot(pipeline, specs, inputs, seed, RunState.RUNNING, steps)
        starts = [a for a in next_actions(snap) if isinstance(a, StartStep)]
        if not starts:
            break
        for start in starts:
            planned[start.step] = start.items
            tool = specs[pipeline.steps[start.step].tool]
            n = counts.get(start.step, 1)
            outputs: dict[str, Any] = {}
            for port in tool.outputs:
                value = _placeholder_output(port.type)
                if port.many:
                    outputs[port.name] = [value] * max(1, n)
                else:
                    outputs[port.name] = value if n == 1 else [value] * n
            steps[start.step] = StepSnapshot(start.step, StepState.COMPLETED, outputs=outputs)
    return planned


def _is_pending_ref(value: Any) -> bool:
    return value == _PENDING_IMAGE or (isinstance(value, list) and _PENDING_IMAGE in value)


def _step_error(sid: str, exc: ToolInputError | InvalidInput) -> PipelineError:
    if isinstance(exc, ToolInputError):
        return PipelineError(f"steps.{sid}.inputs.{exc.field}", exc.reason, step=sid, port=exc.field)
    return PipelineError(f"steps.{sid}", f"cannot be quoted: {exc.detail}", step=sid)


def quote_pipeline(
    s: Session,
    *,
    user: User,
    pipeline: Pipeline,
    inputs: Mapping[str, Any],
    pricing: ChargeSettings,
    specs: Mapping[str, ToolSpec] | None = None,
    rows: Mapping[str, Tool] | None = None,
    matchers: MatcherSource | None = None,
    limits: SubmissionLimits | None = None,
    royalty: PipelineRoyalty | None = None,
    seed: int = 0,
    now: datetime | None = None,
    steps: Sequence[str] | None = None,
) -> PipelineQuote:
    """The quote of a run of a validated `pipeline` with the run's `inputs` for `user`: per step,
    per item, the tool's quote with the values known before the run (literals, pipeline inputs,
    variations); an input fed by an earlier step is quoted at its default. Image references
    given as values must be the user's. `steps` limits it to some steps (a retry). Raises
    PipelineError (422) naming the step and input at fault; writes nothing."""
    if specs is None or rows is None:
        rows, specs = tools_for(s, [step.tool for step in pipeline.steps.values()])
    values = check_run_inputs(pipeline, inputs)
    planned = planned_items(pipeline, specs, values, seed)
    wanted = list(steps) if steps is not None else [sid for sid in planned]
    for sid in wanted:
        if sid not in planned:
            raise PipelineError(f"steps.{sid}", "cannot be planned from the pipeline's inputs", step=sid)
    out: list[StepQuote] = []
    for sid in [x for x in planned if x in wanted]:
        step = pipeline.steps[sid]
        spec, row = specs[step.tool], rows[step.tool]
        by_name = {inp.name: inp for inp in spec.inputs}
        upstream = {name for name, src in step.inputs.items() if isinstance(src, FromStep)}
        credits, lines = 0, []
        for i, item in enumerate(planned[sid]):
            known = dict(item)
            for name in upstream:
                if name in by_name:
                    known[name] = _pending_value(by_name[name])
            priced = _item_quote(
                s, user, sid, spec, row, known, upstream, pricing, matchers, limits, royalty, now
            )
            credits += priced.total
            lines += [{**line, "item": i} for line in priced.lines]
        out.append(StepQuote(sid, step.tool, len(planned[sid]), credits, tuple(lines)))
    return PipelineQuote(
        total=sum(x.credits for x in out),
        steps=tuple(out),
        charged=charging.is_charged(user, pricing),
        inputs=values,
    )


def _item_quote(
    s: Session,
    user: User,
    sid: str,
    spec: ToolSpec,
    row: Tool,
    values: dict[str, Any],
    upstream: set[str],
    pricing: ChargeSettings,
    matchers: MatcherSource | None,
    limits: SubmissionLimits | None,
    royalty: PipelineRoyalty | None,
    now: datetime | None,
) -> Quote:
    try:
        applied: list[tuple[str, str | None]] = []
        if spec.kind == "comfyui" and "prompt" not in upstream and matchers and limits and now:
            values, resolution = submission._resolve_loras(s, matchers, user, spec, values, limits, now)
            applied = [(a.slug, a.owner_id) for a in resolution.loras] if resolution else []
        bound = bind_inputs(spec, values, random_seed=0)
        given = {
            name: ref
            for name, ref in bound.input_images.items()
            if name not in upstream and not _is_pending_ref(ref)
        }
        submission._resolve_images(s, user, given, {})  # the user's own uploads and outputs
        return charging.quote(
            s,
            tool=row,
            workflow=bound.workflow,
            applied_loras=applied,
            payer=user,
            cfg=pricing,
            pipeline=royalty,
        )
    except (ToolInputError, InvalidInput) as exc:
        raise _step_error(sid, exc) from exc


# -- creating ------------------------------------------------------------------------------------


def _event(
    s: Session, run: Run, type_: str, data: dict[str, Any], trigger: str | None, now: datetime
) -> None:
    s.add(RunEvent(run_id=run.id, type=type_, data=data, trigger=trigger, at=now))


def create_run(
    s: Session,
    *,
    user: User,
    pipeline_dict: object,
    inputs: Mapping[str, Any],
    saved: SavedRef | None,
    settings: Settings,
    now: datetime,
    matchers: MatcherSource | None = None,
    seed: int | None = None,
    start: bool = True,
) -> Run:
    """Validate, quote and start a run (flushed, not committed): the run, its steps and its hold
    of the whole quote, written together or not at all (the caller rolls back on an error:
    PipelineError 422, InsufficientCredits 402, NotFound for a tool). `saved`: a saved
    pipeline's version (its definition and inputs replace `pipeline_dict` and `inputs`). With
    `start`, the steps whose inputs are ready are queued at once."""
    if saved is not None:
        pipeline_dict, inputs = saved.definition, saved.inputs
    checked = check_pipeline(s, pipeline_dict=pipeline_dict, settings=settings)
    pipeline = checked.pipeline
    values = check_run_inputs(pipeline, inputs)
    pricing = ChargeSettings.from_settings(settings)
    royalty = (
        PipelineRoyalty(saved.pipeline_id, saved.author_id, settings.pipeline_royalty_bps) if saved else None
    )
    run_seed = secrets.randbits(_SEED_BITS) if seed is None else seed
    quoted = quote_pipeline(
        s,
        user=user,
        pipeline=pipeline,
        inputs=values,
        pricing=pricing,
        specs=checked.specs,
        rows=checked.rows,
        matchers=matchers,
        limits=SubmissionLimits.from_settings(settings),
        royalty=royalty,
        seed=run_seed,
        now=now,
    )
    run = Run(
        id=str(uuid.uuid4()),
        user_id=user.id,
        state=RUN.initial,
        pipeline=pipeline_to_dict(pipeline),
        inputs=values,
        pipeline_id=saved.pipeline_id if saved else None,
        pipeline_version=saved.version if saved else None,
        author_id=saved.author_id if saved else None,
        seed=run_seed,
        attempt=1,
        hold_id=None,
        quote=quoted.total,
        captured=0,
        cancel_requested=False,
        error=None,
        created_at=now,
    )
    s.add(run)
    s.flush()
    if quoted.charged and quoted.total > 0:
        hold = ledger.place_hold(
            s,
            user_id=user.id,
            amount=quoted.total,
            ref_type=RUN_REF,
            ref_id=run.id,
            key=f"hold:run:{run.id}:1",
            now=now,
        )
        run.hold_id = hold.id
    credits = {x.step: x.credits for x in quoted.steps}
    for sid in checked.order:
        s.add(
            RunStep(
                run_id=run.id,
                step_id=sid,
                tool_slug=pipeline.steps[sid].tool,
                state=STEP.initial,
                items=checked.items.get(sid, 1),
                outputs={},
                error=None,
                quote=credits.get(sid, 0),
                cost=0,
            )
        )
    _event(s, run, "state", {"state": run.state.value, "attempt": 1, "quote": run.quote}, None, now)
    if saved is not None:
        from swarmstation.control.saved_pipelines import count_run

        count_run(s, saved.pipeline_id)
    s.flush()
    if start:
        advance(s, run, settings, now, matchers=matchers)
    return run


# -- reading -------------------------------------------------------------------------------------


def run_for_user(s: Session, run_id: str, user: User, *, lock: bool = False) -> Run:
    """The user's run `run_id` (someone else's is as unknown as a missing one)."""
    query = select(Run).where(Run.id == run_id)
    run = s.scalar(query.with_for_update() if lock else query)
    if run is None or run.user_id != user.id:
        raise NotFound(f"run {run_id} not found")
    return run


def run_steps(s: Session, run: Run) -> list[RunStep]:
    """The run's steps in their stored (topological) order."""
    order = {sid: i for i, sid in enumerate(topological_order(pipeline_from_dict(run.pipeline)))}
    steps = list(s.scalars(select(RunStep).where(RunStep.run_id == run.id)))
    return sorted(steps, key=lambda x: order.get(x.step_id, len(order)))


def run_jobs(s: Session, run: Run, *, attempt: int | None = None) -> list[Job]:
    """The run's step jobs (of `attempt`, or every attempt), by step, item, then age."""
    query = select(Job).where(Job.run_id == run.id)
    if attempt is not None:
        query = query.where(Job.run_attempt == attempt)
    return list(s.scalars(query.order_by(Job.run_step, Job.run_item, Job.created_at)))


def _outputs_by_job(s: Session, jobs: Sequence[Job]) -> dict[str, list[Output]]:
    by_job: dict[str, list[Output]] = {j.id: [] for j in jobs}
    if not jobs:
        return by_job
    rows = s.scalars(
        select(Output)
        .where(Output.job_id.in_(list(by_job)), Output.uploaded.is_(True))
        .order_by(Output.created_at, Output.key)
    )
    for o in rows:
        by_job[o.job_id].append(o)
    return by_job


def item_outputs(spec: ToolSpec, job: Job, outputs: Sequence[Output]) -> dict[str, Any]:
    """A completed job's values by output port: a file port is `output:<id>` of the job's
    uploaded outputs of its node (a ComfyUI tool) or of its name (a local tool), a list for a
    `many` port; a value port is `job.result[port]`. A port the job did not fill is absent."""
    values: dict[str, Any] = {}
    for port in spec.outputs:
        if port.type in FILE_PORT_TYPES:
            where = port.node_id if spec.kind == "comfyui" and port.node_id else port.name
            refs = [f"{submission.OUTPUT_REF_PREFIX}{o.id}" for o in outputs if o.node_id == where]
            if refs:
                values[port.name] = refs if port.many else refs[0]
        elif port.name in (job.result or {}):
            values[port.name] = job.result[port.name]
    return values


_ITEM_STATE = {
    JobState.QUEUED: "QUEUED",
    JobState.ASSIGNED: "QUEUED",
    JobState.RUNNING: "RUNNING",
    JobState.COMPLETED: "COMPLETED",
    JobState.FAILED: "FAILED",
    JobState.CANCELLED: "CANCELLED",
}


def snapshot(
    s: Session, run: Run, steps: Sequence[RunStep], jobs: Sequence[Job], specs: Mapping[str, ToolSpec]
) -> RunSnapshot:
    """The engine's view of `run`: its steps, and for a running step its jobs of this attempt."""
    outputs = _outputs_by_job(s, jobs)
    by_step: dict[str, list[Job]] = {}
    for job in jobs:
        by_step.setdefault(job.run_step or "", []).append(job)
    snaps: dict[str, StepSnapshot] = {}
    for rs in steps:
        items = []
        if rs.state == StepState.RUNNING:
            spec = specs[rs.tool_slug]
            for job in by_step.get(rs.step_id, []):
                state = _ITEM_STATE[job.state]
                items.append(
                    ItemSnapshot(
                        index=job.run_item or 0,
                        state=state,
                        outputs=item_outputs(spec, job, outputs[job.id]) if state == "COMPLETED" else {},
                        error=job.error,
                    )
                )
        snaps[rs.step_id] = StepSnapshot(
            rs.step_id, rs.state, items=tuple(items), outputs=dict(rs.outputs or {}), error=rs.error
        )
    return RunSnapshot(
        pipeline=pipeline_from_dict(run.pipeline),
        tools=specs,
        inputs=dict(run.inputs or {}),
        seed=run.seed,
        state=run.state,
        steps=snaps,
        cancel_requested=run.cancel_requested,
    )


# -- advancing -----------------------------------------------------------------------------------


@dataclass
class _Context:
    run: Run
    user: User
    steps: dict[str, RunStep]
    specs: dict[str, ToolSpec]
    settings: Settings
    matchers: MatcherSource
    pricing: ChargeSettings
    limits: SubmissionLimits
    now: datetime


def advance(
    s: Session, run: Run, settings: Settings, now: datetime, *, matchers: MatcherSource | None = None
) -> bool:
    """Apply the engine's actions to `run` until there are none (in the caller's transaction,
    with the run's row locked by the caller). Returns True when anything changed."""
    if run.state in TERMINAL_RUN_STATES:
        return _sync_job_events(s, run, now)
    user = s.get(User, run.user_id)
    if user is None:  # the user was deleted; their runs go with them (ON DELETE CASCADE)
        return False
    steps = {rs.step_id: rs for rs in run_steps(s, run)}
    _, specs = tools_for(s, [rs.tool_slug for rs in steps.values()])
    ctx = _Context(
        run,
        user,
        steps,
        specs,
        settings,
        matchers or _no_matchers(),
        ChargeSettings.from_settings(settings),
        SubmissionLimits.from_settings(settings),
        now,
    )
    missing = sorted({rs.tool_slug for rs in steps.values()} - set(specs))
    if missing:
        _abort(s, ctx, f"tool {missing[0]!r} no longer exists")
        return True
    changed = _sync_job_events(s, run, now)
    changed = _totals(s, ctx) or changed
    for _ in range(_MAX_ROUNDS):
        jobs = run_jobs(s, run, attempt=run.attempt)
        actions = next_actions(snapshot(s, run, list(steps.values()), jobs, specs))
        if not actions:
            break
        changed = True
        for action in actions:
            _apply(s, ctx, action, jobs)
        s.flush()
        if run.state in TERMINAL_RUN_STATES:
            break
    return changed


def _totals(s: Session, ctx: _Context) -> bool:
    """Sum what the run's step jobs were charged (every attempt) into `RunStep.cost` and
    `Run.captured` (settlement records each job's charge; the runner, holding the run's lock,
    writes the totals). True when a total changed."""
    s.flush()
    costs = {
        step: total
        for step, total in s.execute(
            select(Job.run_step, func.coalesce(func.sum(JobCharge.captured), 0))
            .join(JobCharge, JobCharge.job_id == Job.id)
            .where(Job.run_id == ctx.run.id)
            .group_by(Job.run_step)
        )
    }
    changed = False
    for sid, rs in ctx.steps.items():
        cost = int(costs.get(sid) or 0)
        if rs.cost != cost:
            rs.cost, changed = cost, True
    captured = sum(rs.cost for rs in ctx.steps.values())
    if ctx.run.captured != captured:
        ctx.run.captured, changed = captured, True
    return changed


def _step_event(s: Session, ctx: _Context, rs: RunStep, trigger: StepTrigger, **extra: Any) -> None:
    data: dict[str, Any] = {"step": rs.step_id, "state": rs.state.value, "attempt": ctx.run.attempt}
    if rs.state in TERMINAL_STEP_STATES:
        data["cost"] = rs.cost
    if rs.error:
        data["error"] = rs.error
    _event(s, ctx.run, "step", {**data, **extra}, trigger.value, ctx.now)


def _run_event(s: Session, ctx: _Context, trigger: RunTrigger) -> None:
    run = ctx.run
    data: dict[str, Any] = {"state": run.state.value, "attempt": run.attempt}
    if run.state in TERMINAL_RUN_STATES:
        data["captured"] = run.captured
    if run.error:
        data["error"] = run.error
    _event(s, run, "state", data, trigger.value, ctx.now)


def _start_run(s: Session, ctx: _Context) -> None:
    if ctx.run.state == RunState.PENDING:
        RUN.apply(ctx.run, RunTrigger.START)
        ctx.run.started_at = ctx.run.started_at or ctx.now
        _run_event(s, ctx, RunTrigger.START)


def _apply(s: Session, ctx: _Context, action: object, jobs: Sequence[Job]) -> None:
    now = ctx.now
    if isinstance(action, StartStep):
        _start_step(s, ctx, action)
    elif isinstance(action, CompleteStep):
        rs = ctx.steps[action.step]
        STEP.apply(rs, StepTrigger.COMPLETE)
        rs.outputs, rs.finished_at = dict(action.outputs), now
        _totals(s, ctx)
        _step_event(s, ctx, rs, StepTrigger.COMPLETE)
    elif isinstance(action, FailStep):
        rs = ctx.steps[action.step]
        _cancel_jobs(s, ctx, [j for j in jobs if j.run_step == action.step])
        STEP.apply(rs, StepTrigger.FAIL)
        rs.error, rs.finished_at = action.reason, now
        _totals(s, ctx)
        _step_event(s, ctx, rs, StepTrigger.FAIL)
    elif isinstance(action, SkipStep):
        rs = ctx.steps[action.step]
        STEP.apply(rs, StepTrigger.SKIP)
        rs.error, rs.finished_at = action.reason, now
        _step_event(s, ctx, rs, StepTrigger.SKIP)
    elif isinstance(action, CancelStep):
        rs = ctx.steps[action.step]
        _cancel_jobs(s, ctx, [j for j in jobs if j.run_step == action.step])
        STEP.apply(rs, StepTrigger.CANCEL)
        rs.finished_at = now
        _totals(s, ctx)
        _step_event(s, ctx, rs, StepTrigger.CANCEL)
    elif isinstance(action, FinishRun):
        _finish(s, ctx, action.state, action.reason)
    else:  # pragma: no cover - the engine's Action union is closed
        raise TypeError(f"unknown action {action!r}")


def _start_step(s: Session, ctx: _Context, action: StartStep) -> None:
    run, rs = ctx.run, ctx.steps[action.step]
    royalty = (
        PipelineRoyalty(run.pipeline_id or "", run.author_id, ctx.settings.pipeline_royalty_bps)
        if run.author_id is not None and run.pipeline_id is not None
        else None
    )
    remaining = rs.quote
    created: list[Job] = []
    try:
        with s.begin_nested():  # all of the step's jobs, or none
            for i, values in enumerate(action.items):
                hold = RunHold(run.hold_id, max(0, remaining)) if run.hold_id else None
                job = submission.submit(
                    s,
                    user=ctx.user,
                    tool_slug=rs.tool_slug,
                    inputs=dict(values),
                    matchers=ctx.matchers,
                    limits=ctx.limits,
                    now=ctx.now,
                    pricing=ctx.pricing,
                    run=RunLink(run.id, rs.step_id, i, run.attempt, hold=hold, royalty=royalty),
                )
                created.append(job)
                charge = s.get(JobCharge, job.id)
                remaining -= charge.quote if charge is not None else 0
    except SwarmError as exc:
        # inputs an upstream step produced that the tool refuses: the step fails, not the loop
        STEP.apply(rs, StepTrigger.FAIL)
        rs.error, rs.started_at, rs.finished_at = exc.detail, ctx.now, ctx.now
        _start_run(s, ctx)
        _step_event(s, ctx, rs, StepTrigger.FAIL)
        return
    STEP.apply(rs, StepTrigger.START)
    rs.started_at, rs.finished_at, rs.error = ctx.now, None, None
    _start_run(s, ctx)
    _step_event(s, ctx, rs, StepTrigger.START, items=len(created), jobs=[j.id for j in created])
    for job in created:
        _job_event(s, run, job, ctx.now)


def _cancel_jobs(s: Session, ctx: _Context, jobs: Sequence[Job]) -> None:
    """Cancel a step's jobs that have not finished (each settles its charge: nothing before it
    started, its GPU seconds after)."""
    for job in jobs:
        s.refresh(job, with_for_update=True)
        if job.state not in TERMINAL_JOB_STATES:
            jobs_ops.cancel_job(s, job, now=ctx.now)
            _job_event(s, ctx.run, job, ctx.now)


_FINISH = {
    RunState.COMPLETED: RunTrigger.COMPLETE,
    RunState.FAILED: RunTrigger.FAIL,
    RunState.CANCELLED: RunTrigger.CANCEL,
}


def _finish(s: Session, ctx: _Context, state: RunState, reason: str | None) -> None:
    run = ctx.run
    trigger = _FINISH[state]
    RUN.apply(run, trigger)
    run.error = reason if state != RunState.COMPLETED else None
    run.finished_at = ctx.now
    run.cancel_requested = False
    if run.hold_id is not None:
        # every step job has ended (or was cancelled just now): what none of them used goes back
        ledger.settle_rest(s, hold_id=run.hold_id, key=f"release:run:{run.id}:{run.attempt}", now=ctx.now)
    _totals(s, ctx)
    _run_event(s, ctx, trigger)


def _abort(s: Session, ctx: _Context, reason: str) -> None:
    """End a run that cannot go on (a tool it uses was removed): its unfinished steps fail."""
    jobs = run_jobs(s, ctx.run, attempt=ctx.run.attempt)
    for rs in ctx.steps.values():
        if rs.state in TERMINAL_STEP_STATES:
            continue
        _cancel_jobs(s, ctx, [j for j in jobs if j.run_step == rs.step_id])
        STEP.apply(rs, StepTrigger.FAIL)
        rs.error, rs.finished_at = reason, ctx.now
        _step_event(s, ctx, rs, StepTrigger.FAIL)
    _finish(s, ctx, RunState.FAILED, reason)


# -- job events ----------------------------------------------------------------------------------


def _job_data(job: Job) -> dict[str, Any]:
    data: dict[str, Any] = {
        "step": job.run_step,
        "item": job.run_item,
        "job_id": job.id,
        "state": job.state.value,
        "progress": round(float(job.progress or 0.0), 3),
        "attempt": job.attempt,
    }
    if job.error:
        data["error"] = job.error
    return data


def _job_event(s: Session, run: Run, job: Job, now: datetime) -> None:
    _event(s, run, "job", _job_data(job), None, now)


def _sync_job_events(s: Session, run: Run, now: datetime) -> bool:
    """A `job` event for each step job whose state, progress or attempt changed since its last
    one (sampled at the runner's cadence: a job reports progress far more often)."""
    last: dict[str, tuple[Any, Any, Any]] = {}
    for ev in s.scalars(
        select(RunEvent).where(RunEvent.run_id == run.id, RunEvent.type == "job").order_by(RunEvent.id)
    ):
        last[str(ev.data.get("job_id"))] = (
            ev.data.get("state"),
            ev.data.get("progress"),
            ev.data.get("attempt"),
        )
    changed = False
    for job in run_jobs(s, run, attempt=run.attempt):
        data = _job_data(job)
        if last.get(job.id) != (data["state"], data["progress"], data["attempt"]):
            _event(s, run, "job", data, None, now)
            changed = True
    return changed


# -- cancelling and retrying -----------------------------------------------------------------------


def cancel_run(
    s: Session, run: Run, settings: Settings, now: datetime, *, matchers: MatcherSource | None = None
) -> Run:
    """Cancel the steps not finished (their queued and running jobs cancelled) and the run; its
    unspent hold is released. Conflict (409) for a run that already ended."""
    if run.state in TERMINAL_RUN_STATES:
        raise Conflict(f"run {run.id} is already {run.state.value}")
    run.cancel_requested = True
    advance(s, run, settings, now, matchers=matchers)
    return run


def retry_run(
    s: Session, run: Run, settings: Settings, now: datetime, *, matchers: MatcherSource | None = None
) -> Run:
    """Run the failed, skipped and cancelled steps of a FAILED or CANCELLED run again, reusing the
    completed steps' outputs: a new hold of their quote (`hold:run:<id>:<attempt>`; 402 when
    the user's credits do not cover it, nothing changed), attempt + 1. Conflict (409) for a run
    that did not fail or was not cancelled."""
    if run.state not in (RunState.FAILED, RunState.CANCELLED):
        raise Conflict(f"run {run.id} is {run.state.value}; only a failed or cancelled run can be retried")
    user = s.get(User, run.user_id)
    if user is None:
        raise NotFound(f"run {run.id} not found")
    steps = run_steps(s, run)
    _, specs = tools_for(s, [rs.tool_slug for rs in steps])
    missing = sorted({rs.tool_slug for rs in steps} - set(specs))
    if missing:
        raise Conflict(f"run {run.id} cannot be retried: tool {missing[0]!r} no longer exists")
    snap = snapshot(s, run, steps, [], specs)
    again = set(retry_steps(snap))
    if not again:
        raise Conflict(f"run {run.id} has no step to run again")
    amount = sum(rs.quote for rs in steps if rs.step_id in again)
    attempt = run.attempt + 1
    hold_id: str | None = None
    pricing = ChargeSettings.from_settings(settings)
    if charging.is_charged(user, pricing) and amount > 0:
        hold_id = ledger.place_hold(
            s,
            user_id=user.id,
            amount=amount,
            ref_type=RUN_REF,
            ref_id=run.id,
            key=f"hold:run:{run.id}:{attempt}",
            now=now,
        ).id
    ctx = _Context(
        run,
        user,
        {rs.step_id: rs for rs in steps},
        dict(specs),
        settings,
        matchers or _no_matchers(),
        pricing,
        SubmissionLimits.from_settings(settings),
        now,
    )
    RUN.apply(run, RunTrigger.RETRY)
    run.attempt, run.hold_id, run.quote = attempt, hold_id, amount
    run.error, run.finished_at, run.cancel_requested = None, None, False
    _run_event(s, ctx, RunTrigger.RETRY)
    for rs in steps:
        if rs.step_id in again:
            STEP.apply(rs, StepTrigger.RETRY)
            rs.error, rs.outputs, rs.started_at, rs.finished_at = None, {}, None, None
            _step_event(s, ctx, rs, StepTrigger.RETRY)
    s.flush()
    advance(s, run, settings, now, matchers=matchers)
    return run


# -- the leader's loop -----------------------------------------------------------------------------


def advance_all(
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: Callable[[], datetime],
    *,
    matchers: MatcherSource | None = None,
    on_change: Callable[[str, str], None] | None = None,
) -> list[str]:
    """Advance every unfinished run, one transaction per run (its row locked, so a cancel or a
    second replica waits); a run whose advance fails is logged and tried again next time.
    Returns the ids of the runs that changed (`on_change` is called with each one's id and its
    user's)."""
    with transaction(sessions) as s:
        unfinished = [
            (run_id, user_id)
            for run_id, user_id in s.execute(
                select(Run.id, Run.user_id)
                .where(Run.state.in_([RunState.PENDING, RunState.RUNNING]))
                .order_by(Run.created_at)
            )
        ]
    changed: list[str] = []
    for run_id, user_id in unfinished:
        try:
            with transaction(sessions) as s:
                run = s.scalar(select(Run).where(Run.id == run_id).with_for_update())
                if run is None or not advance(s, run, settings, clock(), matchers=matchers):
                    continue
            changed.append(run_id)
        except Exception:
            log.exception("run %s: advancing failed", run_id)
            continue
        if on_change is not None:
            on_change(run_id, user_id)
    return changed


class Runner:
    """The leader loop's callable: `tick` advances every unfinished run and wakes the run's SSE
    listeners (`notifier.wake("run:<id>")`) and its user's conversations' (`user_runs_key`) for
    each that changed."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime],
        *,
        matchers: MatcherSource | None = None,
        wake: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.clock = clock
        self.matchers = matchers
        self.wake = wake

    def tick(self) -> bool:
        """Advance every run; True when one changed (its next steps' jobs may be queued: the
        leader's loops count it as a change, control/loops.py)."""
        any_changed = False

        def changed(run_id: str, user_id: str) -> None:
            nonlocal any_changed
            any_changed = True
            if self.wake is not None:
                self.wake(f"run:{run_id}")
                self.wake(user_runs_key(user_id))  # the user's conversations show their runs

        advance_all(self.sessions, self.settings, self.clock, matchers=self.matchers, on_change=changed)
        return any_changed


def run_result(s: Session, run: Run) -> dict[str, dict[str, Any]]:
    """The run's outputs: its `outputs` steps' outputs by step (completed steps only)."""
    steps = run_steps(s, run)
    _, specs = tools_for(s, [rs.tool_slug for rs in steps])
    if {rs.tool_slug for rs in steps} - set(specs):
        return {}
    return run_outputs(snapshot(s, run, steps, [], specs))
