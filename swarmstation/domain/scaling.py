"""How many instances a pool should have: a pure policy over a snapshot of the pool.

`plan_scaling` returns launch and drain actions; it never terminates an instance that is
running a job. Scale-up: keep `min_instances`, and add instances while the queued work exceeds
what the live instances can absorb (`scale_up_queue_threshold` queued jobs per instance beyond
their free slots), bounded by `max_instances`. Scale-down: instances idle longer than
`idle_minutes` are drained, oldest idle first, never below `min_instances`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from swarmstation.domain.states import InstanceState


@dataclass(frozen=True)
class PoolConfig:
    name: str
    min_instances: int
    max_instances: int
    scale_up_queue_threshold: int
    idle_minutes: float
    slots_per_instance: int = 1


@dataclass(frozen=True)
class InstanceView:
    instance_id: str
    state: InstanceState
    active_jobs: int
    idle_since: datetime | None


@dataclass(frozen=True)
class Launch:
    pool: str
    reason: str


@dataclass(frozen=True)
class Drain:
    instance_id: str
    reason: str


_COUNTED = frozenset(
    {InstanceState.PROVISIONING, InstanceState.INITIALIZING, InstanceState.IDLE, InstanceState.BUSY}
)


def plan_scaling(
    pool: PoolConfig, instances: Sequence[InstanceView], queued_jobs: int, *, now: datetime
) -> list[Launch | Drain]:
    live = [i for i in instances if i.state in _COUNTED]
    actions: list[Launch | Drain] = []

    missing = pool.min_instances - len(live)
    for _ in range(max(0, missing)):
        actions.append(Launch(pool.name, f"pool below its minimum of {pool.min_instances}"))
    count = len(live) + max(0, missing)

    free_slots = (
        sum(max(0, pool.slots_per_instance - i.active_jobs) for i in live)
        + max(0, missing) * pool.slots_per_instance
    )
    backlog = queued_jobs - free_slots
    threshold = max(1, pool.scale_up_queue_threshold)
    while backlog >= threshold and count < pool.max_instances:
        actions.append(Launch(pool.name, f"{queued_jobs} jobs queued, more than the pool absorbs"))
        count += 1
        backlog -= threshold
    if actions or queued_jobs > 0:
        return actions

    idle_limit = now - timedelta(minutes=pool.idle_minutes)
    idle = sorted(
        (
            i
            for i in live
            if i.state == InstanceState.IDLE
            and i.active_jobs == 0
            and i.idle_since is not None
            and i.idle_since <= idle_limit
        ),
        key=lambda i: (i.idle_since or now, i.instance_id),
    )
    surplus = len(live) - pool.min_instances
    for inst in idle[: max(0, surplus)]:
        actions.append(Drain(inst.instance_id, f"idle for more than {pool.idle_minutes:g} minutes"))
    return actions
