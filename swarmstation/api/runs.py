"""Pipelines as runs: validate a pipeline, start a run, watch, cancel and retry it (control/runs.py).

Every refusal (a bad graph, bad inputs, too few credits, a saved pipeline the user may not see)
is a 4xx from one transaction that wrote nothing: no run, no job, no hold.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from swarmstation.api.deps import DB, AppState, CurrentUser, State
from swarmstation.api.schemas import INT64_MAX, Strict
from swarmstation.api.sse import Frame, event_stream
from swarmstation.api.views import output_url
from swarmstation.control import idempotency
from swarmstation.control import runs as runs_ops
from swarmstation.control.saved_pipelines import resolve_for_run
from swarmstation.domain.errors import InvalidInput
from swarmstation.domain.pipelines import TERMINAL_RUN_STATES, RunState
from swarmstation.domain.tools import ToolSpec
from swarmstation.store.models import IdempotencyKey, Job, Output, Run, RunEvent, RunStep, User

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["pipelines"])

_RUNS_SCOPE = "runs.create"


# -- what the API receives -------------------------------------------------------------------------
class PipelineValidate(Strict):
    pipeline: dict[str, Any] = Field(description="The graph in its wire form: inputs, steps, outputs")


class RunCreate(Strict):
    """A pipeline given inline, or a saved one by id (and version; the latest when absent)."""

    pipeline: dict[str, Any] | None = Field(default=None, description="The graph in its wire form")
    pipeline_id: str | None = Field(default=None, min_length=1, max_length=36, description="A saved pipeline")
    version: int | None = Field(default=None, ge=1, le=2**31 - 1, description="Its version; absent: latest")
    inputs: dict[str, Any] = Field(default_factory=dict, description="The run's pipeline input values")


def check_one_source(body: RunCreate) -> None:
    """Exactly one of `pipeline` and `pipeline_id`; `version` only with `pipeline_id`."""
    if (body.pipeline is None) == (body.pipeline_id is None):
        raise InvalidInput.at("pipeline", "give either a pipeline or a pipeline_id")
    if body.version is not None and body.pipeline_id is None:
        raise InvalidInput.at("version", "a version goes with a pipeline_id")


# -- what the API answers --------------------------------------------------------------------------
class ValidateOut(BaseModel):
    valid: bool
    order: list[str] = Field(description="The steps in an order in which they can run")
    items: dict[str, int] = Field(description="How many jobs each step fans out to")
    inputs: dict[str, Any] = Field(
        description="The pipeline's inputs: {name: {type, required, default, ...}}"
    )


class RunOutputOut(BaseModel):
    id: str
    url: str
    content_type: str
    port: str | None = Field(description="The tool output port the file fills")


class StepJobOut(BaseModel):
    id: str
    state: str
    item: int
    attempt: int
    progress: float
    error: str | None
    outputs: list[RunOutputOut]
    result: dict[str, Any] = Field(description="The job's value outputs by port (text, numbers)")


class StepOut(BaseModel):
    id: str
    tool: str
    state: str
    items: int
    jobs: list[StepJobOut] = Field(description="This run attempt's jobs of the step, by item")
    outputs: dict[str, Any] = Field(description="Once completed: port → value (or a list, per item)")
    error: str | None
    quote: int = Field(description="The step's share of the run's quote, in credits")
    cost: int = Field(description="What its jobs were charged, in credits")
    started_at: datetime | None
    finished_at: datetime | None
    seconds: float | None


class RunOut(BaseModel):
    id: str
    state: str
    pipeline_id: str | None
    pipeline_version: int | None
    pipeline: dict[str, Any]
    inputs: dict[str, Any]
    quote: int = Field(description="What this attempt held, in credits")
    captured: int = Field(description="What its steps were charged, in credits, over every attempt")
    error: str | None
    attempt: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    outputs: dict[str, dict[str, Any]] = Field(description="The result: the outputs steps' outputs")
    steps: list[StepOut]


class RunSummary(BaseModel):
    id: str
    state: str
    pipeline_id: str | None
    pipeline_version: int | None
    quote: int
    captured: int
    error: str | None
    attempt: int
    steps: int
    created_at: datetime
    finished_at: datetime | None


class RunList(BaseModel):
    runs: list[RunSummary]


def _ports(spec: ToolSpec | None) -> dict[str, str]:
    """Output node (or, for a local tool, port name) → port name."""
    if spec is None:
        return {}
    return {(o.node_id if spec.kind == "comfyui" and o.node_id else o.name): o.name for o in spec.outputs}


def run_out(s: Session, run: Run) -> RunOut:
    steps = runs_ops.run_steps(s, run)
    _, specs = runs_ops.tools_for(s, [rs.tool_slug for rs in steps])
    jobs = runs_ops.run_jobs(s, run, attempt=run.attempt)
    outputs: dict[str, list[Output]] = {j.id: [] for j in jobs}
    if jobs:
        for o in s.scalars(
            select(Output)
            .where(Output.job_id.in_(list(outputs)), Output.uploaded.is_(True))
            .order_by(Output.created_at, Output.key)
        ):
            outputs[o.job_id].append(o)
    by_step: dict[str, list[Job]] = {}
    for job in jobs:
        by_step.setdefault(job.run_step or "", []).append(job)
    return RunOut(
        id=run.id,
        state=run.state.value,
        pipeline_id=run.pipeline_id,
        pipeline_version=run.pipeline_version,
        pipeline=run.pipeline,
        inputs=run.inputs,
        quote=run.quote,
        captured=run.captured,
        error=run.error,
        attempt=run.attempt,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        outputs=runs_ops.run_result(s, run),
        steps=[_step_out(rs, by_step.get(rs.step_id, []), outputs, specs.get(rs.tool_slug)) for rs in steps],
    )


def _step_out(
    rs: RunStep, jobs: list[Job], outputs: dict[str, list[Output]], spec: ToolSpec | None
) -> StepOut:
    ports = _ports(spec)
    seconds = (
        round((rs.finished_at - rs.started_at).total_seconds(), 3)
        if rs.started_at is not None and rs.finished_at is not None
        else None
    )
    return StepOut(
        id=rs.step_id,
        tool=rs.tool_slug,
        state=rs.state.value,
        items=rs.items,
        jobs=[
            StepJobOut(
                id=j.id,
                state=j.state.value,
                item=j.run_item or 0,
                attempt=j.attempt,
                progress=j.progress,
                error=j.error,
                outputs=[
                    RunOutputOut(
                        id=o.id,
                        url=output_url(j.id, o.id),
                        content_type=o.content_type,
                        port=ports.get(o.node_id),
                    )
                    for o in outputs.get(j.id, [])
                ],
                result=dict(j.result or {}),
            )
            for j in jobs
        ],
        outputs=dict(rs.outputs or {}),
        error=rs.error,
        quote=rs.quote,
        cost=rs.cost,
        started_at=rs.started_at,
        finished_at=rs.finished_at,
        seconds=seconds,
    )


def _summary(s: Session, run: Run) -> RunSummary:
    n = s.scalar(select(func.count()).select_from(RunStep).where(RunStep.run_id == run.id)) or 0
    return RunSummary(
        id=run.id,
        state=run.state.value,
        pipeline_id=run.pipeline_id,
        pipeline_version=run.pipeline_version,
        quote=run.quote,
        captured=run.captured,
        error=run.error,
        attempt=run.attempt,
        steps=int(n),
        created_at=run.created_at,
        finished_at=run.finished_at,
    )


# -- the endpoints ---------------------------------------------------------------------------------
@router.post("/pipelines/validate", response_model=ValidateOut)
def validate(body: PipelineValidate, s: DB, _: CurrentUser, state: State) -> ValidateOut:
    """Check a pipeline as a run would (tools, types, cycles, limits); 422 naming the step and
    the port at fault. Nothing is written."""
    from swarmstation.domain.pipelines import pipeline_to_dict

    checked = runs_ops.check_pipeline(s, pipeline_dict=body.pipeline, settings=state.settings)
    return ValidateOut(
        valid=True,
        order=list(checked.order),
        items=checked.items,
        inputs=pipeline_to_dict(checked.pipeline).get("inputs", {}),
    )


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[!-~]+$",
        description="Printable ASCII, no spaces. A retry with the same key and body answers the run "
        "the first request created; the same key with another body is a 422",
    ),
]


@router.post("/runs", response_model=RunOut, status_code=201)
def create_run(
    body: RunCreate,
    s: DB,
    user: CurrentUser,
    state: State,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> RunOut:
    """Start a run: validated, quoted and held as a whole (402 when the credits do not cover the
    quote), its ready steps queued. Nothing is written when anything is refused."""
    check_one_source(body)
    claimed: IdempotencyKey | None = None
    if idempotency_key is not None:
        found = idempotency.claim(
            s,
            user_id=user.id,
            scope=_RUNS_SCOPE,
            key=idempotency_key,
            digest=idempotency.request_hash(body.model_dump(mode="json")),
            now=state.clock(),
            keep=timedelta(hours=state.settings.idempotency_key_hours),
        )
        if isinstance(found, idempotency.Replay):
            earlier = s.get(Run, found.run_id)
            assert earlier is not None  # the key goes with its run (ON DELETE CASCADE)
            response.headers["Idempotent-Replayed"] = "true"
            return run_out(s, earlier)
        claimed = found
    me = s.get(User, user.id)
    assert me is not None  # authenticated just now
    saved = (
        resolve_for_run(s, user=me, pipeline_id=body.pipeline_id, version=body.version, inputs=body.inputs)
        if body.pipeline_id is not None
        else None
    )
    run = runs_ops.create_run(
        s,
        user=me,
        pipeline_dict=body.pipeline,
        inputs=body.inputs,
        saved=saved,
        settings=state.settings,
        now=state.clock(),
        matchers=state.matchers,
    )
    if claimed is not None:
        claimed.run_id = run.id
    s.flush()
    out = run_out(s, run)
    s.commit()
    state.loops.poke()  # its first jobs are queued
    state.notifier.wake(f"run:{run.id}")
    return out


@router.get("/runs", response_model=RunList)
def list_runs(
    s: DB,
    user: CurrentUser,
    state_filter: Annotated[RunState | None, Query(alias="state")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RunList:
    """The user's own runs, newest first."""
    q = select(Run).where(Run.user_id == user.id).order_by(Run.created_at.desc(), Run.id.desc()).limit(limit)
    if state_filter is not None:
        q = q.where(Run.state == state_filter)
    return RunList(runs=[_summary(s, r) for r in s.scalars(q)])


