"""What the pool's results are measured against: ``oracle`` (a lower bound on any policy's
cost: run seconds only) and ``blocks-<W>s`` (whole GPUs in aligned blocks of W seconds with
hindsight: a reference, not a bound on a real pool; see :func:`simulate_clairvoyant`)."""

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


def simulate_clairvoyant(trace: Trace, config: SimConfig, window_s: float) -> PolicyResult:
    """Whole GPUs rented in fixed blocks, with hindsight: for each aligned window of ``window_s``
    seconds, exactly ``ceil(run seconds of the jobs arriving in it / window_s)`` GPUs, at the
    cheapest rate, ready at once. Exactly what it assumes, and what it is not:

    * It is the cost of packing each window's run seconds perfectly onto whole GPUs held for the
      whole window. It is a lower bound only for policies that hold every GPU for aligned blocks
      of ``window_s``; a real pool holds GPUs for spans of any length (billed per second), so the
      bound moves with the window and is no bound on a real pool at small windows.
    * Waits are not modelled: jobs of a window that share a GPU would queue, but are recorded
      with a wait of 0 (ten 10-second jobs arriving together: one GPU for a 300 s window, 0 s wait).

    It is reported at several windows (``SimConfig.bound_windows_s``) for that reason."""
    per_window: dict[int, float] = {}
    for j in trace.jobs:
        k = int(j.t // window_s)
        per_window[k] = per_window.get(k, 0.0) + j.run_seconds
    gpu_seconds = sum(math.ceil(v / window_s - 1e-9) * window_s for v in per_window.values())
    run = sum(j.run_seconds for j in trace.jobs)
    rate = config.cheapest_per_hour / 3600.0
    name = bound_name(window_s)
    res = PolicyResult(name, len(trace.jobs), len(trace.jobs), gpu_seconds * rate, [0.0] * len(trace.jobs))
    res.run_seconds = run
    res.instance_seconds = gpu_seconds
    res.waits_after_first_start = list(res.waits)
    res.sim_seconds = trace.duration
    res.notes = f"whole GPUs per aligned {window_s:g} s block, hindsight, cheapest rate; waits NOT modelled"
    return res


def bound_name(window_s: float) -> str:
    return f"blocks-{window_s:g}s"
