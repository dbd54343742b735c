"""The scaling policy: minimum, demand, caps, hysteresis, lifetime; never a busy instance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from swarmstation.domain.scaling import (
    Action,
    Drain,
    InstanceView,
    Launch,
    Park,
    PoolConfig,
    PoolSnapshot,
    Resume,
    plan_scaling,
)
from swarmstation.domain.states import InstanceState

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
POOL = PoolConfig(
    name="p",
    min_instances=1,
    max_instances=5,
    scale_up_queue_threshold=1,
    idle_minutes=10,
    target_wait_seconds=30,
)


def idle(n: int, minutes_idle: float = 0, price: float | None = None) -> list[InstanceView]:
    since = NOW - timedelta(minutes=minutes_idle)
    return [
        InstanceView(f"i{k}", InstanceState.IDLE, 0, since, NOW - timedelta(hours=1), price) for k in range(n)
    ]


def launches(actions: list[Action]) -> int:
    return sum(isinstance(a, Launch) for a in actions)


def drains(actions: list[Action]) -> list[str]:
    return [a.instance_id for a in actions if isinstance(a, Drain)]


def test_keeps_the_minimum() -> None:
    assert launches(plan_scaling(POOL, [], PoolSnapshot(queued_jobs=0), now=NOW)) == 1
    assert plan_scaling(POOL, idle(1), PoolSnapshot(queued_jobs=0), now=NOW) == []


def test_scales_up_for_work_that_would_wait_too_long_bounded_by_max() -> None:
    # one idle instance, 10 s jobs, 30 s target: it starts 3 within the target; 20 queued → 17 too many
    snap = PoolSnapshot(queued_jobs=20, expected_job_seconds=10)
    assert launches(plan_scaling(POOL, idle(1), snap, now=NOW)) == 4  # capped by max_instances 5
    snap = PoolSnapshot(queued_jobs=3, expected_job_seconds=10)
    assert launches(plan_scaling(POOL, idle(1), snap, now=NOW)) == 0


def test_a_queue_with_no_instance_at_all_gets_one_whatever_the_threshold() -> None:
    pool = PoolConfig(**{**POOL.__dict__, "min_instances": 0, "scale_up_queue_threshold": 3})
    assert launches(plan_scaling(pool, [], PoolSnapshot(queued_jobs=1), now=NOW)) == 1
    parked_pool = PoolConfig(**{**pool.__dict__, "max_parked": 1})
    actions = plan_scaling(parked_pool, parked(1, [1]), PoolSnapshot(queued_jobs=1), now=NOW)
    assert [type(a).__name__ for a in actions] == ["Resume"]
    # with an instance up, the threshold applies as before
    assert launches(plan_scaling(pool, idle(1), PoolSnapshot(queued_jobs=2), now=NOW)) == 0


def test_starting_instances_count_toward_capacity() -> None:
    starting = [InstanceView("s", InstanceState.PROVISIONING, 0, None, NOW, None)]
    snap = PoolSnapshot(queued_jobs=4, expected_job_seconds=10)
    assert launches(plan_scaling(POOL, idle(1) + starting, snap, now=NOW)) == 0


def test_spend_cap_bounds_scale_up() -> None:
    pool = PoolConfig(**{**POOL.__dict__, "max_spend_per_hour": 1.0})
    snap = PoolSnapshot(queued_jobs=100, expected_job_seconds=60, new_instance_price=0.3)
    actions = plan_scaling(pool, idle(1, price=0.3), snap, now=NOW)
    assert launches(actions) == 2  # 0.3 + 2 * 0.3 = 0.9 <= 1.0; a third would make 1.2


def test_scale_down_only_idle_past_timeout_and_not_below_min() -> None:
    instances = [*idle(2, minutes_idle=20), InstanceView("busy", InstanceState.BUSY, 1, None, NOW, None)]
    actions = plan_scaling(POOL, instances, PoolSnapshot(queued_jobs=0), now=NOW)
    assert sorted(drains(actions)) == ["i0", "i1"]  # the busy one counts toward min and stays
    assert drains(plan_scaling(POOL, idle(2, minutes_idle=5), PoolSnapshot(queued_jobs=0), now=NOW)) == []
    # queued jobs the pool absorbs do not block a scale-down, but keep as many idle instances
    assert (
        len(drains(plan_scaling(POOL, idle(3, minutes_idle=20), PoolSnapshot(queued_jobs=1), now=NOW))) == 2
    )
    assert drains(plan_scaling(POOL, idle(3, minutes_idle=20), PoolSnapshot(queued_jobs=3), now=NOW)) == []
    # a queue the pool cannot absorb launches instead
    actions = plan_scaling(POOL, idle(3, minutes_idle=20), PoolSnapshot(queued_jobs=40), now=NOW)
    assert drains(actions) == [] and launches(actions) > 0


UTIL = PoolConfig(**{**POOL.__dict__, "min_instances": 0, "max_instances": 10, "target_utilisation": 0.5})


def staggered_idle(minutes: list[float]) -> list[InstanceView]:
    return [
        InstanceView(
            f"i{k}", InstanceState.IDLE, 0, NOW - timedelta(minutes=m), NOW - timedelta(hours=1), None
        )
        for k, m in enumerate(minutes)
    ]


def test_utilisation_drains_the_surplus_before_the_idle_timeout() -> None:
    # 0.8 busy slots recently at a 50% target: 2 instances are enough; 4 idle for 2-5 minutes
    pool = staggered_idle([2, 5, 3, 4])
    snap = PoolSnapshot(queued_jobs=0, busy_slots_recent=0.8)
    assert drains(plan_scaling(UTIL, pool, snap, now=NOW)) == ["i1", "i3"]  # longest idle first
    # without a target only the idle timeout (10 minutes) drains
    plain = PoolConfig(**{**UTIL.__dict__, "target_utilisation": None})
    assert drains(plan_scaling(plain, pool, snap, now=NOW)) == []
    # more recent work needs more instances: 1.6 busy slots -> 4 kept
    assert drains(plan_scaling(UTIL, pool, PoolSnapshot(queued_jobs=0, busy_slots_recent=1.6), now=NOW)) == []
    # unknown recent work: no utilisation drain
    assert drains(plan_scaling(UTIL, pool, PoolSnapshot(queued_jobs=0), now=NOW)) == []


def test_utilisation_drain_waits_for_the_grace_and_keeps_min_and_busy() -> None:
    snap = PoolSnapshot(queued_jobs=0, busy_slots_recent=0.0)
    # idle for 30 s only: under the 60 s grace
    assert drains(plan_scaling(UTIL, staggered_idle([0.5, 0.5]), snap, now=NOW)) == []
    busy = InstanceView("b", InstanceState.BUSY, 1, None, NOW - timedelta(hours=1), None)
    with_min = PoolConfig(**{**UTIL.__dict__, "min_instances": 2})
    actions = plan_scaling(with_min, [busy, *staggered_idle([3, 4])], snap, now=NOW)
    assert drains(actions) == ["i1"]  # down to the minimum of 2, the busy one counted and kept
    assert "utilisation" in next(a.reason for a in actions if isinstance(a, Drain))


def test_hysteresis_no_drain_right_after_a_scale_up() -> None:
    snap = PoolSnapshot(queued_jobs=0, last_scale_up_at=NOW - timedelta(seconds=5))
    assert drains(plan_scaling(POOL, idle(3, minutes_idle=20), snap, now=NOW)) == []
    later = PoolSnapshot(queued_jobs=0, last_scale_up_at=NOW - timedelta(minutes=5))
    assert len(drains(plan_scaling(POOL, idle(3, minutes_idle=20), later, now=NOW))) == 2


def test_max_lifetime_drains_and_replaces() -> None:
    pool = PoolConfig(**{**POOL.__dict__, "max_lifetime_hours": 0.5})
    actions = plan_scaling(pool, idle(1), PoolSnapshot(queued_jobs=0), now=NOW)
    assert drains(actions) == ["i0"] and launches(actions) == 1


@given(
    states=st.lists(st.sampled_from(list(InstanceState)), max_size=8),
    active=st.lists(st.integers(0, 2), min_size=8, max_size=8),
    queued=st.integers(0, 200),
    idle_minutes=st.floats(0, 100),
    max_parked=st.integers(0, 3),
)
def test_never_drains_a_busy_instance_and_never_exceeds_max(  # type: ignore[no-untyped-def]
    states, active, queued, idle_minutes, max_parked
) -> None:
    instances = [
        InstanceView(
            f"i{k}",
            s,
            active[k] if s == InstanceState.BUSY else 0,
            NOW - timedelta(minutes=idle_minutes),
            NOW - timedelta(hours=2),
            0.5,
            parked_at=NOW - timedelta(minutes=idle_minutes) if s == InstanceState.STOPPED else None,
        )
        for k, s in enumerate(states)
    ]
    pool = PoolConfig(**{**POOL.__dict__, "max_parked": max_parked})
    actions = plan_scaling(
        pool, instances, PoolSnapshot(queued_jobs=queued, expected_job_seconds=20), now=NOW
    )
    by_id = {i.instance_id: i for i in instances}
    for d in drains(actions):
        assert by_id[d].state in (InstanceState.IDLE, InstanceState.STOPPED) and by_id[d].active_jobs == 0
    for a in actions:
        if isinstance(a, Park):
            assert by_id[a.instance_id].state == InstanceState.IDLE
        if isinstance(a, Resume):
            assert by_id[a.instance_id].state == InstanceState.STOPPED
    touched = [a.instance_id for a in actions if not isinstance(a, Launch)]
    assert len(touched) == len(set(touched))  # one action per instance
    live = sum(
        s in (InstanceState.PROVISIONING, InstanceState.INITIALIZING, InstanceState.IDLE, InstanceState.BUSY)
        for s in states
    )
    added = launches(actions) + sum(isinstance(a, Resume) for a in actions)
    assert added == 0 or live + added <= POOL.max_instances
    parked_after = (
        sum(s == InstanceState.STOPPED for s in states)
        + sum(isinstance(a, Park) for a in actions)
        - sum(isinstance(a, Resume) for a in actions)
        - sum(1 for d in drains(actions) if by_id[d].state == InstanceState.STOPPED)
    )
    assert parked_after <= max_parked


PARKING = PoolConfig(**{**POOL.__dict__, "min_instances": 0, "max_parked": 2, "park_max_hours": 12})


def parked(n: int, hours_ago: list[float]) -> list[InstanceView]:
    return [
        InstanceView(
            f"p{k}",
            InstanceState.STOPPED,
            0,
            None,
            NOW - timedelta(days=1),
            0.3,
            parked_at=NOW - timedelta(hours=h),
        )
        for k, h in zip(range(n), hours_ago, strict=True)
    ]


def test_scale_down_parks_up_to_max_parked_and_destroys_the_rest() -> None:
    pool = staggered_idle([20, 30, 40])
    actions = plan_scaling(PARKING, pool, PoolSnapshot(queued_jobs=0), now=NOW)
    # the two most recently idle (warmest caches) are parked, the longest idle destroyed
    assert [a.instance_id for a in actions if isinstance(a, Park)] == ["i1", "i0"]
    assert drains(actions) == ["i2"]
    # with one already parked, only one more is parked
    actions = plan_scaling(PARKING, pool + parked(1, [1]), PoolSnapshot(queued_jobs=0), now=NOW)
    assert [a.instance_id for a in actions if isinstance(a, Park)] == ["i0"]
    assert sorted(drains(actions)) == ["i1", "i2"]
    # parking off (the default): every one is destroyed, as before
    plain = PoolConfig(**{**PARKING.__dict__, "max_parked": 0})
    assert sorted(drains(plan_scaling(plain, pool, PoolSnapshot(queued_jobs=0), now=NOW))) == [
        "i0",
        "i1",
        "i2",
    ]


def test_scale_up_resumes_the_most_recently_parked_before_launching() -> None:
    snap = PoolSnapshot(queued_jobs=5, expected_job_seconds=30, new_instance_price=0.3)
    actions = plan_scaling(PARKING, parked(2, [5, 1]), snap, now=NOW)
    assert [type(a).__name__ for a in actions] == ["Resume", "Resume", "Launch", "Launch", "Launch"]
    assert [a.instance_id for a in actions if isinstance(a, Resume)] == ["p1", "p0"]
    # the minimum is also met by resuming
    with_min = PoolConfig(**{**PARKING.__dict__, "min_instances": 1})
    actions = plan_scaling(with_min, parked(2, [5, 1]), PoolSnapshot(queued_jobs=0), now=NOW)
    assert actions == [Resume("p1", "pool below its minimum of 1")]


def test_parked_too_long_or_too_many_are_destroyed() -> None:
    actions = plan_scaling(PARKING, parked(3, [13, 1, 2]), PoolSnapshot(queued_jobs=0), now=NOW)
    assert drains(actions) == ["p0"]  # past 12 h; p1 and p2 fit in max_parked
    fewer = PoolConfig(**{**PARKING.__dict__, "max_parked": 1})
    actions = plan_scaling(fewer, parked(3, [3, 1, 2]), PoolSnapshot(queued_jobs=0), now=NOW)
    assert sorted(drains(actions)) == ["p0", "p2"]  # the most recently parked one stays


def test_a_resume_counts_toward_the_spend_cap_at_its_own_price() -> None:
    capped = PoolConfig(**{**PARKING.__dict__, "max_spend_per_hour": 0.5})
    snap = PoolSnapshot(queued_jobs=50, expected_job_seconds=30, new_instance_price=0.2)
    actions = plan_scaling(capped, parked(1, [1]), snap, now=NOW)
    # resuming the parked one costs 0.3/h; one 0.2/h launch fits in the 0.5/h cap after it
    assert [type(a).__name__ for a in actions] == ["Resume", "Launch"]


# -- pre-warm (PoolConfig.prewarm, PoolSnapshot.forecast_instances) ---------------------------

PREWARM = PoolConfig(
    name="p",
    min_instances=0,
    max_instances=6,
    scale_up_queue_threshold=1,
    idle_minutes=10,
    prewarm=True,
    max_spend_per_hour=1.0,
)


def test_prewarm_launches_ahead_of_the_forecast() -> None:
    acts = plan_scaling(PREWARM, [], PoolSnapshot(0, forecast_instances=3, new_instance_price=0.3), now=NOW)
    assert [type(a) for a in acts] == [Launch] * 3
    assert all("pre-warm" in a.reason for a in acts)


def test_prewarm_is_off_unless_the_pool_says_so() -> None:
    off = PoolConfig(**{**PREWARM.__dict__, "prewarm": False})
    assert plan_scaling(off, [], PoolSnapshot(0, forecast_instances=3), now=NOW) == []


def test_prewarm_is_bounded_by_the_spend_cap_and_max_instances() -> None:
    capped = plan_scaling(
        PREWARM, [], PoolSnapshot(0, forecast_instances=10, new_instance_price=0.3), now=NOW
    )
    assert len(capped) == 3  # 3 x $0.30 <= $1.00 < 4 x $0.30
    wide = PoolConfig(**{**PREWARM.__dict__, "max_spend_per_hour": None})
    assert len(plan_scaling(wide, [], PoolSnapshot(0, forecast_instances=10), now=NOW)) == 6


def test_prewarm_resumes_parked_instances_first() -> None:
    parked = [
        InstanceView(
            "s1", InstanceState.STOPPED, 0, None, NOW - timedelta(hours=2), 0.3, NOW - timedelta(hours=1)
        )
    ]
    cfg = PoolConfig(**{**PREWARM.__dict__, "max_parked": 2})
    acts = plan_scaling(cfg, parked, PoolSnapshot(0, forecast_instances=2, new_instance_price=0.3), now=NOW)
    assert [type(a) for a in acts] == [Resume, Launch]


def test_prewarm_floor_holds_off_idle_scale_down() -> None:
    long_idle = idle(3, minutes_idle=30, price=0.3)
    kept = plan_scaling(PREWARM, long_idle, PoolSnapshot(0, forecast_instances=2), now=NOW)
    assert [type(a) for a in kept] == [Drain]  # one beyond the forecast's two goes
    assert len(plan_scaling(PREWARM, long_idle, PoolSnapshot(0, forecast_instances=0), now=NOW)) == 3
