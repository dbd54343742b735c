"""A sweep over the pool's main knobs: the cheapest setting of ``ours`` that meets a p95-wait target.

Knobs: idle timeout (``PoolConfig.idle_minutes``), ``min_instances``, the scale-up rule
(``scale_up_queue_threshold`` and ``target_wait_seconds``), utilisation-based scale-down
(``target_utilisation``; 0 = off), parking (``max_parked``) and delay scheduling
(``RoutingConfig.max_delay_seconds``), forecast pre-warm (``prewarm``: 0 off, 1 on) and a
prebuilt image (``prebuilt_image``). Points run in parallel processes (``workers``).
Every point runs the ``ours`` policy over the same trace and
marketplace draws; the recommendation is the lowest cost whose p95 wait is at most the target
(ties: lower p95), or, when no point meets it, the lowest p95.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import Any

from swarmstation.domain.stats import percentile
from swarmstation.sim.config import SimConfig, with_knobs
from swarmstation.sim.engine import simulate
from swarmstation.sim.trace import Trace

DEFAULT_GRID: dict[str, Sequence[float]] = {
    "idle_minutes": (5.0, 10.0, 30.0),
    "min_instances": (0, 1),
    "scale_up_queue_threshold": (1, 3),
    "max_delay_seconds": (0.0, 30.0),
    "target_utilisation": (0.0, 0.4),
    "max_parked": (0, 2),
    "prewarm": (0, 1),
    "prebuilt_image": (0, 1),
}
QUICK_GRID: dict[str, Sequence[float]] = {
    "idle_minutes": (5.0, 10.0),
    "max_parked": (0, 2),
    "prewarm": (0, 1),
    "prebuilt_image": (0, 1),
}


@dataclass
class SweepPoint:
    knobs: dict[str, float]
    cost: float
    cost_per_1000: float
    wait_p95_s: float
    wait_p95_after_first_start_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.knobs,
            "cost_usd": round(self.cost, 4),
            "cost_per_1000_images": round(self.cost_per_1000, 4),
            "wait_p95_s": round(self.wait_p95_s, 2),
            "wait_p95_after_first_start_s": round(self.wait_p95_after_first_start_s, 2),
        }


@dataclass
class SweepResult:
    target_p95_s: float
    points: list[SweepPoint] = field(default_factory=list)
    best: SweepPoint | None = None
    met: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "target_p95_s": self.target_p95_s,
            "met": self.met,
            "recommended": self.best.as_dict() if self.best else None,
            "points": [p.as_dict() for p in self.points],
        }


KNOBS = (
    "idle_minutes",
    "min_instances",
    "target_wait_seconds",
    "max_delay_seconds",
    "scale_up_queue_threshold",
    "target_utilisation",
    "max_parked",
    "prewarm",
    "prebuilt_image",
    "prewarm_min_arrivals",
    "prewarm_utilisation",
    "prewarm_lead_seconds",
)


def apply(config: SimConfig, knobs: dict[str, float]) -> SimConfig:
    forecast = config.forecast
    if "prewarm_min_arrivals" in knobs:
        forecast = replace(forecast, min_arrivals=float(knobs["prewarm_min_arrivals"]))
    if "prewarm_utilisation" in knobs:
        forecast = replace(forecast, utilisation=float(knobs["prewarm_utilisation"]))
    if "prewarm_lead_seconds" in knobs:
        forecast = replace(forecast, lead_seconds=float(knobs["prewarm_lead_seconds"]))
    config = replace(config, forecast=forecast)
    return with_knobs(
        config,
        idle_minutes=knobs.get("idle_minutes"),
        min_instances=int(knobs["min_instances"]) if "min_instances" in knobs else None,
        target_wait_seconds=knobs.get("target_wait_seconds"),
        max_delay_seconds=knobs.get("max_delay_seconds"),
        scale_up_queue_threshold=int(knobs["scale_up_queue_threshold"])
        if "scale_up_queue_threshold" in knobs
        else None,
        target_utilisation=knobs.get("target_utilisation"),
        max_parked=int(knobs["max_parked"]) if "max_parked" in knobs else None,
        prewarm=bool(knobs["prewarm"]) if "prewarm" in knobs else None,
        prebuilt_image=bool(knobs["prebuilt_image"]) if "prebuilt_image" in knobs else None,
    )


def _run_point(runs: Sequence[tuple[Trace, int]], base: SimConfig, knobs: dict[str, float]) -> SweepPoint:
    """``ours`` at one setting on every (trace, seed) of ``runs``: the mean of each figure."""
    points = []
    for trace, seed in runs:
        r = simulate(trace, "ours", apply(base, knobs), seed=seed)
        points.append(
            (
                r.cost,
                1000 * r.cost / max(1, len(trace.jobs)),
                percentile(r.waits, 0.95),
                percentile(r.waits_after_first_start, 0.95),
            )
        )
    n = len(points)
    return SweepPoint(knobs, *(sum(p[i] for p in points) / n for i in range(4)))


def sweep(
    trace: Trace,
    *,
    target_p95_s: float = 60.0,
    grid: dict[str, Sequence[float]] | None = None,
    config: SimConfig | None = None,
    seed: int = 0,
    after_first_start: bool = True,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    runs: Sequence[tuple[Trace, int]] | None = None,
) -> SweepResult:
    """Run ``ours`` at every grid point. ``after_first_start``: judge p95 without the jobs that
    arrived before the first instance was ever ready (the first start from zero). ``runs``: tune on
    several (trace, seed) pairs at once (each point's figures are their means); default ``trace``
    with ``seed``."""
    runs = list(runs) if runs else [(trace, seed)]
    grid = grid or DEFAULT_GRID
    base = config or SimConfig()
    names = list(grid)
    combos = [
        dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[n] for n in names))
    ]
    result = SweepResult(target_p95_s)
    points: list[SweepPoint | None] = [None] * len(combos)
    workers = max(1, min(workers or os.cpu_count() or 1, len(combos)))
    if workers == 1:
        for i, knobs in enumerate(combos):
            points[i] = _run_point(runs, base, knobs)
            if progress is not None:
                progress(i + 1, len(combos))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
            futures = {pool.submit(_run_point, runs, base, knobs): i for i, knobs in enumerate(combos)}
            for done, fut in enumerate(as_completed(futures), start=1):
                points[futures[fut]] = fut.result()
                if progress is not None:
                    progress(done, len(combos))
    result.points = [p for p in points if p is not None]

    def p95(p: SweepPoint) -> float:
        return p.wait_p95_after_first_start_s if after_first_start else p.wait_p95_s

    ok = [p for p in result.points if p95(p) <= target_p95_s]
    if ok:
        result.best = min(ok, key=lambda p: (p.cost, p95(p)))
        result.met = True
    elif result.points:
        result.best = min(result.points, key=lambda p: (p95(p), p.cost))
    return result
