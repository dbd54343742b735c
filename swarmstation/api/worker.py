"""The worker API under /worker/v1. Every call carries the instance's own token; job calls also
carry the lease's fencing token and are refused (409) when the lease has moved on."""

from __future__ import annotations

import asyncio
import mimetypes
import time
import uuid
from datetime import datetime
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from swarmstation.api.deps import DB, AppState, CurrentInstance, InstanceIdentity, State
from swarmstation.api.metrics import observe_job
from swarmstation.api.schemas import (
    Assignment,
    BootstrapReport,
    CompleteIn,
    FailIn,
    HeartbeatIn,
    HeartbeatOut,
    InputImageOut,
    LeasedReport,
    ModelOut,
    OutputsIn,
    OutputsOut,
    OutputUpload,
    ProgressIn,
    RegisterIn,
    RegisterOut,
)
from swarmstation.control import heartbeats
from swarmstation.control import jobs as jobs_ops
from swarmstation.control.instances import (
    move_instance,
    record_infrastructure_failure,
    record_machine_worked,
)
from swarmstation.control.models import model_sources
from swarmstation.control.routing import measured_rate
from swarmstation.domain.errors import Gone, InvalidInput, Unauthorized
from swarmstation.domain.names import safe_file_name
from swarmstation.domain.states import InstanceState, InstanceTrigger, JobState
from swarmstation.objectstore.base import UploadLease
from swarmstation.providers.static import is_static, recover_if_static
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, Job, Output, Pool

router = APIRouter(prefix="/worker/v1", tags=["worker"])

_URL_SECONDS = 3600


def _instance(s: DB, snapshot: InstanceIdentity, *, lock: bool = False) -> Instance:
    """`lock`: the row locked (PostgreSQL) before any job of the instance is, the order a
    heartbeat (the instance, then its jobs) and the scheduler's flush take them in: a report that
    locked its job first and the instance at the end deadlocked with a heartbeat."""
    inst = s.get(Instance, snapshot.id, with_for_update=lock)
    if inst is None or inst.state == InstanceState.TERMINATED:
        raise Gone("this instance has been terminated")
    # The identity may come from a replica's cache: a token rotated since (on any replica) is refused.
    if snapshot.token_hash and inst.token_hash != snapshot.token_hash:
        raise Unauthorized("invalid worker token")
    return inst


@router.post("/register", response_model=RegisterOut)
def register(body: RegisterIn, s: DB, me: CurrentInstance, state: State, ready: bool = True) -> RegisterOut:
    """Called when the worker starts (ready=false while ComfyUI is still starting) and again when
    ComfyUI answers (ready=true)."""
    inst = _instance(s, me)
    now = state.clock()
    inst.comfyui_url = body.comfyui_url
    inst.last_heartbeat_at = now
    # a (re)started worker's first heartbeat is read in full (its report may match the last one
    # while what the row holds was reset meanwhile, as parking does)
    kept = {k: v for k, v in inst.info.items() if k != "report_digest"}
    inst.info = {**kept, "worker_version": body.version}
    current = inst.state
    if current == InstanceState.UNHEALTHY and is_static(inst):  # attached: it stays and comes back
        if ready:
            recover_if_static(s, inst, now, "its worker registered again with ComfyUI ready")
    elif current == InstanceState.UNHEALTHY:
        raise Gone(heartbeats.UNHEALTHY_REPLACED)
    if current == InstanceState.PROVISIONING:
        move_instance(s, inst, InstanceTrigger.STARTED, "worker started", now)
    if ready and inst.state == InstanceState.INITIALIZING:
        move_instance(s, inst, InstanceTrigger.READY, "ComfyUI ready", now)
    s.commit()
    state.loops.poke()
    return RegisterOut(
        instance_id=inst.id,
        heartbeat_seconds=min(5.0, state.settings.heartbeat_timeout_seconds / 3),
        lease_seconds=state.settings.lease_seconds,
    )


