"""The simulated pool replaces a resume that is overdue (past the bound from the pool's past resume
times, domain.startup) before the resume timeout, as the live pool loop does; and counts starts by
their chance of becoming ready."""

from dataclasses import replace

from swarmstation.domain.startup import StartKind, StartOutcome
from swarmstation.domain.states import InstanceState
from swarmstation.sim import config as C
from swarmstation.sim import trace as T
from swarmstation.sim.pool import PoolSimulation


def _parked_pool(config: C.SimConfig) -> tuple[PoolSimulation, list[str]]:
    """A pool with one parked instance whose host died while parked (its resume fails) and a queued
    job, after 20 resumes that came up in 40 s: the bound is 3 x 40 = 120 s."""
    cfg = C.with_knobs(config, max_parked=2, prewarm=False)
    sim = PoolSimulation(T.generate("prior", days=1, seed=3), "ours", cfg, seed=3)
    for k in range(20):
        sim.starts[StartKind.RESUME].append(StartOutcome(StartKind.RESUME, float(k), 40.0))
    ids = []
    for _ in range(2):
        inst = sim.launch()
        sim.on_ready(inst)
        sim.park(inst)
        inst.lost = True  # found out only by its resume never coming up
        ids.append(inst.iid)
    job = sim.jobs[0]
    sim.queue[job.tj.job_id] = job
    return sim, ids


def _pass_at(sim: PoolSimulation, t: float) -> list[str]:
    """One pool pass at `t`: what it resumed (ids) or launched ('launch')."""
    sim.now = t
    before = sim.launches
    resumed_before = {i for i, inst in sim.instances.items() if inst.state == InstanceState.PROVISIONING}
    sim.on_pool(None)
    resumed = [
        i
        for i, inst in sim.instances.items()
        if inst.state == InstanceState.PROVISIONING and i not in resumed_before and inst.resumes
    ]
    return resumed + ["launch"] * (sim.launches - before)


ON = replace(C.SimConfig(), replace_overdue_resumes=True)


def test_an_overdue_resume_is_replaced_before_the_resume_timeout() -> None:
    sim, (first, second) = _parked_pool(ON)
    assert sim.start_estimates()[2] == 120.0
    assert _pass_at(sim, 1000.0) == [second]  # the most recently parked one is resumed
    assert _pass_at(sim, 1100.0) == []  # 100 s: not overdue yet
    # 122 s: overdue, its worker never came: the other parked one is resumed, well before 240 s
    assert _pass_at(sim, 1122.0) == [first]
    assert sim.instances[second].state == InstanceState.PROVISIONING  # given up only at the timeout


def test_without_the_bound_nothing_replaces_it_before_the_resume_timeout() -> None:
    assert not C.SimConfig().replace_overdue_resumes  # off by default, as the live setting
    sim, (_, second) = _parked_pool(replace(C.SimConfig(), replace_overdue_resumes=False))
    assert _pass_at(sim, 1000.0) == [second]
    assert _pass_at(sim, 1122.0) == []
    assert _pass_at(sim, 1000.0 + sim.cfg.resume_timeout_s - 2) == []


def test_start_outcomes_feed_the_estimates() -> None:
    sim, _ = _parked_pool(ON)
    launches = sim.starts[StartKind.LAUNCH]
    assert [o.ready for o in launches] == [True, True]  # the two launches of _parked_pool
    inst = sim.launch()
    sim.now += sim.cfg.provision_timeout_s
    sim.on_timeout(inst)
    assert [o.ready for o in launches] == [True, True, False]
    p_launch, p_resume, _ = sim.start_estimates()
    assert p_launch < p_resume  # 2 of 3 launches, 20 of 20 resumes came up
