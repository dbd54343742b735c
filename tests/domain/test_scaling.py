"""The scaling policy: minimum, demand, caps, hysteresis, lifetime; never a busy instance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from swarmstation.domain.scaling import Drain, InstanceView, Launch, PoolConfig, PoolSnapshot, plan_scaling
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


def launches(actions: list[Launch | Drain]) -> int:
    return sum(isinstance(a, Launch) for a in actions)


def drains(actions: list[Launch | Drain]) -> list[str]:
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
    assert drains(plan_scaling(POOL, idle(3, minutes_idle=20), PoolSnapshot(queued_jobs=1), now=NOW)) == []


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
)
def test_never_drains_a_busy_instance_and_never_exceeds_max(states, active, queued, idle_minutes) -> None:  # type: ignore[no-untyped-def]
    instances = [
        InstanceView(
            f"i{k}",
            s,
            active[k] if s == InstanceState.BUSY else 0,
            NOW - timedelta(minutes=idle_minutes),
            NOW - timedelta(hours=2),
            0.5,
        )
        for k, s in enumerate(states)
    ]
    actions = plan_scaling(
        POOL, instances, PoolSnapshot(queued_jobs=queued, expected_job_seconds=20), now=NOW
    )
    by_id = {i.instance_id: i for i in instances}
    for d in drains(actions):
        assert by_id[d].state == InstanceState.IDLE and by_id[d].active_jobs == 0
    live = sum(
        s in (InstanceState.PROVISIONING, InstanceState.INITIALIZING, InstanceState.IDLE, InstanceState.BUSY)
        for s in states
    )
    assert launches(actions) == 0 or live + launches(actions) <= POOL.max_instances