@router.post("/bootstrap", status_code=204)
def bootstrap(body: BootstrapReport, s: DB, me: CurrentInstance, state: State) -> None:
    """The instance's bootstrap script reports its stages; a failed stage makes the instance
    UNHEALTHY at once (it is then destroyed and replaced) instead of waiting for the
    provisioning timeout."""
    inst = _instance(s, me)
    now = state.clock()
    inst.info = {
        **inst.info,
        "bootstrap": {"stage": body.stage, "ok": body.ok, "message": body.message[:500]},
    }
    if not body.ok and inst.state != InstanceState.UNHEALTHY:
        reason = f"bootstrap failed at {body.stage}: {body.message[:300]}"
        move_instance(s, inst, InstanceTrigger.BOOTSTRAP_FAILED, reason, now)
    elif body.ok and inst.state == InstanceState.PROVISIONING:
        move_instance(s, inst, InstanceTrigger.STARTED, f"bootstrap: {body.stage}", now)


def _with_urls(s: DB, state: State, wanted: list[tuple[str, str]]) -> list[ModelOut]:
    """Where a worker can fetch each model: presigned for the object store, else its public URL;
    no URL when neither the catalog nor the LoRA registry has it."""
    sources = model_sources(s, wanted)
    result = []
    for folder, name in wanted:
        src = sources.get((folder, name), {})
        url = state.store.presign_get(src["key"], _URL_SECONDS) if src.get("key") else src.get("source_url")
        result.append(
            ModelOut(folder=folder, name=name, url=url, sha256=src.get("sha256"), size=src.get("size"))
        )
    return result


#: Handlers that answer with a model commit before they return. FastAPI validates a sync
#: handler's answer in its thread pool (40 threads) while the request's session is still open: a
#: session that held the connection (SQLite has one) then waited for a thread held by requests
#: waiting for that connection, and 40 concurrent requests (200 instances registering at once)
#: stalled until the pool's 60 s timeout answered 503.
@router.get("/preload", response_model=list[ModelOut])
def preload(s: DB, me: CurrentInstance, state: State) -> list[ModelOut]:
    """The models this instance's pool preloads, with where to fetch each."""
    inst = _instance(s, me)
    pool = s.get(Pool, inst.pool)
    models = _with_urls(
        s, state, [(str(m["folder"]), str(m["name"])) for m in (pool.preload_models if pool else []) or []]
    )
    s.commit()  # before the answer is validated (see above)
    return models


@router.post("/heartbeat", response_model=HeartbeatOut)
async def heartbeat(body: HeartbeatIn, me: CurrentInstance, state: State) -> HeartbeatOut:
    """Most heartbeats change nothing: those are one read of a few columns and one UPDATE
    (control/heartbeats.py, `quick_heartbeat`); the others load the instance. async around one
    thread: the answer is validated on the event loop, not in one more hop."""
    return await anyio.to_thread.run_sync(_heartbeat, body, me, state)


def _heartbeat(body: HeartbeatIn, me: InstanceIdentity, state: AppState) -> HeartbeatOut:
    settings = state.settings
    beat = heartbeats.Heartbeat(
        running=[heartbeats.RunningJob(r.job_id, r.lease_token) for r in body.running],
        comfyui_ok=body.comfyui_ok,
        disk_free_bytes=body.disk_free_bytes,
        # neither models nor a digest (older workers, none on disk): no models
        models=body.models if body.models is not None else None if body.inventory_digest else [],
        loaded_checkpoint=body.loaded_checkpoint,
        cache=body.cache,
        inventory=body.inventory_digest,
    )
    beat_settings = heartbeats.HeartbeatSettings(
        heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds,
        lease_seconds=settings.lease_seconds,
        max_infra_requeues=settings.max_infra_requeues,
    )
    now = state.clock()
    prefetch: list[ModelOut] = []
    # the transaction commits before the answer is validated (see above), and before the
    # watchers are woken
    with transaction(state.sessions) as s:
        answer = heartbeats.quick_heartbeat(s, me.id, me.token_hash, beat, settings=beat_settings, now=now)
        if answer is None:
            answer = heartbeats.record_heartbeat(s, _instance(s, me), beat, settings=beat_settings, now=now)
        if answer.gone is None and answer.prefetch:
            prefetch = [m for m in _with_urls(s, state, answer.prefetch) if m.url]
    if answer.gone is not None:  # the instance is UNHEALTHY (committed) whatever the worker does
        state.loops.poke()
        raise Gone(answer.gone)
    for job_id in answer.requeued:
        state.notifier.wake(f"job:{job_id}")
    if answer.requeued or answer.changed:
        state.loops.poke()
    return HeartbeatOut(
        drain=answer.drain,
        cancel=answer.cancel,
        stale=answer.stale,
        prefetch=prefetch,
        inventory_digest=answer.inventory_digest,
        send_inventory=answer.send_inventory,
    )


