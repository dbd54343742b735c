"""Which queued job goes to which instance, and what happens to leases that ran out.

Pure functions over snapshots. The control plane's scheduler loop reads the snapshot from the
database, calls `plan_assignments` and `plan_lease_expiry`, and applies the actions it gets
back; the simulator calls the same functions on a virtual clock.

Cache-aware routing comes later: for now the policy is first-in first-out onto the least
loaded instance with a free slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from swarmstation.domain.states import JobTrigger


@dataclass(frozen=True)
class QueuedJob:
    job_id: str
    pool: str
    queued_at: datetime


@dataclass(frozen=True)
class InstanceSlot:
    instance_id: str
    pool: str
    capacity: int
    active_jobs: int

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.active_jobs)


@dataclass(frozen=True)
class Assign:
    job_id: str
    instance_id: str


def plan_assignments(queued: Sequence[QueuedJob], instances: Sequence[InstanceSlot]) -> list[Assign]:
    """Assign the oldest queued jobs to the least loaded instance of their pool with a free slot."""
    free: dict[str, int] = {i.instance_id: i.free for i in instances}
    load: dict[str, int] = {i.instance_id: i.active_jobs for i in instances}
    by_pool: dict[str, list[str]] = {}
    for inst in sorted(instances, key=lambda i: i.instance_id):
        by_pool.setdefault(inst.pool, []).append(inst.instance_id)

    actions: list[Assign] = []
    for job in sorted(queued, key=lambda j: (j.queued_at, j.job_id)):
        candidates = [i for i in by_pool.get(job.pool, []) if free[i] > 0]
        if not candidates:
            continue
        chosen = min(candidates, key=lambda i: (load[i], i))
        free[chosen] -= 1
        load[chosen] += 1
        actions.append(Assign(job.job_id, chosen))
    return actions


@dataclass(frozen=True)
class Lease:
    job_id: str
    instance_id: str
    attempt: int
    max_attempts: int
    expires_at: datetime
    instance_alive: bool


@dataclass(frozen=True)
class Requeue:
    job_id: str
    reason: str
    trigger: JobTrigger  # LEASE_EXPIRED or INSTANCE_LOST: why it goes back


@dataclass(frozen=True)
class Fail:
    job_id: str
    reason: str


def plan_lease_expiry(leases: Sequence[Lease], *, now: datetime) -> list[Requeue | Fail]:
    """Leases whose instance died or whose time ran out go back to the queue, or fail when the
    job has used up its attempts. `attempt` counts the attempts already started (1 = first)."""
    actions: list[Requeue | Fail] = []
    for lease in sorted(leases, key=lambda le: le.job_id):
        if lease.instance_alive and lease.expires_at > now:
            continue
        why = "its instance stopped answering" if not lease.instance_alive else "its lease expired"
        trigger = JobTrigger.INSTANCE_LOST if not lease.instance_alive else JobTrigger.LEASE_EXPIRED
        if lease.attempt >= lease.max_attempts:
            actions.append(
                Fail(lease.job_id, f"{why} on attempt {lease.attempt} of {lease.max_attempts}; giving up")
            )
        else:
            actions.append(
                Requeue(lease.job_id, f"{why} (attempt {lease.attempt} of {lease.max_attempts})", trigger)
            )
    return actions
