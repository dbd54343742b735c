"""The ``managed`` policy: a per-second managed service (ComfyUI Deploy's pricing), in closed
form, as the alternative to running our own pool."""

from __future__ import annotations

import math
import random

from swarmstation.sim.config import SimConfig
from swarmstation.sim.result import PolicyResult
from swarmstation.sim.trace import Trace


def simulate_managed(trace: Trace, config: SimConfig, *, seed: int = 0) -> PolicyResult:
    """A per-second managed service: containers start cold after ``keep_warm_s`` idle, are billed
    for cold start + run + kept-warm idle time at the GPU's per-second price, plus the platform fee
    prorated over the trace's duration. Concurrency is unbounded (a new container per waiting job)."""
    ms = config.managed
    r = random.Random(f"{seed}:managed")
    res = PolicyResult("managed", len(trace.jobs), 0, 0.0, [])
    free: list[float] = []  # free_at of containers that may still be warm
    billed = 0.0
    first_ready: float | None = None
    waits: list[tuple[float, float]] = []
    for tj in trace.jobs:
        t = tj.t
        warm = [f for f in free if f <= t and t - f <= ms.keep_warm_s]
        expired = [f for f in free if f <= t and t - f > ms.keep_warm_s]
        billed += ms.keep_warm_s * len(expired)
        free = [f for f in free if not (f <= t and t - f > ms.keep_warm_s)]
        run = tj.run_seconds * ms.run_speed_factor
        if warm:
            f = max(warm)
            free.remove(f)
            billed += t - f
            start = t
        else:
            cold = r.lognormvariate(math.log(ms.cold_start_median_s), ms.cold_start_sigma)
            res.cold_starts += 1
            billed += cold
            start = t + cold
            if first_ready is None:
                first_ready = start
        billed += run
        res.run_seconds += run
        free.append(start + run)
        waits.append((t, start - t))
    billed += ms.keep_warm_s * len(free)
    duration = trace.duration
    res.instance_seconds = billed
    res.cost = billed * ms.gpu_price_per_second + ms.platform_fee_per_month * duration / (30 * 86400.0)
    res.completed = len(trace.jobs)
    res.waits = [w for _, w in waits]
    res.waits_after_first_start = [w for t, w in waits if first_ready is not None and t >= first_ready]
    res.first_ready_at = first_ready
    res.sim_seconds = duration
    res.notes = "closed form; ComfyUI Deploy pricing (seed-roadmap.md §2), assumed keep-warm and cold start"
    return res
