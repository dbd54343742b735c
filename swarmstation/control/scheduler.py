"""The scheduler pass: instance health, expired leases, then new assignments.

`scheduler_pass` reads a snapshot, asks the domain policies what to do and applies it in one
transaction. It returns the instances that got work and the jobs that changed, so the caller can
wake the long-polls and event streams waiting on them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import select
from sqlalchemy.orm import Session

from swarmstation.config import Settings
from swarmstation.control import jobs as jobs_ops
from swarmstation.control.instances import move_instance
from swarmstation.control.pools import expected_job_seconds, provisioning_deadlines
from swarmstation.control.routing import routable_instance, routable_job, routing_config
from swarmstation.domain import estimates
from swarmstation.domain.routing import plan_prefetch, plan_routes
from swarmstation.domain.scheduling import (
    Fail,
    InstanceSlot,
    Lease,
    QueuedJob,
    Requeue,
    plan_assignments,
    plan_lease_expiry,
)
from swarmstation.domain.states import (
    LEASED_JOB_STATES,
    SCHEDULABLE_INSTANCE_STATES,
    InstanceState,
    InstanceTrigger,
    JobState,
)
from swarmstation.store.models import Instance, Job, Pool

# Instances whose jobs may still finish: a draining instance finishes what it has.
_ALIVE = frozenset(
    {InstanceState.INITIALIZING, InstanceState.IDLE, InstanceState.BUSY, InstanceState.DRAINING}
)
_MAX_BATCH = 500


@dataclass
class PassResult:
    woken_instances: set[str] = field(default_factory=set)
    changed_jobs: set[str] = field(default_factory=set)
    #: The earliest time a sweep has something to do (a heartbeat or provisioning deadline, a
    #: lease's expiry) among what this pass saw; None when nothing it saw has one.
    next_due: datetime | None = None
    #: The pass read no queued job (the loop skips the assignment passes of pokes that enqueue
    #: nothing until something changes).
    queue_empty: bool = False

    def due(self, at: datetime) -> None:
        if self.next_due is None or at < self.next_due:
            self.next_due = at


def check_instance_health(
    s: Session, settings: Settings, now: datetime, result: PassResult | None = None
) -> list[str]:
    """Instances that stopped heartbeating, or never came up, become UNHEALTHY.

    Parked instances send no heartbeats: STOPPED ones are not looked at, nor parked ones being
    drained (DRAINING with `parked_at`, destroyed by the pool loop). A resumed instance is
    PROVISIONING again but was ready once, so the provisioning deadline does not apply to it; the
    pool loop's resume timeout does (control/pools.py)."""
    heartbeat_deadline = now - timedelta(seconds=settings.heartbeat_timeout_seconds)
    default_deadline = now - timedelta(seconds=settings.provisioning_timeout_seconds)
    deadlines = provisioning_deadlines(s, settings.provisioning_timeout_seconds, now)
    changed: list[str] = []
    # Columns only (every sweep reads every live instance); an instance that must move is loaded.
    rows = s.execute(
        select(
            Instance.id,
            Instance.pool,
            Instance.state,
            Instance.parked_at,
            Instance.last_heartbeat_at,
            Instance.ready_at,
            Instance.created_at,
        ).where(
            Instance.state.in_(
                [
                    InstanceState.PROVISIONING,
                    InstanceState.INITIALIZING,
                    InstanceState.IDLE,
                    InstanceState.BUSY,
                    InstanceState.DRAINING,
                ]
            )
        )
    ).all()
    for row in rows:
        if row.parked_at is not None:
            continue
        if row.last_heartbeat_at is None or row.state == InstanceState.PROVISIONING:
            deadline = deadlines.get(row.pool, default_deadline)
            if row.ready_at is None and row.created_at < deadline:
                reason = f"not ready within {(now - deadline).total_seconds():g}s of launch"
                trigger = InstanceTrigger.STARTUP_TIMEOUT
            else:
                if row.ready_at is None and result is not None:
                    result.due(row.created_at + (now - deadline))
                continue
        elif row.last_heartbeat_at < heartbeat_deadline:
            reason = f"no heartbeat for {settings.heartbeat_timeout_seconds:g}s"
            trigger = InstanceTrigger.HEARTBEAT_LOST
        else:
            if result is not None:
                result.due(row.last_heartbeat_at + (now - heartbeat_deadline))
            continue
        inst = s.get(Instance, row.id)
        if inst is not None:
            move_instance(s, inst, trigger, reason, now)
            changed.append(inst.id)
    return changed