def _assignment_for(
    state: State, instance_id: str, *, start: bool = False, holding: frozenset[str] = frozenset()
) -> Assignment | bool | None:
    """The job assigned to this instance, None when there is none, False when it must stop.

    `start`: the answer counts as the worker's /started (the job is RUNNING, its lease renewed, in
    this transaction), one round trip fewer per job. A RUNNING job of this instance that the
    worker does not say it holds (`holding`) is handed out again: the answer that started it was
    lost on its way (a dropped connection, a restarted worker), and without this the job would
    wait for its lease to run out, as an ASSIGNED one never has to."""
    with state.sessions() as s, s.begin():
        # one column: the row carries the worker's model inventory, read on every wake otherwise
        current = s.scalar(select(Instance.state).where(Instance.id == instance_id))
        if current is None or current in (InstanceState.TERMINATED, InstanceState.UNHEALTHY):
            return False
        wanted = [JobState.ASSIGNED, JobState.RUNNING] if start else [JobState.ASSIGNED]
        query = select(Job).where(Job.instance_id == instance_id, Job.state.in_(wanted))
        if holding:
            query = query.where(Job.id.not_in(sorted(holding)))
        query = query.order_by(Job.assigned_at, Job.id).limit(1)
        job = s.scalar(query.with_for_update() if start else query)
        if job is None:
            return None
        if start:
            jobs_ops.mark_running(s, job, lease_seconds=state.settings.lease_seconds, now=state.clock())
        images = [
            InputImageOut(
                node_id=node_id,
                input_name=input_name,
                filename=str(img["filename"]),
                url=state.store.presign_get(str(img["key"]), _URL_SECONDS),
            )
            for img in job.input_images.values()
            for node_id, input_name in img["bindings"]
        ]
        return Assignment(
            job_id=job.id,
            lease_token=job.lease_token,
            attempt=job.attempt,
            workflow=job.workflow,
            required_models=[
                ModelOut(
                    folder=m["folder"],
                    name=m["name"],
                    url=state.store.presign_get(m["key"], _URL_SECONDS)
                    if m.get("key")
                    else m.get("source_url"),
                    sha256=m.get("sha256"),
                    size=m.get("size"),
                )
                for m in job.required_models
            ],
            input_images=images,
            lease_seconds=state.settings.lease_seconds,
            started=start,
        )


#: How often a long poll re-reads the database while it waits. On the leader every assignment is
#: made by this process's scheduler, which wakes the poll at once: a leader's poll reads the
#: database when it is woken, not when a wait runs out (it only looks again whether this replica
#: still leads). Elsewhere another replica assigns, unseen here, and the re-read is how the poll
#: learns.
LEADER_RECHECK_SECONDS = 5.0
REPLICA_RECHECK_SECONDS = 1.0


def _recheck_seconds(state: State) -> float:
    return LEADER_RECHECK_SECONDS if state.loops.leader.held else REPLICA_RECHECK_SECONDS


