"""The ``managed`` policy: a per-second managed service (ComfyUI Deploy's pricing) as the
alternative to running our own pool, queued as such services queue.

Theory of operation. Jobs wait in one shared queue, oldest first; whichever container is free
first takes the next job (a warm idle one at once, a busy one when it finishes, a cold one when it
has started). A job that arrives when no container is idle starts a cold container if fewer are
starting than jobs are waiting and the concurrency limit allows; the job may still be taken by a
busy container that frees sooner, and the new container then takes the next job or idles. A
container idle for ``keep_warm_s`` stops. Switching a warm container to another checkpoint loads
it (``load_base_s + size / load_bytes_per_second``); a job runs ``run_speed_factor`` times its
trace run time (the managed GPU's slowness against ours). Billed: cold start, loads, runs and
kept-warm idle time at ``gpu_price_per_second``, plus the platform fee prorated over the trace.
The n-th cold start draws the same figure in every run (seeded by ``n``).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass

from swarmstation.sim.config import SimConfig
from swarmstation.sim.result import PolicyResult
from swarmstation.sim.trace import Trace, TraceJob

__all__ = ["simulate_managed"]


@dataclass(eq=False, slots=True)
class _Container:
    ready_at: float
    free_at: float = 0.0
    loaded: str | None = None
    busy: bool = True  # starting counts as busy
    billed_from: float = 0.0


_READY, _FREE, _ARRIVE, _EXPIRE = range(4)


def simulate_managed(trace: Trace, config: SimConfig, *, seed: int = 0) -> PolicyResult:
    ms = config.managed
    res = PolicyResult("managed", len(trace.jobs), 0, 0.0, [])
    events: list[tuple[float, int, int, object]] = []
    seq = 0

    def push(t: float, kind: int, obj: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, kind, seq, obj))

    for tj in trace.jobs:
        push(tj.t, _ARRIVE, tj)
    queue: deque[TraceJob] = deque()
    idle: list[_Container] = []  # warm, most recently freed last
    containers = starting = 0
    billed = 0.0
    waits: dict[str, float] = {}
    first_ready: float | None = None

    def take(c: _Container, now: float) -> None:
        tj = queue.popleft()
        c.busy = True
        t = now
        if c.loaded is None:
            c.loaded = tj.checkpoint  # a cold start includes loading its first job's checkpoint
        elif tj.checkpoint is not None and c.loaded != tj.checkpoint:
            size = next((m.size for m in tj.models if m.key == tj.checkpoint), 0)
            t += ms.load_base_s + size / ms.load_bytes_per_second
            c.loaded = tj.checkpoint
        waits[tj.job_id] = t - tj.t
        run = tj.run_seconds * ms.run_speed_factor
        res.run_seconds += run
        c.free_at = t + run
        push(c.free_at, _FREE, c)

    def freed(c: _Container, now: float) -> None:
        if queue:
            take(c, now)
            return
        c.busy = False
        c.free_at = now
        idle.append(c)
        push(now + ms.keep_warm_s, _EXPIRE, (c, now))

    while events:
        now, kind, _, obj = heapq.heappop(events)
        if kind == _ARRIVE:
            assert isinstance(obj, TraceJob)
            queue.append(obj)
            if idle:
                take(idle.pop(), now)
                continue
            limit = ms.max_concurrency if ms.max_concurrency is not None else math.inf
            if starting < len(queue) and containers < limit:
                cold = random.Random(f"{seed}:managed:cold:{res.cold_starts}").lognormvariate(
                    math.log(ms.cold_start_median_s), ms.cold_start_sigma
                )
                res.cold_starts += 1
                containers += 1
                starting += 1
                c = _Container(ready_at=now + cold, billed_from=now)
                push(now + cold, _READY, c)
        elif kind == _READY:
            assert isinstance(obj, _Container)
            starting -= 1
            if first_ready is None:
                first_ready = now
            freed(obj, now)
        elif kind == _FREE:
            assert isinstance(obj, _Container)
            freed(obj, now)
        else:
            assert isinstance(obj, tuple)
            gone: _Container = obj[0]
            since: float = obj[1]
            if not gone.busy and gone.free_at == since:
                idle.remove(gone)
                containers -= 1
                billed += now - gone.billed_from
    billed += sum(c.free_at + ms.keep_warm_s - c.billed_from for c in idle)  # not reached: all expire
    res.instance_seconds = billed
    duration = trace.duration
    res.cost = billed * ms.gpu_price_per_second + ms.platform_fee_per_month * duration / (30 * 86400.0)
    res.completed = len(waits)
    res.waits = [waits[j.job_id] for j in trace.jobs if j.job_id in waits]
    after = first_ready if first_ready is not None else math.inf
    res.waits_after_first_start = [waits[j.job_id] for j in trace.jobs if j.t >= after and j.job_id in waits]
    res.first_ready_at = first_ready
    res.sim_seconds = duration
    cap = "unbounded" if ms.max_concurrency is None else str(ms.max_concurrency)
    res.notes = (
        f"shared queue, concurrency {cap}, cold start median {ms.cold_start_median_s:g} s (assumed), "
        f"keep-warm {ms.keep_warm_s:g} s (assumed), run x{ms.run_speed_factor:g}; ComfyUI Deploy pricing"
    )
    return res
