"""Information parity: the simulated router knows what the live one knows and no more."""

import dataclasses
import typing

import pytest

from swarmstation.control import routing as live_routing
from swarmstation.domain import estimates
from swarmstation.domain.routing import Assign, RoutableInstance, RoutableJob
from swarmstation.sim import config as C
from swarmstation.sim import market as M
from swarmstation.sim import trace as T
from swarmstation.sim.pool import _LOST, PoolSimulation

# Everything routing may know about an instance. A new field is a new fact given to routing: the
# live control plane (control/routing.observe_instance) must fill it from the database too.
OBSERVED = {
    "instance_id",
    "pool",
    "capacity",
    "running_started_at",
    "reported_models",
    "loaded_checkpoint",
    "download_bytes_per_second",
}


def test_both_control_planes_build_the_same_snapshot_type() -> None:
    assert {f.name for f in dataclasses.fields(estimates.InstanceObservation)} == OBSERVED
    live = typing.get_type_hints(live_routing.observe_instance)["return"]
    sim = typing.get_type_hints(PoolSimulation.observe)["return"]
    assert live is sim is estimates.InstanceObservation


def test_the_simulated_router_sees_only_observations() -> None:
    full = T.generate("large", days=1, seed=2)  # an hour of the peak: busy instances, queued jobs
    jobs = [dataclasses.replace(j, t=j.t - 18 * 3600) for j in full.jobs if 18 * 3600 <= j.t < 19 * 3600]
    tr = T.Trace("peak-hour", 2, 1 / 24, jobs, "large")
    market = M.Marketplace(bandwidth_sigma=0.8)  # instances differ: their truth would show
    sim = PoolSimulation(tr, "ours", C.SimConfig(market=market), seed=2)
    seen: list[RoutableInstance] = []
    true_ends: list[tuple[float, float]] = []  # (what routing expected, the simulator's truth)
    route = sim.route

    def spy(jobs: list[RoutableJob], views: list[RoutableInstance]) -> list[Assign]:
        for v in views:
            inst = sim.instances[v.instance_id]
            obs = sim.observe(inst)
            # the view is exactly the live conversion of the observation...
            assert v == estimates.routable_instance(
                obs, expected_run_seconds=sim.expected_s, checkpoint_load_seconds=sim.cfg.checkpoint_load_s
            )
            # ...and the observation holds only what a worker would have reported by now
            assert obs.download_bytes_per_second == inst.measured_bps
            hb = sim.last_heartbeat(inst)
            assert hb <= sim.now
            assert all(inst.cache[k][3] <= hb for k in obs.reported_models)
            if inst.job is not None:
                assert obs.running_started_at == (inst.job.assigned,)
                if v.busy_until is not None and inst.busy_until is not None:
                    true_ends.append((v.busy_until, inst.busy_until))
        for j in jobs:
            assert j.expected_run_seconds == sim.expected_s  # the pool's median, not the job's truth
        seen.extend(views)
        return route(jobs, views)

    sim.route = spy  # type: ignore[method-assign]
    result = sim.run()
    assert result.completed == result.jobs and seen
    # routing worked from estimates, not truths: unmeasured rates (0: routing's default applies),
    # measured ones that differ from the drawn bandwidth, busy ends estimated from the reported start
    assert any(v.download_bytes_per_second == 0 for v in seen)
    measured = [v for v in seen if v.download_bytes_per_second > 0]
    assert measured and any(v.download_bytes_per_second != sim.instances[v.instance_id].bw for v in measured)
    assert true_ends and sum(abs(e - t) > 1.0 for e, t in true_ends) > len(true_ends) / 10


def test_a_dead_instance_is_noticed_after_the_heartbeat_timeout() -> None:
    sim = PoolSimulation(T.generate("prior", days=1, seed=3), "ours", C.SimConfig(), seed=3)
    inst = sim.launch()
    sim.now = 100.0
    sim.on_ready(inst)
    job = sim.jobs[0]
    sim.queue[job.tj.job_id] = job
    sim.start_job(job, inst)
    sim.now = 112.0  # heartbeats at 100, 105, 110: the last one 2 s ago
    sim.events.clear()
    sim.on_die(inst)
    (lost,) = [e for e in sim.events if e[2] == _LOST]
    assert lost[0] == pytest.approx(110.0 + sim.cfg.heartbeat_timeout_s, abs=sim.cfg.scheduler_interval_s)
    assert lost[0] >= 110.0 + sim.cfg.heartbeat_timeout_s
    assert job.tj.job_id not in sim.queue  # not requeued before it is noticed
    sim.now = lost[0]
    sim.on_lost(inst)
    assert sim.queue[job.tj.job_id].rj.queued_at == lost[0]  # requeued at the back, as requeue_job does
    assert sim.res.requeued == 1


def test_the_simulator_runs_with_the_live_defaults() -> None:
    from swarmstation.config import Settings

    cfg = C.SimConfig()
    defaults = {name: f.default for name, f in Settings.model_fields.items()}
    assert cfg.provision_timeout_s == defaults["provisioning_timeout_seconds"]
    assert cfg.resume_timeout_s == defaults["resume_timeout_seconds"]
    assert cfg.heartbeat_timeout_s == defaults["heartbeat_timeout_seconds"]
    assert cfg.checkpoint_load_s == defaults["checkpoint_load_seconds"]
    assert cfg.scheduler_interval_s == defaults["scheduler_interval_seconds"]
    assert cfg.pool_interval_s == defaults["control_interval_seconds"]
    assert cfg.routing.max_delay_seconds == defaults["routing_max_delay_seconds"]
    assert cfg.prefetch_demand_jobs == estimates.PREFETCH_DEMAND_JOBS
    assert cfg.run_window_jobs == estimates.RUN_WINDOW_JOBS
