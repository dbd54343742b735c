"""A discrete-event simulator of a GPU pool on a virtual clock, driving the real domain policies.

The pool policies call the same pure functions as the control plane: routing
(``domain.routing.plan_routes``, ``route_ignoring_caches``, ``plan_prefetch``), scaling
(``domain.scaling.plan_scaling``), cache eviction (``domain.cache.plan_eviction``), billing
(``domain.pricing.bill``) and the instance lifecycle (``domain.states.INSTANCE``). Virtual
seconds are mapped to datetimes from :data:`sim.config.EPOCH` where a policy takes datetimes.

The parts: ``sim/market.py`` (the marketplace and the managed service, and what a launch draws),
``sim/pool.py`` (the event-driven pool), ``sim/managed.py`` (the managed service in closed form),
``sim/bounds.py`` (the lower bounds), ``sim/config.py`` (what a run runs with), ``sim/result.py``
(what it produced); this module picks the one a policy needs.

Policies: ``ours``, ``ours-no-cache-affinity``, ``no-warm-pool`` (event-driven,
:class:`sim.pool.PoolSimulation`), ``managed`` (closed form, :func:`sim.managed.simulate_managed`)
and the references: ``oracle`` (run seconds only, a lower bound, :func:`sim.bounds.simulate_oracle`)
and ``blocks-30s`` ... ``blocks-300s`` (whole GPUs rented per aligned window with hindsight, waits
not modelled, :func:`sim.bounds.simulate_clairvoyant`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from swarmstation.sim.bounds import bound_name, simulate_clairvoyant, simulate_oracle
from swarmstation.sim.config import SimConfig
from swarmstation.sim.managed import simulate_managed
from swarmstation.sim.pool import PoolSimulation, Progress
from swarmstation.sim.result import PolicyResult
from swarmstation.sim.trace import Trace

RUNNABLE = ("ours", "ours-no-cache-affinity", "no-warm-pool", "managed")
BOUND_WINDOWS_S = (30.0, 60.0, 120.0, 300.0)
BOUNDS = ("oracle", *(bound_name(w) for w in BOUND_WINDOWS_S))  # references, not policies one could run
POLICIES = (*RUNNABLE, *BOUNDS)


def simulate(
    trace: Trace,
    policy: str,
    config: SimConfig | None = None,
    *,
    seed: int = 0,
    progress: Progress | None = None,
) -> PolicyResult:
    config = config or SimConfig()
    if policy == "managed":
        return simulate_managed(trace, config, seed=seed)
    if policy == "oracle":
        return simulate_oracle(trace, config)
    if policy.startswith("blocks-") and policy.endswith("s"):
        return simulate_clairvoyant(trace, config, float(policy[len("blocks-") : -1]))
    return PoolSimulation(trace, policy, config, seed=seed, progress=progress).run()


def simulate_all(
    trace: Trace,
    config: SimConfig | None = None,
    *,
    policies: Sequence[str] = POLICIES,
    seed: int = 0,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, PolicyResult]:
    """Every policy over the same trace, with the same marketplace draws."""
    config = config or SimConfig()
    out: dict[str, PolicyResult] = {}
    for name in policies:
        cb: Progress | None = None
        if progress is not None:
            report = progress

            def cb(frac: float, _name: str = name, _report: Callable[[str, float], None] = report) -> None:
                _report(_name, frac)

        out[name] = simulate(trace, name, config, seed=seed, progress=cb)
        if progress is not None:
            progress(name, 1.0)
    return out
