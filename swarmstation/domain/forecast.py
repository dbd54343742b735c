"""Demand forecasting for pre-warm: a history of job arrivals in, expected arrivals out. Pure.

Model. Arrivals are counted per ``bucket_seconds`` (an hour) and folded onto a cycle: the week
when the history spans at least a week (hour-of-week), else the day when it spans a day
(hour-of-day), else there is no profile and only the recent rate is used. A slot's rate is its
mean count over the cycles the history covers (a slot seen in two weeks is the mean of two
counts). The profile is then corrected by the recent level: the arrivals of the last
``recent_seconds`` against what the profile expected for them, smoothed by ``level_prior`` arrivals
and kept within ``[min_level, max_level]`` (a busier or quieter week than usual scales the
forecast, a single burst does not swing it far).

Pre-warm. :func:`prewarm_instances` turns the forecast into instances: the highest forecast rate
of any bucket in the next ``lead_seconds`` (so capacity is launched a lead time before a peak
starts, not when it has), times the expected run time, over what one instance serves at
``utilisation``; nothing when fewer than ``min_arrivals`` jobs are expected in the lead time.
``domain.scaling.plan_scaling`` keeps that many instances (bounded by the pool's ``max_instances``
and ``max_spend_per_hour``) when the pool's ``prewarm`` is on; the live pool loop
(``control/pools.py``) and the simulator (``sim/pool.py``) both call these functions.

Times are seconds on the caller's clock (epoch seconds live, virtual seconds in the simulator);
cycles are aligned to multiples of the cycle length on that clock (UTC weeks start on a Thursday
on the epoch clock: only the alignment, not the model, depends on it).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DAY",
    "WEEK",
    "ForecastConfig",
    "Profile",
    "build_profile",
    "expected_arrivals",
    "prewarm_instances",
    "profile_period",
]

DAY = 86400.0
WEEK = 7 * DAY


@dataclass(frozen=True)
class ForecastConfig:
    bucket_seconds: float = 3600.0
    history_seconds: float = 4 * WEEK  # arrivals older than this are ignored
    recent_seconds: float = 3600.0
    level_prior: float = 5.0  # pseudo-arrivals that damp the recent-level correction
    min_level: float = 0.5
    max_level: float = 2.0
    lead_seconds: float = 900.0  # how far ahead pre-warm looks (launch + boot + preload, and margin)
    utilisation: float = 0.6  # the busy share pre-warmed capacity is sized for (headroom for bursts)
    min_arrivals: float = 1.0  # pre-warm nothing unless at least this many jobs are expected in the lead time


def profile_period(history_span: float) -> float | None:
    """The cycle a history of ``history_span`` seconds supports: a week, a day, or none."""
    if history_span >= WEEK:
        return WEEK
    if history_span >= DAY:
        return DAY
    return None


def _count(arrivals: Sequence[float], start: float, end: float) -> int:
    return bisect.bisect_left(arrivals, end) - bisect.bisect_left(arrivals, start)


@dataclass(frozen=True)
class Profile:
    """Mean arrivals per bucket for each slot of a cycle (``period``; ``None``: no cycle, and
    ``recent_rate`` per second carries on). Built from whole past buckets only, so the profile
    built at any time within a bucket is the same: callers may rebuild it once per bucket."""

    bucket_seconds: float
    period: float | None
    rates: dict[int, float]
    built_for_bucket: int

    def integrate(self, start: float, end: float) -> float:
        """Expected arrivals in ``[start, end)`` by the profile alone (no level correction)."""
        if self.period is None or end <= start:
            return 0.0
        bucket = self.bucket_seconds
        per_cycle = max(1, round(self.period / bucket))
        total = 0.0
        k = math.floor(start / bucket)
        while k * bucket < end:
            overlap = min(end, (k + 1) * bucket) - max(start, k * bucket)
            total += self.rates.get(k % per_cycle, 0.0) * overlap / bucket
            k += 1
        return total


def build_profile(arrivals: Sequence[float], *, now: float, config: ForecastConfig | None = None) -> Profile:
    """The cycle profile of ``arrivals`` (sorted times) over the history before ``now``."""
    cfg = config or ForecastConfig()
    bucket = cfg.bucket_seconds
    last = math.floor(now / bucket + 1e-9)  # buckets before `last` are whole and in the past
    end = last * bucket
    lo = bisect.bisect_left(arrivals, end - cfg.history_seconds)
    hi = bisect.bisect_left(arrivals, end)
    if hi <= lo:
        return Profile(bucket, None, {}, last)
    first = max(math.ceil((end - cfg.history_seconds) / bucket - 1e-9), math.floor(arrivals[lo] / bucket))
    period = profile_period((last - first) * bucket)
    if period is None:
        return Profile(bucket, None, {}, last)
    per_cycle = max(1, round(period / bucket))
    counts: dict[int, int] = {}
    seen: dict[int, int] = {}
    for b in range(first, last):
        slot = b % per_cycle
        seen[slot] = seen.get(slot, 0) + 1
        counts[slot] = counts.get(slot, 0) + _count(arrivals, b * bucket, (b + 1) * bucket)
    return Profile(bucket, period, {slot: counts[slot] / n for slot, n in seen.items()}, last)


def expected_arrivals(
    arrivals: Sequence[float],
    *,
    now: float,
    start: float,
    end: float,
    config: ForecastConfig | None = None,
    profile: Profile | None = None,
) -> float:
    """Expected arrivals in ``[start, end)`` (``start >= now``), from ``arrivals`` (sorted times;
    those at or after ``now`` are ignored). ``profile``: :func:`build_profile`'s, when cached."""
    cfg = config or ForecastConfig()
    if end <= start:
        return 0.0
    prof = profile if profile is not None else build_profile(arrivals, now=now, config=cfg)
    recent_start = now - cfg.recent_seconds
    recent = _count(arrivals, recent_start, now)
    if prof.period is None:  # no cycle yet: the recent rate carries on
        return recent / cfg.recent_seconds * (end - start)
    level = (recent + cfg.level_prior) / (prof.integrate(recent_start, now) + cfg.level_prior)
    level = min(cfg.max_level, max(cfg.min_level, level))
    return prof.integrate(start, end) * level