@router.get("/jobs/next", response_model=Assignment, responses={204: {"description": "no job yet"}})
async def next_job(
    me: CurrentInstance,
    state: State,
    wait: Annotated[float, Query(ge=0, le=60)] = 20.0,
    start: Annotated[bool, Query(description="Count the answer as the job's start (no /started)")] = False,
    holding: Annotated[
        list[str] | None,
        Query(max_length=64, description="With start: the jobs this worker runs (not handed out again)"),
    ] = None,
) -> Assignment | Response:
    """Long poll: answers with the job the scheduler assigned to this instance, or 204 after
    `wait` seconds. 410 tells the worker to stop. While this control plane shuts down it answers
    204 at once (the worker comes back, to this replica's successor), so that a shutdown does not
    wait for every worker's poll to run out. `start=true` (workers since this field): the answer
    starts the job (`started` says so); a worker that does not send it calls /started as before."""
    deadline = time.monotonic() + wait
    poked = False
    held = frozenset(holding or ())
    with state.notifier.listening(f"instance:{me.id}") as woken:
        while True:
            woken.clear()  # before the read: a wake during it is not missed
            found = await asyncio.to_thread(_assignment_for, state, me.id, start=start, holding=held)
            if found is False:
                raise Gone("this instance is being stopped")
            if isinstance(found, Assignment):
                if found.started:
                    state.notifier.wake(f"job:{found.job_id}")
                return found
            if not poked:  # once per poll, and no change: with an empty queue the scheduler skips it
                state.loops.poke(change=False)
                poked = True
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or state.notifier.closed:
                    return Response(status_code=204)
                leader = state.loops.leader.held
                try:
                    async with asyncio.timeout(min(remaining, _recheck_seconds(state))):
                        await woken.wait()
                    break  # woken: read again
                except TimeoutError:
                    pass
                # the leader's scheduler wakes this poll for every assignment it makes (see above):
                # a wait that ran out without a wake reads nothing, unless this replica stopped leading
                if not (leader and state.loops.leader.held):
                    break


def _leased(s: DB, job_id: str, me: InstanceIdentity, body: LeasedReport) -> Job:
    """The job, locked, if this instance holds the lease. The instance is locked first (see
    `_instance`) as three columns: its row carries the worker's model inventory (up to 10,000
    keys), which a progress report has no use for."""
    row = s.execute(
        select(Instance.state, Instance.token_hash).where(Instance.id == me.id).with_for_update()
    ).first()
    if row is None or row.state == InstanceState.TERMINATED:
        raise Gone("this instance has been terminated")
    if me.token_hash and row.token_hash != me.token_hash:
        raise Unauthorized("invalid worker token")
    return jobs_ops.leased_job(s, job_id, me.id, body.lease_token)


# The job reports open their transaction in the handler's own thread instead of taking the
# request-scoped session (`DB`): a sync dependency's start and end are two more thread hops per
# request. The transaction commits when the block ends, before the answer.
@router.post("/jobs/{job_id}/started", status_code=204)
def started(job_id: str, body: LeasedReport, me: CurrentInstance, state: State) -> None:
    with transaction(state.sessions) as s:
        job = _leased(s, job_id, me, body)
        jobs_ops.mark_running(s, job, lease_seconds=state.settings.lease_seconds, now=state.clock())
    state.notifier.wake(f"job:{job_id}")


@router.post("/jobs/{job_id}/progress", status_code=204)
def progress(job_id: str, body: ProgressIn, me: CurrentInstance, state: State) -> None:
    detail = {
        k: v
        for k, v in {"node": body.node, "value": body.value, "max": body.max, "stage": body.stage}.items()
        if v is not None
    }
    with transaction(state.sessions) as s:
        job = _leased(s, job_id, me, body)
        jobs_ops.report_progress(
            s,
            job,
            progress=body.progress,
            detail=detail,
            lease_seconds=state.settings.lease_seconds,
            now=state.clock(),
        )
    state.notifier.wake(f"job:{job_id}")


def _safe_filename(name: str) -> str:
    # The one naming rule, shared with the object store's key check: what it yields, a key takes.
    return safe_file_name(name)


@router.post("/jobs/{job_id}/outputs", response_model=OutputsOut)
async def outputs(job_id: str, body: OutputsIn, me: CurrentInstance, state: State) -> OutputsOut:
    """Reserve output records and hand out presigned upload URLs."""
    # async around a thread: the answer is validated on the event loop, not in one more hop
    return await anyio.to_thread.run_sync(_reserve_outputs, job_id, body, me, state)


def _reserve_outputs(job_id: str, body: OutputsIn, me: InstanceIdentity, state: AppState) -> OutputsOut:
    with transaction(state.sessions) as s:
        return _reserve(s, job_id, body, me, state)


