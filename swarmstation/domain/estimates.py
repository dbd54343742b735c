"""What the control plane expects, from what it has observed: the estimators that routing, scaling
and prefetch are fed with. Pure: observations in, estimates out.

The live scheduler (``control/scheduler.py``, ``control/routing.py``, ``control/pools.py``) and the
simulator (``sim/pool.py``) call these same functions with the same kind of observations, so the
simulated control plane knows exactly what the live one knows and no more:

============================  ==================================================================
estimate                      from
============================  ==================================================================
run time of a job             median ``run_seconds`` of the pool's last ``RUN_WINDOW_JOBS``
                              completed jobs (:func:`expected_run_seconds`); ``DEFAULT_RUN_SECONDS``
                              until one has completed
download rate of an instance  bytes / seconds of the model fetches its finished jobs reported,
                              smoothed (:func:`measured_rate`); unknown (0) until measured, and
                              routing then uses ``RoutingConfig.default_download_bytes_per_second``
end of a busy job             when the worker reported it *started* (before its downloads) plus the
                              expected run time (:func:`expected_end`)
prefetch demand               the last ``PREFETCH_DEMAND_JOBS`` submitted jobs (:func:`prefetch_demand`)
============================  ==================================================================

:class:`InstanceObservation` is everything routing may know about an instance; the live side
builds it from the database row and its heartbeats, the simulator from what its simulated worker
reported, and both turn it into a :class:`~swarmstation.domain.routing.RoutableInstance` with
:func:`routable_instance`. A fact the live control plane does not have has no field to go in.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from swarmstation.domain.routing import RoutableInstance

__all__ = [
    "DEFAULT_RUN_SECONDS",
    "PREFETCH_DEMAND_JOBS",
    "RATE_SMOOTHING",
    "RUN_WINDOW_JOBS",
    "InstanceObservation",
    "busy_until",
    "expected_end",
    "expected_run_seconds",
    "measured_rate",
    "prefetch_demand",
    "routable_instance",
]

#: completed jobs whose median run time is a pool's expected run time
RUN_WINDOW_JOBS = 50
#: the expected run time of a pool that has completed nothing yet
DEFAULT_RUN_SECONDS = 30.0
#: submitted jobs whose models count as demand for prefetch
PREFETCH_DEMAND_JOBS = 200
#: weight of a new measurement in an instance's smoothed download rate
RATE_SMOOTHING = 0.3

_T = TypeVar("_T")


def expected_run_seconds(recent_runs: Sequence[float], *, default: float = DEFAULT_RUN_SECONDS) -> float:
    """The median of ``recent_runs`` (the caller passes the last ``RUN_WINDOW_JOBS`` completed
    jobs' run seconds, newest or oldest first); ``default`` when there are none. Non-positive
    entries are ignored (a job that reported no run time)."""
    runs = [r for r in recent_runs if r > 0]
    return statistics.median(runs) if runs else default


def measured_rate(previous: float | None, bytes_downloaded: float, seconds: float) -> float | None:
    """An instance's download rate after one more finished job: its fetch's bytes per second,
    smoothed with the previous rate; ``previous`` unchanged when the job downloaded nothing."""
    if bytes_downloaded <= 0 or seconds <= 0:
        return previous
    rate = bytes_downloaded / seconds
    return rate if not previous else (1.0 - RATE_SMOOTHING) * previous + RATE_SMOOTHING * rate


def expected_end(started_at: float, expected_run_seconds: float) -> float:
    """When a busy job is expected to end: its reported start (the worker reports ``started``
    before it downloads anything) plus the expected run time. Seconds on the caller's clock."""
    return started_at + max(0.0, expected_run_seconds)


def busy_until(started_at: Iterable[float], expected_run_seconds: float) -> float | None:
    """The expected end of an instance's work: the latest :func:`expected_end` of its jobs; ``None``
    when it runs none."""
    ends = [expected_end(s, expected_run_seconds) for s in started_at]
    return max(ends) if ends else None


def prefetch_demand(jobs_newest_first: Iterable[_T], *, limit: int = PREFETCH_DEMAND_JOBS) -> list[_T]:
    """The jobs whose models count as prefetch demand: the ``limit`` most recently submitted."""
    out: list[_T] = []
    for job in jobs_newest_first:
        if len(out) >= limit:
            break
        out.append(job)
    return out


@dataclass(frozen=True, slots=True)
class InstanceObservation:
    """What the control plane knows of one instance.

    ``running_started_at``: when each of its leased jobs was reported started (or, not yet
    reported, assigned), seconds on the caller's clock. ``reported_models``: the model keys its last
    heartbeat listed. ``loaded_checkpoint``: the checkpoint its last heartbeat said is loaded.
    ``download_bytes_per_second``: :func:`measured_rate` so far, 0 when not measured yet."""

    instance_id: str
    pool: str
    capacity: int
    running_started_at: tuple[float, ...] = ()
    reported_models: frozenset[str] = frozenset()
    loaded_checkpoint: str | None = None
    download_bytes_per_second: float = 0.0


def routable_instance(
    obs: InstanceObservation, *, expected_run_seconds: float, checkpoint_load_seconds: float
) -> RoutableInstance:
    """The routing view of an observed instance: free slots, the expected end of its work
    (:func:`busy_until`), its reported cache, its measured rate, the configured checkpoint load."""
    return RoutableInstance(
        instance_id=obs.instance_id,
        pool=obs.pool,
        free_slots=max(0, obs.capacity - len(obs.running_started_at)),
        busy_until=busy_until(obs.running_started_at, expected_run_seconds),
        cached=obs.reported_models,
        loaded_checkpoint=obs.loaded_checkpoint,
        download_bytes_per_second=max(0.0, obs.download_bytes_per_second),
        checkpoint_load_seconds=checkpoint_load_seconds,
    )
