"""Benchmark of cache-aware routing: one planning pass over 1,000 instances and 10,000 queued jobs.

``swarmstation bench-routing [--free-fraction 0.1] [--passes 20] ...`` (or ``run()`` from
Python) prints the figures as JSON.

The snapshot is synthetic and seeded. A tenth of the models are checkpoints (2-24 GB, log-uniform),
the rest LoRAs (10-400 MB); popularity is Zipf (exponent 1.1) within each kind. Each instance holds
1-4 checkpoints and 10-60 LoRAs drawn by popularity, has the first checkpoint loaded, a download
rate of 30-400 MB/s and a checkpoint load time of 3-15 s (log-uniform / uniform). About 15% of the
instances (``free_fraction``) have one free slot; the others are busy for another 1-90 s. Each
queued job needs one checkpoint and 0-3 LoRAs drawn by popularity, runs 3-40 s and was queued
0-240 s ago (younger than the default aging of 300 s, so delay scheduling is in play for every job:
the costly case, since deferred jobs are costed too).

Every pass plans the same snapshot from scratch, as the scheduler does each time it runs; the
figures are wall-clock (``time.perf_counter``) on the calling thread.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from swarmstation.domain.routing import (
    Assign,
    ModelNeed,
    RoutableInstance,
    RoutableJob,
    RoutingConfig,
    plan_routes,
    route_ignoring_caches,
)

__all__ = ["build_snapshot", "run"]

_NOW = 1_000_000.0
_POOL = "default"


def _zipf_cum_weights(n: int, exponent: float = 1.1) -> list[float]:
    total = 0.0
    cum: list[float] = []
    for rank in range(1, n + 1):
        total += 1.0 / rank**exponent
        cum.append(total)
    return cum


def _draw(rng: random.Random, keys: list[str], cum: list[float], count: int) -> list[str]:
    """``count`` distinct keys drawn by popularity (at most ``len(keys)``)."""
    count = min(count, len(keys))
    chosen: dict[str, None] = {}
    while len(chosen) < count:
        chosen[rng.choices(keys, cum_weights=cum, k=1)[0]] = None
    return list(chosen)


def build_snapshot(
    instances: int = 1000, jobs: int = 10_000, models: int = 300, seed: int = 0, free_fraction: float = 0.15
) -> tuple[list[RoutableJob], list[RoutableInstance], float]:
    """The synthetic queue, instances and ``now`` described in the module docstring."""
    rng = random.Random(seed)
    n_ckpt = max(1, models // 10)
    n_lora = max(1, models - n_ckpt)
    ckpts = [f"checkpoints/ckpt-{i:03d}.safetensors" for i in range(n_ckpt)]
    loras = [f"loras/lora-{i:04d}.safetensors" for i in range(n_lora)]
    size = {key: int(2e9 * 12 ** rng.random()) for key in ckpts}
    size.update({key: int(10e6 * 40 ** rng.random()) for key in loras})
    ckpt_cum = _zipf_cum_weights(n_ckpt)
    lora_cum = _zipf_cum_weights(n_lora)

    fleet: list[RoutableInstance] = []
    for n in range(instances):
        held_ckpts = _draw(rng, ckpts, ckpt_cum, rng.randint(1, 4))
        held = frozenset(held_ckpts + _draw(rng, loras, lora_cum, rng.randint(10, 60)))
        free = rng.random() < free_fraction
        fleet.append(
            RoutableInstance(
                instance_id=f"inst-{n:05d}",
                pool=_POOL,
                free_slots=1 if free else 0,
                busy_until=None if free else _NOW + rng.uniform(1.0, 90.0),
                cached=held,
                loaded_checkpoint=held_ckpts[0],
                download_bytes_per_second=30e6 * (400 / 30) ** rng.random(),
                checkpoint_load_seconds=rng.uniform(3.0, 15.0),
            )
        )
    queue: list[RoutableJob] = []
    for n in range(jobs):
        ckpt = _draw(rng, ckpts, ckpt_cum, 1)[0]
        keys = [ckpt, *_draw(rng, loras, lora_cum, rng.randint(0, 3))]
        queue.append(
            RoutableJob(
                job_id=f"job-{n:06d}",
                pool=_POOL,
                queued_at=_NOW - rng.uniform(0.0, 240.0),
                required=tuple(ModelNeed(key, size[key]) for key in keys),
                checkpoint=ckpt,
                expected_run_seconds=rng.uniform(3.0, 40.0),
            )
        )
    queue.sort(key=lambda j: (j.queued_at, j.job_id))  # the order the control plane reads the queue in
    return queue, fleet, _NOW


def _quality(
    actions: list[Assign], queue: list[RoutableJob], fleet: list[RoutableInstance]
) -> dict[str, float | int]:
    jobs = {j.job_id: j for j in queue}
    insts = {i.instance_id: i for i in fleet}
    downloaded = 0
    warm = 0
    for a in actions:
        inst = insts[a.instance_id]
        missing = sum(m.size for m in jobs[a.job_id].required if m.key not in inst.cached)
        downloaded += missing
        warm += missing == 0
    starts = [a.expected_start_seconds for a in actions]
    return {
        "assignments": len(actions),
        "mean_expected_start_s": round(statistics.fmean(starts), 2) if starts else 0.0,
        "no_download_assignments": warm,
        "download_gb": round(downloaded / 1e9, 2),
    }


def _time_passes(
    fn: Any, queue: list[RoutableJob], fleet: list[RoutableInstance], passes: int
) -> list[float]:
    times: list[float] = []
    for _ in range(passes):
        t0 = time.perf_counter()
        fn(queue, fleet, now=_NOW, config=RoutingConfig())
        times.append((time.perf_counter() - t0) * 1000)
    return times


def run(
    instances: int = 1000,
    jobs: int = 10_000,
    models: int = 300,
    seed: int = 0,
    passes: int = 20,
    free_fraction: float = 0.15,
) -> dict[str, Any]:
    """Time ``passes`` planning passes of :func:`plan_routes` (after one warm-up) on one snapshot in
    which ``free_fraction`` of the instances have a free slot.

    Returns ``{"instances", "free_slots", "jobs", "models", "passes", "assignments_per_pass",
    "pass_ms": {"p50", "mean", "max"}, "us_per_assignment": {"p50", "mean"}, "target_us_per_assignment",
    "cache_aware": {...}, "cache_blind": {... "pass_ms"}}``; ``cache_aware`` / ``cache_blind`` compare
    the plans of :func:`plan_routes` and :func:`route_ignoring_caches` (mean expected start,
    assignments that download nothing, GB to download).
    """
    queue, fleet, now = build_snapshot(instances, jobs, models, seed, free_fraction)
    config = RoutingConfig()
    aware = plan_routes(queue, fleet, now=now, config=config)  # warm-up, and the plan to describe
    blind = route_ignoring_caches(queue, fleet, now=now, config=config)
    times = _time_passes(plan_routes, queue, fleet, passes)
    blind_times = _time_passes(route_ignoring_caches, queue, fleet, max(1, passes // 4))
    per_assign = [t * 1000 / max(1, len(aware)) for t in times]
    return {
        "instances": instances,
        "free_slots": sum(i.free_slots for i in fleet),
        "jobs": jobs,
        "models": models,
        "passes": passes,
        "assignments_per_pass": len(aware),
        "pass_ms": {
            "p50": round(statistics.median(times), 3),
            "mean": round(statistics.fmean(times), 3),
            "max": round(max(times), 3),
        },
        "us_per_assignment": {
            "p50": round(statistics.median(per_assign), 2),
            "mean": round(statistics.fmean(per_assign), 2),
        },
        "target_us_per_assignment": 100,
        "cache_aware": _quality(aware, queue, fleet),
        "cache_blind": {
            **_quality(blind, queue, fleet),
            "pass_ms": round(statistics.median(blind_times), 3),
        },
    }
