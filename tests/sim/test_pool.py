"""The simulated pool moves its instances through the control plane's own table."""

import pytest

from swarmstation.domain.states import IllegalTransition, InstanceState, InstanceTrigger
from swarmstation.sim import config as C
from swarmstation.sim import market as M
from swarmstation.sim import trace as T
from swarmstation.sim.pool import PoolSimulation


def _simulation() -> PoolSimulation:
    return PoolSimulation(T.generate("prior", days=1, seed=3), "ours", C.SimConfig(), seed=3)


def test_a_busy_instance_cannot_be_destroyed_without_being_found_unhealthy() -> None:
    sim = _simulation()
    inst = sim.launch()
    sim.on_ready(inst)
    assert inst.state == InstanceState.IDLE
    job = sim.jobs[0]
    sim.queue[job.tj.job_id] = job
    sim.start_job(job, inst)
    assert inst.state == InstanceState.BUSY
    with pytest.raises(IllegalTransition):
        sim.terminate(inst)  # BUSY -> TERMINATED is not in the table
    assert inst.state == InstanceState.BUSY and inst.ended is None
    sim.terminate(inst, InstanceTrigger.INSTANCE_LOST)  # what on_die does
    assert inst.state == InstanceState.TERMINATED and inst.ended == sim.now


def test_a_parked_instance_resumes_through_provisioning() -> None:
    sim = _simulation()
    inst = sim.launch()
    sim.on_ready(inst)
    sim.park(inst)
    assert inst.state == InstanceState.STOPPED
    with pytest.raises(IllegalTransition):
        sim.park(inst)  # only an idle instance parks
    sim.resume(inst)
    assert inst.state == InstanceState.PROVISIONING


def test_deaths_parks_and_resumes_all_follow_the_table() -> None:
    # a run with instances that die, park, resume and fail to resume: any move outside the
    # table would raise IllegalTransition
    cfg = C.with_knobs(C.SimConfig(market=M.Marketplace(mean_lifetime_hours=2.0)), max_parked=4)
    result = PoolSimulation(T.generate("prior", days=1, seed=2), "ours", cfg, seed=2).run()
    assert result.deaths > 0 and result.parks > 0 and result.resumes > 0
    assert result.completed == result.jobs
