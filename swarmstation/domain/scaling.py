"""How many instances a pool should have: a pure policy over a snapshot of the pool.

`plan_scaling` returns launch and drain actions; it never terminates an instance, and drains
only idle ones (a draining instance finishes its jobs before it is destroyed).

Scale-up. Keep `min_instances`. Beyond that, estimate how many queued jobs the pool can start
within `target_wait_seconds`: a ready instance absorbs `slots * target_wait / job_seconds` jobs
in that window (at least its free slots), an instance still starting absorbs its slots. When
the queue exceeds that by `scale_up_queue_threshold` or more (the roadmap's queue-depth
threshold is this rule with a target wait of one job), launch enough instances for the excess,
bounded by `max_instances` and by `max_spend_per_hour` (the sum of the live instances' rates
plus the new ones').

Scale-down, with hysteresis. Only when nothing is queued, never within `scale_cooldown_seconds`
of the last scale-up, and only instances idle for `idle_minutes`, oldest idle first, down to
`min_instances`.

Lifetime. An instance older than `max_lifetime_hours` is drained (it finishes its jobs first) and
no longer counts toward the pool's size, so a replacement is launched at once.
"""

from __future__ import annotations

import math
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
    target_wait_seconds: float = 60.0
    max_spend_per_hour: float | None = None
    max_lifetime_hours: float | None = None
    scale_cooldown_seconds: float = 30.0


@dataclass(frozen=True)
class InstanceView:
    instance_id: str
    state: InstanceState
    active_jobs: int
    idle_since: datetime | None
    created_at: datetime | None = None
    price_per_hour: float | None = None


@dataclass(frozen=True)
class PoolSnapshot:
    """What the policy needs besides the config and the instances."""

    queued_jobs: int
    expected_job_seconds: float = 30.0  # e.g. the median run time of recent jobs
    new_instance_price: float = 0.0  # what one more instance is expected to cost per hour
    last_scale_up_at: datetime | None = None


@dataclass(frozen=True)
class Launch:
    pool: str
    reason: str


@dataclass(frozen=True)
class Drain:
    instance_id: str
    reason: str


_STARTING = frozenset({InstanceState.PROVISIONING, InstanceState.INITIALIZING})
_READY = frozenset({InstanceState.IDLE, InstanceState.BUSY})


def plan_scaling(
    pool: PoolConfig, instances: Sequence[InstanceView], snapshot: PoolSnapshot, *, now: datetime
) -> list[Launch | Drain]:
    actions: list[Launch | Drain] = []
    live = [i for i in instances if i.state in _STARTING | _READY]

    if pool.max_lifetime_hours is not None:
        limit = now - timedelta(hours=pool.max_lifetime_hours)
        expired = [
            i for i in live if i.state in _READY and i.created_at is not None and i.created_at <= limit
        ]
        for inst in expired:
            actions.append(Drain(inst.instance_id, f"past its max lifetime of {pool.max_lifetime_hours:g}h"))
        gone = {i.instance_id for i in expired}
        live = [i for i in live if i.instance_id not in gone]

    spend = sum(i.price_per_hour or 0.0 for i in live)
    count = len(live)

    def can_launch() -> bool:
        if count >= pool.max_instances:
            return False
        cap = pool.max_spend_per_hour
        return cap is None or spend + snapshot.new_instance_price <= cap + 1e-9

    def launch(reason: str) -> None:
        nonlocal count, spend
        actions.append(Launch(pool.name, reason))
        count += 1
        spend += snapshot.new_instance_price

    while count < pool.min_instances and can_launch():
        launch(f"pool below its minimum of {pool.min_instances}")

    slots = max(1, pool.slots_per_instance)
    per_ready = max(1.0, slots * pool.target_wait_seconds / max(snapshot.expected_job_seconds, 1e-3))
    absorb = 0.0
    for inst in live:
        if inst.state in _READY:
            absorb += max(per_ready - inst.active_jobs, float(max(0, slots - inst.active_jobs)))
        else:
            absorb += slots
    absorb += (count - len(live)) * slots  # launched in this plan
    excess = snapshot.queued_jobs - absorb
    if excess >= max(1, pool.scale_up_queue_threshold):
        wanted = math.ceil(excess / per_ready)
        for _ in range(wanted):
            if not can_launch():
                break
            launch(
                f"{snapshot.queued_jobs} jobs queued; the pool can start {absorb:.0f} within "
                f"{pool.target_wait_seconds:g}s"
            )
    if snapshot.queued_jobs > 0 or any(isinstance(a, Launch) for a in actions):
        return actions

    if (
        snapshot.last_scale_up_at is not None
        and (now - snapshot.last_scale_up_at).total_seconds() < pool.scale_cooldown_seconds
    ):
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
