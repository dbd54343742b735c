"""The baselines are fair: the managed service queues as per-second services do, the
fresh-instance-per-job baseline downloads only its job's models, every figure is a parameter."""

from dataclasses import replace

import pytest

from swarmstation.domain.routing import ModelNeed
from swarmstation.sim import config as C
from swarmstation.sim import engine as E
from swarmstation.sim import market as M
from swarmstation.sim import trace as T

X = ModelNeed("checkpoints/x.safetensors", 3_000_000_000)
Y = ModelNeed("checkpoints/y.safetensors", 3_000_000_000)
PRICE = 0.000337


def _config(**managed: object) -> C.SimConfig:
    ms = replace(
        M.ManagedService(
            cold_start_median_s=45.0, cold_start_sigma=0.0, keep_warm_s=60.0, platform_fee_per_month=0.0
        ),
        **managed,
    )
    market = replace(
        M.Marketplace(),
        price_spread=(1.0, 1.0),
        offers_per_launch=1,
        pull_median_s=61.0,
        boot_median_s=40.0,
        provision_sigma=0.0,
        never_running_prob=0.0,
        never_ready_prob=0.0,
        mean_lifetime_hours=1e12,
        bandwidth_sigma=0.0,
        load_spread=(1.0, 1.0),
    )
    return C.SimConfig(market=market, managed=ms)


def _trace(*jobs: tuple[float, float, ModelNeed]) -> T.Trace:
    return T.Trace(
        "t", 0, 0.0, [T.TraceJob(f"j{i}", t, "tool", run, (m,), m.key) for i, (t, run, m) in enumerate(jobs)]
    )


def test_managed_job_taken_by_the_container_that_frees_first() -> None:
    # j0 cold-starts c1 (ready 45, runs to 55); j1 at 50 finds none idle and starts c2 (ready 95),
    # but c1 frees at 55 and takes it: a 5 s wait, not the 45 s cold start
    r = E.simulate(_trace((0.0, 10.0, X), (50.0, 10.0, X)), "managed", _config())
    assert r.waits == [pytest.approx(45.0), pytest.approx(5.0)]
    assert r.cold_starts == 2
    # c1 billed 0..65+60, c2 (started for j1, then idle) 50..95+60
    assert r.cost == pytest.approx((125 + 105) * PRICE)


def test_managed_concurrency_limit_queues_jobs() -> None:
    tr = _trace((0.0, 10.0, X), (0.0, 10.0, X), (0.0, 10.0, X))
    unbounded = E.simulate(tr, "managed", _config())
    assert unbounded.waits == [pytest.approx(45.0)] * 3 and unbounded.cold_starts == 3
    one = E.simulate(tr, "managed", _config(max_concurrency=1))
    assert one.waits == [pytest.approx(45.0), pytest.approx(55.0), pytest.approx(65.0)]
    assert one.cold_starts == 1
    assert one.cost == pytest.approx((75 + 60) * PRICE)


def test_managed_checkpoint_switch_and_gpu_speed_are_paid() -> None:
    tr = _trace((0.0, 10.0, X), (50.0, 10.0, Y))
    switch = E.simulate(tr, "managed", _config(max_concurrency=1))
    # c1 frees at 55 and loads y (2 s + 3 GB at 1.5 GB/s) before running j1
    assert switch.waits == [pytest.approx(45.0), pytest.approx(5.0 + 4.0)]
    slow = E.simulate(tr, "managed", _config(max_concurrency=1, run_speed_factor=2.0))
    assert slow.waits == [pytest.approx(45.0), pytest.approx(15.0 + 4.0)]
    assert slow.run_seconds == pytest.approx(40.0)


def test_managed_cold_start_and_keep_warm_are_parameters() -> None:
    tr = _trace((0.0, 10.0, X), (100.0, 10.0, X))
    short = E.simulate(tr, "managed", _config(keep_warm_s=30.0))  # c1 expired at 85: a second cold start
    long = E.simulate(tr, "managed", _config(keep_warm_s=120.0))  # c1 still warm at 100
    assert short.waits[1] == pytest.approx(45.0) and long.waits[1] == pytest.approx(0.0)
    slower = E.simulate(tr, "managed", _config(keep_warm_s=120.0, cold_start_median_s=90.0))
    assert slower.waits[0] == pytest.approx(90.0)


def test_fresh_instance_per_job_downloads_only_its_jobs_models() -> None:
    tr = _trace((0.0, 10.0, X), (0.0, 10.0, Y))
    fresh = E.simulate(tr, "no-warm-pool", _config())
    assert fresh.downloaded_bytes == X.size + Y.size  # no pool preload list per job
    assert fresh.launches == 2 and fresh.completed == 2
    # each at the full bandwidth: ready at 101, 3 GB at 100 MB/s, no load before (nothing loaded)...
    start = 101 + 30 + 2 + 2
    assert fresh.waits == [pytest.approx(start)] * 2


def test_output_upload_keeps_the_instance_busy() -> None:
    tr = _trace((0.0, 10.0, X), (0.0, 10.0, X))
    cfg = _config()
    cfg = replace(cfg, pool=replace(cfg.pool, max_instances=1))
    small = E.simulate(tr, "ours", cfg)
    big = E.simulate(tr, "ours", replace(cfg, market=replace(cfg.market, output_bytes=200_000_000)))
    # the second job waits for the first's upload: 200 MB at 100 MB/s
    assert big.waits[1] - small.waits[1] == pytest.approx(2.0 - 0.015, abs=0.6)


def test_every_baseline_sees_the_same_trace() -> None:
    tr = T.generate("prior", days=1, seed=3)
    results = E.simulate_all(tr, seed=3, policies=E.POLICIES)
    assert {r.jobs for r in results.values()} == {len(tr.jobs)}
    assert all(r.completed == r.jobs for r in results.values())