def expire_leases(s: Session, now: datetime, result: PassResult) -> None:
    # Columns only: every sweep reads every lease, and full rows (workflows, inputs) cost far
    # more than the check; the jobs that must move are loaded, locked, one by one.
    rows = s.execute(
        select(Job.id, Job.instance_id, Job.attempt, Job.max_attempts, Job.lease_expires_at, Instance.state)
        .outerjoin(Instance, Instance.id == Job.instance_id)
        .where(Job.state.in_(sorted(LEASED_JOB_STATES)), Job.backend == "pool")
    ).all()
    leases = [
        Lease(
            job_id=job_id,
            instance_id=instance_id or "",
            attempt=attempt,
            max_attempts=max_attempts,
            expires_at=expires_at or now,
            instance_alive=state is not None and state in _ALIVE,
        )
        for job_id, instance_id, attempt, max_attempts, expires_at, state in rows
    ]
    for lease in leases:
        if lease.instance_alive and lease.expires_at > now:
            result.due(lease.expires_at)
    for action in plan_lease_expiry(leases, now=now):
        job = s.scalar(select(Job).where(Job.id == action.job_id).with_for_update())
        if job is None or job.state not in LEASED_JOB_STATES:
            continue
        if isinstance(action, Requeue):
            jobs_ops.requeue_job(s, job, trigger=action.trigger, reason=action.reason, now=now)
        elif isinstance(action, Fail):
            jobs_ops.fail_job(s, job, reason=action.reason, now=now)
        result.changed_jobs.add(job.id)


@dataclass(frozen=True)
class RunningLease:
    """What routing reads of a leased job (routing.observe_instance takes it as a Job)."""

    id: str
    instance_id: str | None
    started_at: datetime | None
    assigned_at: datetime | None
    queued_at: datetime


#: A pool's expected run time, from its last completed jobs: read again after this many seconds
#: rather than on every pass (a full scan of finished jobs, for a figure that moves slowly).
EXPECTED_SECONDS_TTL = 5.0
_EXPECTED: WeakKeyDictionary[object, dict[str, tuple[float, float]]] = WeakKeyDictionary()


def _expected_seconds(s: Session, pool: str) -> float:
    cache = _EXPECTED.setdefault(s.get_bind(), {})
    hit = cache.get(pool)
    now = time.monotonic()
    if hit is not None and now - hit[0] < EXPECTED_SECONDS_TTL:
        return hit[1]
    value = expected_job_seconds(s, pool)
    cache[pool] = (now, value)
    return value


def assign_queued(s: Session, settings: Settings, now: datetime, result: PassResult) -> None:
    # Columns only: a pass reads up to 500 queued jobs and assigns a few (one per free slot);
    # whole rows (workflows, inputs) cost far more than routing them. Those assigned are loaded,
    # locked, together.
    queued_rows = [
        DemandJob(*row)
        for row in s.execute(
            select(Job.id, Job.pool, Job.queued_at, Job.required_models)
            .where(Job.state == JobState.QUEUED, Job.backend == "pool")
            .order_by(Job.queued_at, Job.id)
            .limit(_MAX_BATCH)
        )
    ]
    result.queue_empty = not queued_rows
    if not queued_rows:
        return
    pools = {p.name: p for p in s.scalars(select(Pool))}
    instances = {
        i.id: i
        for i in s.scalars(
            select(Instance).where(Instance.state.in_([st.value for st in SCHEDULABLE_INSTANCE_STATES]))
        )
        # a worker that says its ComfyUI is down takes no jobs until it says otherwise
        if not (i.info or {}).get("comfyui_down_since")
    }
    if not instances:
        return
    running: dict[str, list[RunningLease]] = {i: [] for i in instances}
    # Columns only: routing needs when each leased job started, not the job.
    for lease in s.execute(
        select(Job.id, Job.instance_id, Job.started_at, Job.assigned_at, Job.queued_at).where(
            Job.state.in_([st.value for st in LEASED_JOB_STATES]), Job.instance_id.in_(list(instances))
        )
    ):
        if lease.instance_id is not None:
            running[lease.instance_id].append(RunningLease(*lease))
    expected = {name: _expected_seconds(s, name) for name in {j.pool for j in queued_rows}}
    if settings.routing == "fifo":
        slots = [
            InstanceSlot(i.id, i.pool, instance_slots(i, pools), len(running[i.id]))
            for i in instances.values()
        ]
        queued = [QueuedJob(j.id, j.pool, j.queued_at) for j in queued_rows]
        plan: list[tuple[str, str]] = [(a.job_id, a.instance_id) for a in plan_assignments(queued, slots)]
    else:
        jobs = [routable_job(j, expected.get(j.pool, 30.0)) for j in queued_rows]
        fleet = [
            routable_instance(
                i,
                capacity=instance_slots(i, pools),
                running=running[i.id],  # type: ignore[arg-type]
                expected_run_seconds=expected.get(i.pool, 30.0),
                settings=settings,
            )
            for i in instances.values()
        ]
        routes = plan_routes(jobs, fleet, now=now.timestamp(), config=routing_config(settings))
        plan = [(a.job_id, a.instance_id) for a in routes]
    if not plan:
        return
    # still queued when locked (PostgreSQL: a user's cancel may have won the row meanwhile)
    locked = {
        j.id: j
        for j in s.scalars(
            select(Job)
            .where(Job.id.in_([job_id for job_id, _ in plan]), Job.state == JobState.QUEUED)
            .with_for_update()
        )
    }
    for job_id, instance_id in plan:
        job = locked.get(job_id)
        if job is None:
            continue
        jobs_ops.assign_job(s, job, instances[instance_id], lease_seconds=settings.lease_seconds, now=now)
        result.changed_jobs.add(job.id)
        result.woken_instances.add(instance_id)