@router.get("/runs/{run_id}", response_model=RunOut)
def get_run(run_id: str, s: DB, user: CurrentUser) -> RunOut:
    return run_out(s, runs_ops.run_for_user(s, run_id, user))


def _committed(s: Session, state: AppState, run: Run) -> RunOut:
    """Commit a change to `run`, wake its event listeners and the runner, answer the run."""
    s.flush()
    out = run_out(s, run)
    s.commit()
    state.notifier.wake(f"run:{run.id}")
    state.loops.poke()
    return out


@router.post("/runs/{run_id}/cancel", response_model=RunOut)
def cancel_run(run_id: str, s: DB, user: CurrentUser, state: State) -> RunOut:
    """Cancel the steps not finished and the run (409 when it already ended); what its hold has
    left is released."""
    run = runs_ops.run_for_user(s, run_id, user, lock=True)
    runs_ops.cancel_run(s, run, state.settings, state.clock(), matchers=state.matchers)
    return _committed(s, state, run)


@router.post("/runs/{run_id}/retry", response_model=RunOut)
def retry_run(run_id: str, s: DB, user: CurrentUser, state: State) -> RunOut:
    """Run the failed, skipped and cancelled steps of a failed or cancelled run again, with the
    completed steps' outputs reused; holds their quote (402 when the credits do not cover it)."""
    run = runs_ops.run_for_user(s, run_id, user, lock=True)
    runs_ops.retry_run(s, run, state.settings, state.clock(), matchers=state.matchers)
    return _committed(s, state, run)


