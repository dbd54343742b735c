"""Lower bounds on what any policy could pay for a trace (``oracle``, ``clairvoyant``): the
floor that the pool's results are measured against."""

from __future__ import annotations

import math

from swarmstation.sim.config import SimConfig
from swarmstation.sim.result import PolicyResult
from swarmstation.sim.trace import Trace


def simulate_oracle(trace: Trace, config: SimConfig) -> PolicyResult:
    """The lower bound: every job starts on arrival and only its run seconds are paid, at the
    cheapest marketplace rate."""
    run = sum(j.run_seconds for j in trace.jobs)
    rate = config.cheapest_per_hour / 3600.0
    res = PolicyResult("oracle", len(trace.jobs), len(trace.jobs), run * rate, [0.0] * len(trace.jobs))
    res.run_seconds = run
    res.instance_seconds = run
    res.waits_after_first_start = list(res.waits)
    res.sim_seconds = trace.duration
    return res


def simulate_clairvoyant(trace: Trace, config: SimConfig) -> PolicyResult:
    """A lower bound for any pool of whole GPUs: with hindsight, rent for each window of
    ``clairvoyant_window_s`` exactly as many GPUs as the run seconds that start in it need
    (``ceil(run seconds / window)``), at the cheapest rate, ready at once, never waiting. Real pools
    pay more (provisioning, downloads, headroom for bursts); the gap between this and ``oracle`` is
    what renting whole GPUs for minutes at a time costs on this trace, whatever the policy."""
    window = config.clairvoyant_window_s
    per_window: dict[int, float] = {}
    for j in trace.jobs:
        k = int(j.t // window)
        per_window[k] = per_window.get(k, 0.0) + j.run_seconds
    gpu_seconds = sum(math.ceil(v / window - 1e-9) * window for v in per_window.values())
    run = sum(j.run_seconds for j in trace.jobs)
    rate = config.cheapest_per_hour / 3600.0
    res = PolicyResult(
        "clairvoyant", len(trace.jobs), len(trace.jobs), gpu_seconds * rate, [0.0] * len(trace.jobs)
    )
    res.run_seconds = run
    res.instance_seconds = gpu_seconds
    res.waits_after_first_start = list(res.waits)
    res.sim_seconds = trace.duration
    res.notes = f"bound: whole GPUs per {window:g} s window, with hindsight, cheapest rate"
    return res
