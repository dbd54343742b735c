"""How many instances a pool should have: a pure policy over a snapshot of the pool.

`plan_scaling` returns launch, resume, park and drain actions; it never terminates an instance,
and drains or parks only idle ones (a draining instance finishes its jobs before it is destroyed).

Scale-up. Keep `min_instances`. Beyond that, estimate how many queued jobs the pool can start
within `target_wait_seconds`: a ready instance absorbs `slots * target_wait / job_seconds` jobs
in that window (at least its free slots), an instance still starting absorbs its slots times its
chance of becoming ready (the snapshot's ``launch_success`` or ``resume_success``, from
``domain.startup.start_success``; 1.0 unless given), or as nothing when it is ``overdue``. When
the queue exceeds that by `scale_up_queue_threshold` or more (the roadmap's queue-depth
threshold is this rule with a target wait of one job), add enough instances for the excess,
bounded by `max_instances` and by `max_spend_per_hour` (the sum of the live instances' rates
plus the new ones'); each new instance is worth its chance of becoming ready, and they are
added until they are expected to bring all but half an instance of what certain starts would
(when three of five launches fail, five are asked for where two would do). Parked instances
are resumed first, most recently parked first (their
disks hold the models, and a GPU is likelier still free the shorter it was parked); launches
make up the rest.

Scale-down, with hysteresis. Only when the pool needs no more instances, never within
`scale_cooldown_seconds` of the last scale-up, only idle instances, longest idle first, down to
`min_instances`, and keeping as many idle instances as there are queued jobs:
- every instance idle for `idle_minutes`;
- with a `target_utilisation`, also the pool's surplus over what recent work needs: the pool
  keeps `ceil(busy_slots_recent / (slots * target_utilisation))` instances, where
  `busy_slots_recent` is the mean number of busy slots over the last while (the snapshot's),
  and drains instances beyond that once they have been idle `utilisation_grace_seconds`. Without
  it, a pool that routes a steady trickle of jobs over all its instances never lets any of them
  reach `idle_minutes`, and stays at the size of its last burst.
An instance leaving this way is parked (stopped with its disk, so it costs storage only and
resumes in about a minute with its models cached) while fewer than `max_parked` are, and drained
to be destroyed otherwise. A parked instance is drained after `park_max_hours`, or when more
than `max_parked` are parked.

Pre-warm (``PoolConfig.prewarm``, off by default). The snapshot's ``forecast_instances`` (from
``domain.forecast.prewarm_instances``: the instances the forecast busiest bucket of the next lead
time needs) raises the pool's floor above ``min_instances`` for as long as the forecast holds:
instances are resumed or launched ahead of the demand, within ``max_instances`` and
``max_spend_per_hour`` like any other, and scale-down keeps that floor. With ``prewarm`` off the
forecast is ignored.

Lifetime. An instance older than `max_lifetime_hours` is drained (it finishes its jobs first) and
no longer counts toward the pool's size, so a replacement is launched at once.

Static (attached) instances, `InstanceView.static`: machines an operator attached, which no
provider launched. They count toward the pool's size, its capacity and its spend like any live
instance, so a pool of min 1 with one attached machine rents nothing until the queue needs burst
capacity; but they are never drained (idle, surplus or lifetime), parked or resumed here: only the
operator detaches them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from swarmstation.domain.states import InstanceState


@dataclass(frozen=True)
class PoolDefaults:
    """What a pool is when nobody said otherwise: the one place these values are written. A new
    pool (`POST /v1/admin/pools`), the columns of `store.models.Pool` and `PoolConfig` use them."""

    min_instances: int = 0
    max_instances: int = 1
    scale_up_queue_threshold: int = 1
    idle_minutes: float = 10.0
    slots_per_instance: int = 1
    target_wait_seconds: float = 60.0
    scale_cooldown_seconds: float = 30.0
    target_utilisation: float | None = None  # 0 < u <= 1; None: drain on idle_minutes only
    utilisation_grace_seconds: float = 60.0
    max_parked: int = 0  # stopped instances kept for a quick resume; 0: scale-down destroys
    park_max_hours: float = 24.0
    rental: str = "on-demand"  # or "interruptible": bid rentals, stopped when outbid
    bid_margin: float = 1.1  # the bid is the offer's min_bid times this


POOL_DEFAULTS = PoolDefaults()


@dataclass(frozen=True)
class PoolConfig:
    name: str
    min_instances: int
    max_instances: int
    scale_up_queue_threshold: int
    idle_minutes: float
    slots_per_instance: int = POOL_DEFAULTS.slots_per_instance
    target_wait_seconds: float = POOL_DEFAULTS.target_wait_seconds
    max_spend_per_hour: float | None = None
    max_lifetime_hours: float | None = None
    scale_cooldown_seconds: float = POOL_DEFAULTS.scale_cooldown_seconds
    target_utilisation: float | None = POOL_DEFAULTS.target_utilisation
    utilisation_grace_seconds: float = POOL_DEFAULTS.utilisation_grace_seconds
    max_parked: int = POOL_DEFAULTS.max_parked
    park_max_hours: float = POOL_DEFAULTS.park_max_hours
    prewarm: bool = False  # keep the forecast's instances (PoolSnapshot.forecast_instances)


@dataclass(frozen=True)
class InstanceView:
    instance_id: str
    state: InstanceState
    active_jobs: int
    idle_since: datetime | None
    created_at: datetime | None = None
    price_per_hour: float | None = None
    parked_at: datetime | None = None  # when a STOPPED instance was parked
    static: bool = False  # attached by an operator: counted, never drained or parked by the policy
    resuming: bool = False  # a starting instance that is a resume (not a fresh launch)
    # a starting instance past the time its kind usually takes (domain.startup.resume_give_up_seconds):
    # counted as covering nothing, so a replacement is asked for while it may still come up
    overdue: bool = False


@dataclass(frozen=True)
class PoolSnapshot:
    """What the policy needs besides the config and the instances."""

    queued_jobs: int
    expected_job_seconds: float = 30.0  # e.g. the median run time of recent jobs
    new_instance_price: float = 0.0  # what one more instance is expected to cost per hour
    last_scale_up_at: datetime | None = None
    busy_slots_recent: float | None = None  # mean busy slots over the recent window; None: unknown
    forecast_instances: int | None = None  # domain.forecast.prewarm_instances; None: no forecast
    # domain.startup.start_success: the chance a launch / a resume ends with a ready worker; an
    # instance still starting counts as that share of its slots (1.0: every start comes up)
    launch_success: float = 1.0
    resume_success: float = 1.0


@dataclass(frozen=True)
class Launch:
    pool: str
    reason: str


@dataclass(frozen=True)
class Drain:
    instance_id: str
    reason: str


@dataclass(frozen=True)
class Park:
    """Stop an idle instance at the provider, keeping its disk."""

    instance_id: str
    reason: str


@dataclass(frozen=True)
class Resume:
    """Start a parked instance again."""

    instance_id: str
    reason: str


Action = Launch | Resume | Park | Drain


_STARTING = frozenset({InstanceState.PROVISIONING, InstanceState.INITIALIZING})
_READY = frozenset({InstanceState.IDLE, InstanceState.BUSY})


def plan_scaling(
    pool: PoolConfig, instances: Sequence[InstanceView], snapshot: PoolSnapshot, *, now: datetime
) -> list[Action]:
    actions: list[Action] = []
    live = [i for i in instances if i.state in _STARTING | _READY]
    parked = sorted(
        (i for i in instances if i.state == InstanceState.STOPPED and not i.static),
        key=lambda i: (i.parked_at or now, i.instance_id),
        reverse=True,
    )  # most recently parked first

    # parked instances past their time, or beyond max_parked, are destroyed
    keep_parked: list[InstanceView] = []
    park_limit = now - timedelta(hours=pool.park_max_hours)
    for inst in parked:
        if inst.parked_at is not None and inst.parked_at <= park_limit:
            actions.append(Drain(inst.instance_id, f"parked for more than {pool.park_max_hours:g}h"))
        elif len(keep_parked) >= pool.max_parked:
            actions.append(Drain(inst.instance_id, f"more than {pool.max_parked} parked"))
        else:
            keep_parked.append(inst)

    if pool.max_lifetime_hours is not None:
        limit = now - timedelta(hours=pool.max_lifetime_hours)
        expired = [
            i
            for i in live
            if i.state in _READY and not i.static and i.created_at is not None and i.created_at <= limit
        ]
        for inst in expired:
            actions.append(Drain(inst.instance_id, f"past its max lifetime of {pool.max_lifetime_hours:g}h"))
        gone = {i.instance_id for i in expired}
        live = [i for i in live if i.instance_id not in gone]

    spend = sum(i.price_per_hour or 0.0 for i in live)
    count = len(live)
    resumable = list(keep_parked)

    def can_add(price: float) -> bool:
        if count >= pool.max_instances:
            return False
        cap = pool.max_spend_per_hour
        return cap is None or spend + price <= cap + 1e-9

    def add(reason: str) -> bool:
        """Resume the most recently parked instance, else launch; False when a cap stops it."""
        nonlocal count, spend
        if resumable:
            price = resumable[0].price_per_hour or snapshot.new_instance_price
            if not can_add(price):
                return False
            actions.append(Resume(resumable.pop(0).instance_id, reason))
        else:
            price = snapshot.new_instance_price
            if not can_add(price):
                return False
            actions.append(Launch(pool.name, reason))
        count += 1
        spend += price
        return True

    while count < pool.min_instances and add(f"pool below its minimum of {pool.min_instances}"):
        pass
    floor = pool.min_instances
    if pool.prewarm and snapshot.forecast_instances is not None:
        floor = max(floor, min(pool.max_instances, snapshot.forecast_instances))
        while count < floor and add(
            f"pre-warm: the forecast needs {snapshot.forecast_instances} instance(s)"
        ):
            pass

    slots = max(1, pool.slots_per_instance)
    per_ready = max(1.0, slots * pool.target_wait_seconds / max(snapshot.expected_job_seconds, 1e-3))
    p_launch = min(1.0, max(1e-3, snapshot.launch_success))
    p_resume = min(1.0, max(1e-3, snapshot.resume_success))
    absorb = 0.0
    for inst in live:
        if inst.state in _READY:
            absorb += max(per_ready - inst.active_jobs, float(max(0, slots - inst.active_jobs)))
        elif not inst.overdue:  # still starting: counted by its chance of becoming ready
            absorb += slots * (p_resume if inst.resuming else p_launch)
    for action in actions:  # added in this plan (to the minimum or the forecast)
        if isinstance(action, Resume):
            absorb += slots * p_resume
        elif isinstance(action, Launch):
            absorb += slots * p_launch
    excess = snapshot.queued_jobs - absorb
    # a queue that nothing can ever serve (no instance at all) gets one whatever the threshold
    if excess >= max(1, pool.scale_up_queue_threshold) or (snapshot.queued_jobs > 0 and count == 0):
        reason = (
            f"{snapshot.queued_jobs} jobs queued; the pool can start {absorb:.0f} within "
            f"{pool.target_wait_seconds:g}s"
        )
        # `needed` instances would do if every start came up; each added one is worth its chance of
        # becoming ready, and starts are added until they are expected to bring all but half an
        # instance of `needed` (every start coming up: `needed` of them, as without estimates)
        needed = math.ceil(excess / per_ready - 1e-9)
        expected = 0.0
        while expected < needed - 0.5:
            chance = p_resume if resumable else p_launch
            if not add(reason):
                break
            expected += chance
    if snapshot.queued_jobs > absorb or count > len(live):
        return actions

    if (
        snapshot.last_scale_up_at is not None
        and (now - snapshot.last_scale_up_at).total_seconds() < pool.scale_cooldown_seconds
    ):
        return actions
    idle = sorted(
        (
            i
            for i in live
            if i.state == InstanceState.IDLE
            and i.active_jobs == 0
            and i.idle_since is not None
            and not i.static
        ),
        key=lambda i: (i.idle_since or now, i.instance_id),
    )
    # a queued job the pool can absorb (e.g. one waiting a few seconds for the instance that holds
    # its models) does not stop a scale-down, but as many idle instances as queued jobs stay
    surplus = min(len(live) - floor, len(idle) - snapshot.queued_jobs)
    idle_limit = now - timedelta(minutes=pool.idle_minutes)
    leaving = [i for i in idle if i.idle_since is not None and i.idle_since <= idle_limit]
    util = pool.target_utilisation
    reason_util = ""
    if util is not None and util > 0 and snapshot.busy_slots_recent is not None:
        needed = max(floor, math.ceil(snapshot.busy_slots_recent / (slots * util) - 1e-9))
        over = len(live) - needed - len(leaving)
        grace_limit = now - timedelta(seconds=pool.utilisation_grace_seconds)
        for inst in idle:
            if over <= 0:
                break
            if inst in leaving or inst.idle_since is None or inst.idle_since > grace_limit:
                continue
            leaving.append(inst)
            over -= 1
        reason_util = (
            f"surplus: recent work keeps {snapshot.busy_slots_recent:.2f} slots busy, "
            f"{needed} instance(s) at {util:.0%} utilisation"
        )
    leaving.sort(key=lambda i: (i.idle_since or now, i.instance_id))
    # the most recently idle of those leaving are parked (the warmest caches), the rest destroyed
    leaving = leaving[: max(0, surplus)]
    park_slots = max(0, pool.max_parked - len(keep_parked))
    to_park = {i.instance_id for i in leaving[len(leaving) - park_slots :]} if park_slots else set()
    for inst in leaving:
        long_idle = inst.idle_since is not None and inst.idle_since <= idle_limit
        reason = f"idle for more than {pool.idle_minutes:g} minutes" if long_idle else reason_util
        if inst.instance_id in to_park:
            actions.append(Park(inst.instance_id, reason))
        else:
            actions.append(Drain(inst.instance_id, reason))
    return actions
