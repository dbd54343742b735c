"""domain/startup: the resume give-up bound, start success, and the outcomes read from histories;
and scaling that counts starting instances by their chance of becoming ready."""

from __future__ import annotations

from datetime import UTC, datetime

from swarmstation.domain.scaling import InstanceView, Launch, PoolConfig, PoolSnapshot, plan_scaling
from swarmstation.domain.startup import (
    StartConfig,
    StartKind,
    StartOutcome,
    Transition,
    outcomes_from_transitions,
    resume_give_up_seconds,
    resume_overdue,
    start_success,
)
from swarmstation.domain.states import InstanceState, InstanceTrigger

CFG = StartConfig(resume_timeout_seconds=240, fallback_seconds=120, factor=3.0, min_seconds=60, min_samples=5)
R, L = StartKind.RESUME, StartKind.LAUNCH


def resumes(*times: float | None) -> list[StartOutcome]:
    return [StartOutcome(R, float(k), t) for k, t in enumerate(times)]


def test_give_up_bound_falls_back_until_enough_resumes_succeeded() -> None:
    assert resume_give_up_seconds([], CFG) == 120
    # four successes and failures do not make five samples
    assert resume_give_up_seconds(resumes(40, 50, None, 45, None, 42), CFG) == 120


def test_give_up_bound_is_a_multiple_of_past_resume_times_within_limits() -> None:
    times = resumes(*[40.0 + k for k in range(10)])  # 40..49 s: median 44.5 s
    bound = resume_give_up_seconds(times, CFG)
    assert abs(bound - 3.0 * 44.5) < 1e-6
    assert resume_give_up_seconds(resumes(*[10.0] * 10), CFG) == 60  # at least min_seconds
    assert resume_give_up_seconds(resumes(*[100.0] * 10), CFG) == 240  # never past the hard timeout
    # only resumes count, and only the last `window` of them
    launches = [StartOutcome(L, 100.0 + k, 500.0) for k in range(10)]
    assert resume_give_up_seconds([*times, *launches], CFG) == bound
    old_slow = resumes(*[200.0] * 60)
    recent_fast = [StartOutcome(R, 1000.0 + k, 30.0) for k in range(50)]
    assert resume_give_up_seconds([*old_slow, *recent_fast], CFG) == 90


def test_overdue_only_past_the_bound() -> None:
    assert not resume_overdue(72.0, 72.0)
    assert resume_overdue(72.1, 72.0)


def test_start_success_is_the_smoothed_share_that_became_ready() -> None:
    assert start_success([], L, CFG) == CFG.prior
    five = [StartOutcome(L, float(k), 60.0 if k < 2 else None) for k in range(5)]  # 2 of 5 ready
    assert abs(start_success(five, L, CFG) - (2 + 0.8 * 2) / 7) < 1e-9
    assert start_success(five, R, CFG) == CFG.prior  # the other kind is unaffected
    none_ready = [StartOutcome(L, float(k), None) for k in range(50)]
    assert start_success(none_ready, L, CFG) == CFG.floor


def test_outcomes_from_histories() -> None:
    P, INIT, IDLE, U, T, S = (
        InstanceState.PROVISIONING,
        InstanceState.INITIALIZING,
        InstanceState.IDLE,
        InstanceState.UNHEALTHY,
        InstanceState.TERMINATED,
        InstanceState.STOPPED,
    )
    rows = [
        # a launch ready after 150 s, parked, resumed, ready 45 s later, parked, resumed, given up
        Transition("a", None, P, None, 0.0),
        Transition("a", P, INIT, InstanceTrigger.STARTED, 100.0),
        Transition("a", INIT, IDLE, InstanceTrigger.READY, 150.0),
        Transition("a", IDLE, S, InstanceTrigger.PARK, 900.0),
        Transition("a", S, P, InstanceTrigger.RESUME, 1000.0),
        Transition("a", P, IDLE, InstanceTrigger.READY, 1045.0),
        Transition("a", IDLE, S, InstanceTrigger.PARK, 2000.0),
        Transition("a", S, P, InstanceTrigger.RESUME, 3000.0),
        Transition("a", P, U, InstanceTrigger.STARTUP_TIMEOUT, 3120.0),
        Transition("a", U, T, InstanceTrigger.DESTROY, 3125.0),
        # a launch that never came up, and one still starting
        Transition("b", None, P, None, 10.0),
        Transition("b", P, U, InstanceTrigger.STARTUP_TIMEOUT, 610.0),
        Transition("c", None, P, None, 20.0),
    ]
    assert outcomes_from_transitions(rows) == [
        StartOutcome(L, 0.0, 150.0),
        StartOutcome(R, 1000.0, 45.0),
        StartOutcome(R, 3000.0, None),
        StartOutcome(L, 10.0, None),
    ]


NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
POOL = PoolConfig(
    name="p", min_instances=0, max_instances=20, scale_up_queue_threshold=1, idle_minutes=10,
    target_wait_seconds=30,
)  # fmt: skip


def test_scaling_launches_more_when_launches_often_fail() -> None:
    # 6 queued 60 s jobs, nothing ready: each instance covers 1 job; certain starts -> 6 launches
    snap = PoolSnapshot(queued_jobs=6, expected_job_seconds=60)
    assert sum(isinstance(a, Launch) for a in plan_scaling(POOL, [], snap, now=NOW)) == 6
    # 2 of 5 launches become ready: 14 of them are expected to bring 5.6 ready (within half of 6)
    snap = PoolSnapshot(queued_jobs=6, expected_job_seconds=60, launch_success=0.4)
    assert sum(isinstance(a, Launch) for a in plan_scaling(POOL, [], snap, now=NOW)) == 14
    # a likely start is not doubled: one queued job, launches at 85% -> one launch
    snap = PoolSnapshot(queued_jobs=1, expected_job_seconds=60, launch_success=0.85)
    assert sum(isinstance(a, Launch) for a in plan_scaling(POOL, [], snap, now=NOW)) == 1
    # the spend cap still bounds it
    capped = PoolConfig(**{**POOL.__dict__, "max_spend_per_hour": 3.0})
    snap = PoolSnapshot(queued_jobs=6, expected_job_seconds=60, new_instance_price=0.3, launch_success=0.4)
    assert sum(isinstance(a, Launch) for a in plan_scaling(capped, [], snap, now=NOW)) == 10


def test_a_starting_instance_counts_by_its_chance_of_becoming_ready() -> None:
    starting = [
        InstanceView(f"s{k}", InstanceState.PROVISIONING, 0, None, NOW, 0.3, resuming=k == 0)
        for k in range(3)
    ]
    # 3 starting cover 3 queued jobs when every start comes up
    snap = PoolSnapshot(queued_jobs=3, expected_job_seconds=60)
    assert plan_scaling(POOL, starting, snap, now=NOW) == []
    # a resume that comes up 90% of the time and two launches at 50%: 1.9 covered, 1.1 short:
    # two certain instances' worth, so launches at 50% until 1.5 are expected
    snap = PoolSnapshot(queued_jobs=3, expected_job_seconds=60, launch_success=0.5, resume_success=0.9)
    assert sum(isinstance(a, Launch) for a in plan_scaling(POOL, starting, snap, now=NOW)) == 3
