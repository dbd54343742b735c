"""The job lifecycle against the database: submit, lease, report, finish, requeue.

Every move into a terminal state (complete, fail, cancel) settles the job's charge in the same
transaction (control/charging.py), whoever makes it: a worker's report, the scheduler, ComfyUI
Deploy's dispatcher, a user's cancel.

Every state change goes through `_move`, which applies a trigger through the domain's table
(`domain.states.JOB`) and records a `state` event, with its trigger, that users see on the job's
event stream. Reports from workers carry the lease's
fencing token; a report with an old token is refused with `StaleLease` and changes nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from swarmstation.control import charging
from swarmstation.control.instances import move_instance
from swarmstation.domain.breaker import keeps_attempt
from swarmstation.domain.errors import NotFound, StaleLease
from swarmstation.domain.states import (
    JOB,
    LEASED_JOB_STATES,
    InstanceState,
    InstanceTrigger,
    JobState,
    JobTrigger,
)
from swarmstation.domain.tools import BoundJob
from swarmstation.store.models import Instance, Job, JobEvent, Output


class JobNotFound(NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


def record_event(
    s: Session,
    job: Job,
    type_: str,
    data: dict[str, Any],
    now: datetime,
    trigger: JobTrigger | None = None,
) -> None:
    s.add(JobEvent(job_id=job.id, type=type_, data=data, at=now, trigger=trigger))


def _move(s: Session, job: Job, trigger: JobTrigger, now: datetime, **extra: Any) -> None:
    JOB.apply(job, trigger)  # raises IllegalTransition, the job unchanged
    data: dict[str, Any] = {
        "state": job.state.value,
        "attempt": job.attempt,
        "trigger": trigger.value,
        **extra,
    }
    record_event(s, job, "state", data, now, trigger)


def submit_job(
    s: Session,
    *,
    user_id: str,
    tool_slug: str,
    pool: str,
    bound: BoundJob,
    input_images: dict[str, Any],
    max_attempts: int,
    now: datetime,
    model_sources: dict[tuple[str, str], dict[str, Any]] | None = None,
) -> Job:
    """`model_sources` says where the worker can fetch a model that ComfyUI may lack:
    (folder, name) → {key (object store), sha256, size}."""
    sources = model_sources or {}
    job = Job(
        id=str(uuid.uuid4()),
        user_id=user_id,
        tool_slug=tool_slug,
        pool=pool,
        state=JobState.QUEUED,
        inputs=bound.inputs,
        workflow=bound.workflow,
        required_models=[
            {"folder": m.folder, "name": m.name, **sources.get((m.folder, m.name), {})}
            for m in bound.required_models
        ],
        input_images=input_images,
        attempt=0,
        max_attempts=max_attempts,
        lease_token=0,
        progress=0.0,
        created_at=now,
        queued_at=now,
        timings={},
        applied_loras=[],
        warnings=[],
    )
    s.add(job)
    s.flush()
    record_event(s, job, "state", {"state": JobState.QUEUED.value, "attempt": 0}, now)
    return job


def active_job_count(s: Session, instance_id: str) -> int:
    return (
        s.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.instance_id == instance_id, Job.state.in_(sorted(LEASED_JOB_STATES)))
        )
        or 0
    )


def assign_job(s: Session, job: Job, inst: Instance, *, lease_seconds: float, now: datetime) -> None:
    job.attempt += 1
    job.lease_token += 1
    job.instance_id = inst.id
    job.assigned_at = now
    job.lease_expires_at = now + timedelta(seconds=lease_seconds)
    _move(s, job, JobTrigger.ASSIGN, now, instance_id=inst.id)
    if inst.state == InstanceState.IDLE:
        move_instance(s, inst, InstanceTrigger.ASSIGN, f"assigned job {job.id}", now)


def assign_external(s: Session, job: Job, *, backend: str, run_id: str, now: datetime) -> None:
    """The job was handed to an external backend (ComfyUI Deploy), which runs it as `run_id`:
    a lease as with an instance, with no instance and no expiry (the backend's webhooks and the
    poller report on it)."""
    job.attempt += 1
    job.lease_token += 1
    job.assigned_at = now
    job.external_run_id = run_id
    job.external = {}
    _move(s, job, JobTrigger.ASSIGN, now, backend=backend)


def leased_job(s: Session, job_id: str, instance_id: str, lease_token: int) -> Job:
    """The job, locked, if the instance `instance_id` still holds the lease `lease_token` on it."""
    job = s.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None:
        raise JobNotFound(job_id)
    if job.instance_id != instance_id or job.lease_token != lease_token or job.state not in LEASED_JOB_STATES:
        raise StaleLease(
            f"job {job_id}: lease {lease_token} is no longer valid "
            f"(job is {job.state}, lease {job.lease_token})"
        )
    return job


def renew_lease(job: Job, *, lease_seconds: float, now: datetime) -> None:
    job.lease_expires_at = now + timedelta(seconds=lease_seconds)


def mark_running(s: Session, job: Job, *, lease_seconds: float, now: datetime) -> None:
    renew_lease(job, lease_seconds=lease_seconds, now=now)
    if job.state == JobState.ASSIGNED:
        job.started_at = now
        _move(s, job, JobTrigger.START, now, instance_id=job.instance_id)


def report_progress(
    s: Session, job: Job, *, progress: float, detail: dict[str, Any], lease_seconds: float, now: datetime
) -> None:
    mark_running(s, job, lease_seconds=lease_seconds, now=now)
    job.progress = max(job.progress, min(1.0, max(0.0, progress)))
    record_event(s, job, "progress", {"progress": job.progress, **detail}, now)


def _release_instance(s: Session, job: Job, now: datetime) -> None:
    """After a job leaves its instance: a busy instance with nothing left to do is idle again."""
    if job.instance_id is None:
        return
    inst = s.get(Instance, job.instance_id)
    if inst is None or inst.state != InstanceState.BUSY:
        return
    if active_job_count(s, inst.id) == 0:
        move_instance(s, inst, InstanceTrigger.RELEASE, f"job {job.id} left", now)


def complete_job(s: Session, job: Job, *, timings: dict[str, Any], now: datetime) -> None:
    outputs = list(s.scalars(select(Output).where(Output.job_id == job.id, Output.uploaded.is_(True))))
    job.finished_at = now
    job.progress = 1.0
    job.lease_expires_at = None
    started = job.started_at or job.assigned_at or now
    # Queue wait counts from the last time the job entered the queue (a requeue starts it again).
    job.timings = {
        **job.timings,
        **timings,
        "queue_wait_seconds": round(max(0.0, ((job.assigned_at or now) - job.queued_at).total_seconds()), 4),
        "total_seconds": round((now - job.created_at).total_seconds(), 4),
        "assigned_to_start_seconds": round(
            max(0.0, (started - (job.assigned_at or started)).total_seconds()), 4
        ),
    }
    _move(s, job, JobTrigger.COMPLETE, now, outputs=[o.id for o in outputs])
    s.flush()
    charging.settle_job(s, job, now=now)  # with the transition: settled once, or not at all
    _release_instance(s, job, now)
    charging.observe_completion(s, job)  # the next quotes of its tool count this run


def fail_job(s: Session, job: Job, *, reason: str, now: datetime) -> None:
    job.finished_at = now
    job.error = reason
    job.lease_expires_at = None
    _move(s, job, JobTrigger.FAIL, now, error=reason)
    s.flush()
    charging.settle_job(s, job, now=now)  # a failed job is free: its hold is released
    _release_instance(s, job, now)


def requeue_job(s: Session, job: Job, *, trigger: JobTrigger, reason: str, now: datetime) -> None:
    """Back to the queue; `trigger` says why (`RETRY`, `LEASE_EXPIRED`, `INSTANCE_LOST`, ...)."""
    job.queued_at = now
    job.lease_expires_at = None
    job.progress = 0.0
    _move(s, job, trigger, now, reason=reason)
    s.flush()
    _release_instance(s, job, now)
    job.instance_id = None


def retry_or_fail(s: Session, job: Job, *, reason: str, now: datetime) -> None:
    """A retryable failure: back to the queue while attempts remain."""
    if job.attempt < job.max_attempts:
        requeue_job(
            s,
            job,
            trigger=JobTrigger.RETRY,
            reason=f"{reason} (attempt {job.attempt} of {job.max_attempts})",
            now=now,
        )
    else:
        fail_job(s, job, reason=f"{reason}; gave up after {job.attempt} attempts", now=now)


def requeue_for_infrastructure(
    s: Session, job: Job, *, reason: str, max_infra_requeues: int, now: datetime
) -> None:
    """The job's machine failed, not the job: back to the queue without spending its attempt
    (`domain.breaker.keeps_attempt` bounds how often; past that it is a retryable failure)."""
    if not keeps_attempt(job.infra_requeues, max_infra_requeues):
        retry_or_fail(s, job, reason=reason, now=now)
        return
    job.infra_requeues += 1
    job.attempt = max(0, job.attempt - 1)  # the assignment counted an attempt; give it back
    requeue_job(
        s,
        job,
        trigger=JobTrigger.MACHINE_FAILED,
        reason=f"{reason} (a failure of instance {job.instance_id}: no attempt spent)",
        now=now,
    )


def leased_jobs_on(s: Session, instance_id: str) -> list[Job]:
    return list(
        s.scalars(
            select(Job)
            .where(Job.instance_id == instance_id, Job.state.in_(sorted(LEASED_JOB_STATES)))
            .order_by(Job.assigned_at, Job.id)
            .with_for_update()
        )
    )


def cancel_job(s: Session, job: Job, *, now: datetime) -> None:
    job.finished_at = now
    job.lease_expires_at = None
    _move(s, job, JobTrigger.CANCEL, now)
    s.flush()
    charging.settle_job(s, job, now=now)  # free before it started, its GPU seconds after
    _release_instance(s, job, now)