@router.get("/runs/{run_id}/events", response_class=StreamingResponse)
async def run_events(
    run_id: str,
    request: Request,
    user: CurrentUser,
    state: State,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0, le=INT64_MAX)] = None,
) -> StreamingResponse:
    """Server-sent events: `state` (the run's), `step` ({step, state, ...}) and `job` ({step,
    item, job_id, state, progress}) events as they happen; the stream ends after the run's final
    state. Reconnect with `Last-Event-ID` to resume."""

    def read(after: int) -> tuple[list[Frame], int | None]:
        with state.sessions() as s, s.begin():
            run = runs_ops.run_for_user(s, run_id, user)
            events = s.scalars(
                select(RunEvent).where(RunEvent.run_id == run_id, RunEvent.id > after).order_by(RunEvent.id)
            )
            frames = [Frame(ev.id, ev.type, {"run_id": run_id, **ev.data}) for ev in events]
            if run.state not in TERMINAL_RUN_STATES:
                return frames, None
            # the stream ends at the run's final state: the last state event of a finished run
            last = s.scalar(
                select(func.max(RunEvent.id)).where(RunEvent.run_id == run_id, RunEvent.type == "state")
            )
            return frames, int(last or 0)

    return await event_stream(
        request, state.notifier, f"run:{run_id}", read, after=last_event_id or 0, what=f"run {run_id}"
    )