def instance_slots(inst: Instance, pools: dict[str, Pool]) -> int:
    """Jobs an instance runs at once: its own `slots` (an attached machine's, `info["slots"]`), else
    its pool's."""
    own = inst.info.get("slots") if isinstance(inst.info, dict) else None
    if isinstance(own, int) and own >= 1:
        return own
    return pools[inst.pool].slots_per_instance if inst.pool in pools else 1


#: The inventories and demand each database's last prefetch plan was made for: a sweep whose
#: idle instances, their caches and the newest job are unchanged plans nothing again.
_PREFETCH_PLANNED: WeakKeyDictionary[object, tuple[object, ...]] = WeakKeyDictionary()


def _prefetch_signature(
    instances: list[Instance], newest: tuple[str, datetime] | None, settings: Settings
) -> tuple[object, ...]:
    return (
        newest,
        repr(routing_config(settings)),
        tuple(
            sorted(
                (
                    i.id,
                    i.pool,
                    tuple((i.info or {}).get("models") or ()),
                    (i.info or {}).get("loaded_checkpoint"),
                    tuple((i.info or {}).get("prefetch") or ()),
                    (i.info or {}).get("slots"),
                )
                for i in instances
            )
        ),
    )


def plan_prefetches(s: Session, settings: Settings, now: datetime) -> None:
    """Popular models onto idle instances that lack them; the instance learns of it in the
    answer to its next heartbeat. Demand: the last `estimates.PREFETCH_DEMAND_JOBS` (200) submitted.
    Planned again only when the idle instances, their inventories or the demand changed."""
    if settings.routing != "cache":
        return
    instances = list(s.scalars(select(Instance).where(Instance.state == InstanceState.IDLE)))
    if not instances:
        return
    newest_row = s.execute(select(Job.id, Job.created_at).order_by(Job.created_at.desc()).limit(1)).first()
    if newest_row is None:
        return
    newest = (str(newest_row[0]), newest_row[1])
    bind = s.get_bind()
    if _PREFETCH_PLANNED.get(bind) == _prefetch_signature(instances, newest, settings):
        return
    # Columns only: the demand needs each job's models, not its workflow and inputs.
    recent = [
        DemandJob(*row)
        for row in s.execute(
            select(Job.id, Job.pool, Job.queued_at, Job.required_models)
            .order_by(Job.created_at.desc())
            .limit(estimates.PREFETCH_DEMAND_JOBS)
        )
    ]
    pools = {p.name: p for p in s.scalars(select(Pool))}
    expected = estimates.DEFAULT_RUN_SECONDS
    fleet = [
        routable_instance(
            i,
            capacity=instance_slots(i, pools),
            running=[],
            expected_run_seconds=expected,
            settings=settings,
        )
        for i in instances
    ]
    jobs = [routable_job(j, expected) for j in recent]
    wanted: dict[str, list[str]] = {}
    for action in plan_prefetch(jobs, fleet, now=now.timestamp(), config=routing_config(settings)):
        wanted.setdefault(action.instance_id, []).append(action.model_key)
    for inst in instances:
        keys = wanted.get(inst.id, [])
        if keys != inst.info.get("prefetch", []):
            inst.info = {**inst.info, "prefetch": keys}
    _PREFETCH_PLANNED[bind] = _prefetch_signature(instances, newest, settings)


@dataclass(frozen=True)
class DemandJob:
    """A queued or recent job as the columns routing reads (routing.JobColumns)."""

    id: str
    pool: str
    queued_at: datetime
    required_models: list[dict[str, Any]]


def scheduler_pass(s: Session, settings: Settings, now: datetime, *, sweep: bool = True) -> PassResult:
    """`sweep=False` only assigns: the passes triggered by each submitted or finished job skip the
    health and lease checks, which the periodic pass runs."""
    result = PassResult()
    if sweep:
        check_instance_health(s, settings, now, result)
        expire_leases(s, now, result)
    assign_queued(s, settings, now, result)
    if sweep:
        plan_prefetches(s, settings, now)
    return result
