"""Summary statistics over measured values (benchmarks, the simulator's waits): one percentile."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["percentile"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 < q < 1, in whole percent: 0.5, 0.95, 0.99), interpolated between the
    two nearest values (``statistics.quantiles``' inclusive method, numpy's default); 0.0 for no
    values."""
    percent = round(q * 100)
    if not 1 <= percent <= 99 or abs(q * 100 - percent) > 1e-9:
        raise ValueError(f"q must be a whole percent between 0.01 and 0.99, got {q}")
    if len(values) < 2:  # quantiles needs two points
        return float(values[0]) if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]
