"""The scheduler pass: instance health, expired leases, then new assignments.

`scheduler_pass` reads a snapshot, asks the domain policies what to do and applies it in one
transaction. It returns the instances that got work and the jobs that changed, so the caller can
wake the long-polls and event streams waiting on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

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


def check_instance_health(s: Session, settings: Settings, now: datetime) -> list[str]:
    """Instances that stopped heartbeating, or never came up, become UNHEALTHY.

    Parked instances send no heartbeats: STOPPED ones are not looked at, nor parked ones being
    drained (DRAINING with `parked_at`, destroyed by the pool loop). A resumed instance is
    PROVISIONING again but was ready once, so the provisioning deadline does not apply to it; the
    pool loop's resume timeout does (control/pools.py)."""
    heartbeat_deadline = now - timedelta(seconds=settings.heartbeat_timeout_seconds)
    default_deadline = now - timedelta(seconds=settings.provisioning_timeout_seconds)
    deadlines = provisioning_deadlines(s, settings.provisioning_timeout_seconds, now)
    changed: list[str] = []
    rows = s.scalars(
        select(Instance).where(
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
    )
    for inst in rows:
        if inst.parked_at is not None:
            continue
        if inst.last_heartbeat_at is None or inst.state == InstanceState.PROVISIONING:
            deadline = deadlines.get(inst.pool, default_deadline)
            if inst.ready_at is None and inst.created_at < deadline:
                reason = f"not ready within {(now - deadline).total_seconds():g}s of launch"
                move_instance(s, inst, InstanceTrigger.STARTUP_TIMEOUT, reason, now)
                changed.append(inst.id)
        elif inst.last_heartbeat_at is not None and inst.last_heartbeat_at < heartbeat_deadline:
            reason = f"no heartbeat for {settings.heartbeat_timeout_seconds:g}s"
            move_instance(s, inst, InstanceTrigger.HEARTBEAT_LOST, reason, now)
            changed.append(inst.id)
    return changed


def expire_leases(s: Session, now: datetime, result: PassResult) -> None:
    rows = s.execute(
        select(Job, Instance.state)
        .outerjoin(Instance, Instance.id == Job.instance_id)
        .where(Job.state.in_(sorted(LEASED_JOB_STATES)), Job.backend == "pool")
    ).all()
    by_id = {job.id: job for job, _ in rows}
    leases = [
        Lease(
            job_id=job.id,
            instance_id=job.instance_id or "",
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            expires_at=job.lease_expires_at or now,
            instance_alive=state is not None and state in _ALIVE,
        )
        for job, state in rows
    ]
    for action in plan_lease_expiry(leases, now=now):
        job = by_id[action.job_id]
        if isinstance(action, Requeue):
            jobs_ops.requeue_job(s, job, trigger=action.trigger, reason=action.reason, now=now)
        elif isinstance(action, Fail):
            jobs_ops.fail_job(s, job, reason=action.reason, now=now)
        result.changed_jobs.add(job.id)


def assign_queued(s: Session, settings: Settings, now: datetime, result: PassResult) -> None:
    queued_rows = list(
        s.scalars(
            select(Job)
            .where(Job.state == JobState.QUEUED, Job.backend == "pool")
            .order_by(Job.queued_at, Job.id)
            .limit(_MAX_BATCH)
        )
    )
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
    running: dict[str, list[Job]] = {i: [] for i in instances}
    for job in s.scalars(
        select(Job).where(
            Job.state.in_([st.value for st in LEASED_JOB_STATES]), Job.instance_id.in_(list(instances))
        )
    ):
        if job.instance_id is not None:
            running[job.instance_id].append(job)
    expected = {name: expected_job_seconds(s, name) for name in {j.pool for j in queued_rows}}
    by_id = {j.id: j for j in queued_rows}
    if settings.routing == "fifo":
        slots = [
            InstanceSlot(
                i.id, i.pool, instance_slots(i, pools), len(running[i.id])
            )
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
                running=running[i.id],
                expected_run_seconds=expected.get(i.pool, 30.0),
                settings=settings,
            )
            for i in instances.values()
        ]
        routes = plan_routes(jobs, fleet, now=now.timestamp(), config=routing_config(settings))
        plan = [(a.job_id, a.instance_id) for a in routes]
    for job_id, instance_id in plan:
        job = by_id[job_id]
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


def plan_prefetches(s: Session, settings: Settings, now: datetime) -> None:
    """Popular models onto idle instances that lack them; the instance learns of it in the
    answer to its next heartbeat. Demand: the last `estimates.PREFETCH_DEMAND_JOBS` (200) submitted."""
    if settings.routing != "cache":
        return
    newest = select(Job).order_by(Job.created_at.desc()).limit(estimates.PREFETCH_DEMAND_JOBS)
    recent = list(s.scalars(newest))
    if not recent:
        return
    instances = list(s.scalars(select(Instance).where(Instance.state == InstanceState.IDLE)))
    if not instances:
        return
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


def scheduler_pass(s: Session, settings: Settings, now: datetime, *, sweep: bool = True) -> PassResult:
    """`sweep=False` only assigns: the passes triggered by each submitted or finished job skip the
    health and lease checks, which the periodic pass runs."""
    result = PassResult()
    if sweep:
        check_instance_health(s, settings, now)
        expire_leases(s, now, result)
    assign_queued(s, settings, now, result)
    if sweep:
        plan_prefetches(s, settings, now)
    return result
