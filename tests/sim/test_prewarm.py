"""Pre-warm in the simulator: the forecaster (domain/forecast.py) learns the daily cycle from the
arrival history and the pool has instances ready before the demand comes; a prebuilt image brings
the preload models with the image."""

from dataclasses import replace

from swarmstation.domain.states import InstanceState
from swarmstation.sim import config as C
from swarmstation.sim import engine as E
from swarmstation.sim import trace as T
from swarmstation.sim.pool import PoolSimulation


def _ready_by_minute(trace: T.Trace, cfg: C.SimConfig) -> tuple[dict[float, int], PoolSimulation]:
    sim = PoolSimulation(trace, "ours", cfg, seed=3)
    ready: dict[float, int] = {}
    sample = sim.on_sample

    def spy(x: object) -> None:
        ready[sim.now] = sum(i.state in (InstanceState.IDLE, InstanceState.BUSY) for i in sim.live.values())
        sample(x)

    sim.on_sample = spy  # type: ignore[method-assign]
    sim.run()
    return ready, sim


def test_instances_are_ready_before_the_daily_rise() -> None:
    # the large preset's jobs from noon (its daily cycle rises through the afternoon); before noon
    # nothing arrives, so only the forecast (7 days of history of the same cycle) can start anything
    full = T.generate("large", days=1, seed=3)
    jobs = [j for j in full.jobs if 12 * 3600 <= j.t < 12.5 * 3600]
    tr = T.Trace("from-noon", 3, 12.5 / 24, jobs, "large")
    off, _ = _ready_by_minute(tr, C.with_knobs(C.SimConfig(), prewarm=False))
    on, sim = _ready_by_minute(tr, C.with_knobs(C.SimConfig(), prewarm=True))
    before = 11 * 3600 + 59 * 60
    assert off[before] == 0
    assert on[before] >= 1
    assert sim.res.completed == sim.res.jobs
    # and none is kept once the trace is over (no job comes after its end)
    assert sim.forecast_instances() == 0


def test_prewarm_off_by_default_reads_no_forecast() -> None:
    tr = T.generate("prior", days=1, seed=3)
    sim = PoolSimulation(tr, "ours", C.SimConfig(), seed=3)
    assert sim.arrivals == [] and sim.forecast_instances() == 0


def test_prebuilt_image_brings_the_preload_models() -> None:
    full = T.generate("large", days=1, seed=3)
    jobs = [j for j in full.jobs if 18 * 3600 <= j.t < 18.1 * 3600]
    tr = T.Trace("peak", 3, 18.1 / 24, jobs, "large")
    plain = PoolSimulation(tr, "ours", C.SimConfig(), seed=3)
    baked = PoolSimulation(tr, "ours", C.with_knobs(C.SimConfig(), prebuilt_image=True), seed=3)
    plain.run()
    baked.run()
    preload_bytes = sum(size for _, size in baked.preload)
    assert preload_bytes > 0
    for p_inst, b_inst in zip(plain.instances.values(), baked.instances.values(), strict=False):
        assert b_inst.baked and not p_inst.baked
        if b_inst.running_at is None or p_inst.running_at is None:
            continue
        # the n-th launch draws the same rental: the image's pull also brings the models (GPU not
        # billed), the boot is halved; the plain instance downloads them on GPU time after booting
        pull_extra = (b_inst.running_at - b_inst.created) - (p_inst.running_at - p_inst.created)
        assert abs(pull_extra - preload_bytes / b_inst.bw) < 1e-6
    assert baked.res.completed == baked.res.jobs


def test_sleeping_pool_loop_changes_nothing_with_prewarm() -> None:
    tr = T.generate("large", days=0.4, seed=4)  # the quiet early hours: the loop sleeps and wakes
    cfg = C.with_knobs(C.SimConfig(), prewarm=True)
    fast = E.simulate(tr, "ours", cfg, seed=4)
    slow = E.simulate(tr, "ours", replace(cfg, skip_idle_passes=False), seed=4)
    assert (fast.cost, fast.waits, fast.launches) == (slow.cost, slow.waits, slow.launches)