def _reserve(s: Session, job_id: str, body: OutputsIn, me: InstanceIdentity, state: AppState) -> OutputsOut:
    job = _leased(s, job_id, me, body)
    now = state.clock()
    expires = _upload_url_seconds(job, now, state.settings.lease_seconds)
    uploads: list[OutputUpload] = []
    for f in body.files:
        output_id = str(uuid.uuid4())
        filename = _safe_filename(f.filename)
        key = f"outputs/{job.id}/{output_id}/{filename}"
        content_type = f.content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        s.add(
            Output(
                id=output_id,
                job_id=job.id,
                key=key,
                filename=filename,
                content_type=content_type,
                size=f.size,
                node_id=f.node_id,
                uploaded=False,
                created_at=now,
            )
        )
        uploads.append(
            OutputUpload(
                output_id=output_id,
                filename=filename,
                upload_url=state.store.presign_put(key, expires, UploadLease(job.id, job.lease_token)),
            )
        )
    return OutputsOut(uploads=uploads)


def _upload_url_seconds(job: Job, now: datetime, lease_seconds: float) -> int:
    """An upload URL lives no longer than the lease it was given under (at least 1 s, as S3
    demands): a worker whose job has ended or moved cannot replace its outputs later."""
    remaining = (job.lease_expires_at - now).total_seconds() if job.lease_expires_at else lease_seconds
    return max(1, min(_URL_SECONDS, int(remaining)))


@router.post("/jobs/{job_id}/complete", status_code=204)
def complete(job_id: str, body: CompleteIn, me: CurrentInstance, state: State) -> None:
    with transaction(state.sessions) as s:
        timings = _complete(s, job_id, body, me, state)
    observe_job(timings)
    state.notifier.wake(f"job:{job_id}")
    state.loops.poke()


def _complete(
    s: Session, job_id: str, body: CompleteIn, me: InstanceIdentity, state: AppState
) -> dict[str, Any]:
    """The completion in `s`; the job's timings."""
    job = _leased(s, job_id, me, body)
    for output_id in body.outputs:
        out = s.get(Output, output_id)
        if out is None or out.job_id != job.id:
            raise InvalidInput(f"outputs: {output_id} is not an output of job {job.id}")
        if not state.store.exists(out.key):
            raise InvalidInput(f"outputs: {output_id} was not uploaded")
        out.size = state.store.size(out.key)
        out.uploaded = True
    s.flush()
    jobs_ops.complete_job(s, job, timings=body.timings, now=state.clock())
    inst = s.get(Instance, me.id)
    if inst is not None:
        record_machine_worked(inst)
        rate = measured_rate(
            inst.info.get("download_bps"),
            float(body.timings.get("model_bytes_downloaded", 0.0)),
            float(body.timings.get("model_fetch_seconds", 0.0)),
        )
        if rate is not None:
            inst.info = {**inst.info, "download_bps": rate}
    return dict(job.timings)


@router.post("/jobs/{job_id}/fail", status_code=204)
def fail(job_id: str, body: FailIn, s: DB, me: CurrentInstance, state: State) -> None:
    """A failed job. `infrastructure`: its machine failed, not the job; it goes back to the
    queue without spending an attempt, and the instance's circuit breaker counts it (several in a
    row take the instance out, its other jobs requeued the same way)."""
    job = _leased(s, job_id, me, body)
    inst = _instance(s, me)
    now = state.clock()
    settings = state.settings
    if body.infrastructure:
        jobs_ops.requeue_for_infrastructure(
            s, job, reason=body.error, max_infra_requeues=settings.max_infra_requeues, now=now
        )
        if record_infrastructure_failure(s, inst, threshold=settings.infra_failure_threshold, now=now):
            for other in jobs_ops.leased_jobs_on(s, inst.id):
                jobs_ops.requeue_for_infrastructure(
                    s,
                    other,
                    reason=f"its instance was taken out: {inst.state_reason}",
                    max_infra_requeues=settings.max_infra_requeues,
                    now=now,
                )
                state.notifier.wake(f"job:{other.id}")
    else:
        record_machine_worked(inst)
        if body.retryable:
            jobs_ops.retry_or_fail(s, job, reason=body.error, now=now)
        else:
            jobs_ops.fail_job(s, job, reason=body.error, now=now)
    s.commit()
    state.notifier.wake(f"job:{job_id}")
    state.loops.poke()