def prewarm_instances(
    arrivals: Sequence[float],
    *,
    now: float,
    expected_job_seconds: float,
    slots_per_instance: int = 1,
    config: ForecastConfig | None = None,
    profile: Profile | None = None,
) -> int:
    """Instances to have ready for the busiest bucket of the next ``lead_seconds``: its forecast
    arrival rate x run time / (slots x utilisation), rounded up; 0 when fewer than ``min_arrivals``
    jobs are expected in the lead time (a quiet pool is not kept warm for a job that may not come)."""
    cfg = config or ForecastConfig()
    prof = profile if profile is not None else build_profile(arrivals, now=now, config=cfg)
    soon = expected_arrivals(
        arrivals, now=now, start=now, end=now + cfg.lead_seconds, config=cfg, profile=prof
    )
    if soon < cfg.min_arrivals or soon <= 0:
        return 0
    bucket = cfg.bucket_seconds
    peak_rate = 0.0
    for k in range(math.floor(now / bucket), math.floor((now + cfg.lead_seconds) / bucket) + 1):
        start, end = max(now, k * bucket), (k + 1) * bucket
        if end > start:
            n = expected_arrivals(arrivals, now=now, start=start, end=end, config=cfg, profile=prof)
            peak_rate = max(peak_rate, n / (end - start))
    busy = peak_rate * max(0.0, expected_job_seconds)
    capacity = max(1, slots_per_instance) * min(1.0, max(1e-3, cfg.utilisation))
    return math.ceil(busy / capacity - 1e-9) if busy > 0 else 0
