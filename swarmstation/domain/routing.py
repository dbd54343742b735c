"""Cache-aware routing: which queued job starts on which instance, and which models to prefetch.

Pure: no I/O, no clock reads. The control plane's scheduler and the simulator build snapshots
(:class:`RoutableJob`, :class:`RoutableInstance`) and apply the actions they get back.

Time
----
``now``, :attr:`RoutableJob.queued_at` and :attr:`RoutableInstance.busy_until` are float seconds
on one clock: the control plane passes POSIX timestamps (``datetime.timestamp()``), the simulator
its virtual clock. Every duration is in seconds, every size in bytes.

Cost model (:func:`estimate_start_seconds`)
-------------------------------------------
The expected time until a job could *start* on an instance, in seconds from ``now``::

    wait      max(0, busy_until - now) while the instance has work that ends then (a free slot on
              a busy instance queues behind that work); for a busy instance (no free slot) whose
              busy_until has already passed, ``overrun_wait_seconds``
  + fetch     (bytes of the job's models not in ``cached``) / download_bytes_per_second
  + load      checkpoint_load_seconds when the job names a checkpoint and another one (or none)
              is loaded

A model counts as cached when it is in ``cached`` or is the ``loaded_checkpoint``. Downloads are
charged after the wait (the conservative sum, not an overlap).

The policy (:func:`plan_routes`)
--------------------------------
Jobs are taken oldest first (``queued_at``, then ``job_id``). For each job, the candidates are
the instances of its pool with a free slot, plus the *busy* instances of its pool (no free slot,
known ``busy_until``) that hold the job's anchor model (its largest model, normally the
checkpoint). The job goes to the free instance with the smallest estimate, ties to the smallest
``instance_id``. The plan is deterministic and does not depend on the order of the inputs.

*Delay scheduling.* When a busy holder's estimate is strictly smaller than every free
instance's and at most ``max_delay_seconds``, the job is not assigned: it stays queued and waits
for that instance (typically: a few seconds of waiting instead of a multi-GB cold download). The
plan *reserves* that instance for it: the instance's expected end moves on by the job's estimate
and run time and it counts as holding the job's models, so later jobs of the same pass see the
queue that forms. A small download still beats a long wait, and no wait beyond
``max_delay_seconds`` is ever chosen.

*Aging.* A job that has waited ``aging_seconds`` or more (``now - queued_at``) is never deferred:
it takes the best free instance of its pool. Aged jobs are the oldest, so they are served first:
whenever a pool has ``F`` free slots, its ``min(F, aged jobs)`` oldest aged jobs are all assigned.
A job therefore waits at most ``aging_seconds`` plus the time until its pool has a free slot that
no older job takes: no job starves.

Each free slot is used at most once per plan. An assignment updates the plan's view of the
instance (one slot fewer; the job's models cached and its checkpoint loaded; later work on it
waits for this job's expected end), so a multi-slot instance is costed correctly for the next job.

Complexity
----------
With ``J`` queued jobs, ``N`` instances, ``F`` free instances of a pool and ``A`` assignments:
``O(N log N + J log J)`` to index the snapshot and order the queue (sorting on one float key,
linear on input already in queue order, as the control plane reads it). The job loop stops as
soon as every pool is out of free slots and skips a job of an exhausted pool in ``O(1)``, so only
the assigned and deferred jobs are costed. Costing one job never scans all instances; it searches,
in this order, keeping the best free estimate ``f`` and the best busy one ``b``:

1. free instances with its checkpoint loaded (index by loaded checkpoint), exactly;
2. busy holders of its anchor, from a heap per model key ordered by the earliest start they allow
   (end of work, plus the checkpoint load when another one is loaded), popped only while that bound
   is below ``f``, below ``b`` and within ``max_delay_seconds``. Heaps are built lazily per key over
   the pool's busy instances whose work ends within ``max_delay_seconds`` (the others can never be
   waited for), ``O(N)`` per key; a changed instance gets fresh entries, outdated ones are dropped;
3. free holders of its anchor (index by model key, built lazily per key in ``O(F)``), in order of
   checkpoint-load time, while ``min wait + load`` is below ``f`` and at most ``b``;
4. the other free instances in order of download speed, while
   ``min wait + anchor bytes / rate + min load`` is below ``f`` and at most ``b`` (typically a
   handful: a cold checkpoint download dominates).

Every instance left out has a lower bound that the chosen one meets, so the plan equals the
brute-force policy (a property test checks it against one). Each estimate costs ``O(models of the
job)``. The work is proportional to the assigned and deferred jobs times the candidates that
survive the bounds, not to ``jobs x instances``; ``swarmstation.bench.routing`` measures it
(target: at most 100 µs per assignment with 1,000 instances and 10,000 queued jobs).

Prefetch (:func:`plan_prefetch`) and a cache-blind baseline (:func:`route_ignoring_caches`) are
described on the functions.
"""

from __future__ import annotations

import heapq
import math
from bisect import insort
from collections.abc import Iterable, Iterator, Sequence, Set
from dataclasses import dataclass, field
from operator import attrgetter
from typing import cast

__all__ = [
    "Assign",
    "ModelNeed",
    "Prefetch",
    "RoutableInstance",
    "RoutableJob",
    "RoutingConfig",
    "estimate_start_seconds",
    "plan_prefetch",
    "plan_routes",
    "route_ignoring_caches",
]


@dataclass(frozen=True, slots=True)
class ModelNeed:
    """A model a job needs: ``key`` is ``folder/name`` (e.g. ``loras/style.safetensors``)."""

    key: str
    size: int


@dataclass(frozen=True, slots=True)
class RoutableJob:
    """A queued job as routing sees it.

    ``required`` lists every model the job needs (the checkpoint included); ``checkpoint`` is the
    key of the checkpoint/UNet it loads, or ``None``. ``expected_run_seconds`` is used to predict
    when an instance frees up again after this job.
    """

    job_id: str
    pool: str
    queued_at: float
    required: tuple[ModelNeed, ...] = ()
    checkpoint: str | None = None
    expected_run_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class RoutableInstance:
    """An instance as routing sees it.

    ``free_slots``: how many more jobs it takes now. ``busy_until``: when its current work is
    expected to end (``None``: no work, or unknown; a busy instance with ``None`` is never waited
    for). ``cached``: the model keys on its disk (include downloads in progress).
    ``download_bytes_per_second``: measured; ``<= 0`` means unknown (the config's default is used).
    """

    instance_id: str
    pool: str
    free_slots: int
    busy_until: float | None = None
    cached: frozenset[str] = frozenset()
    loaded_checkpoint: str | None = None
    download_bytes_per_second: float = 0.0
    checkpoint_load_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Knobs of the routing policy.

    ``max_delay_seconds``: the longest expected wait for a busy instance holding the job's models
    that the policy prefers to a free instance (delay scheduling); 0 disables waiting.
    ``aging_seconds``: after this long in the queue a job takes the best free instance, never waits.
    ``prefetch_top_k``: how many of a pool's most demanded models are prefetch candidates.
    ``prefetch_per_instance`` / ``prefetch_max_bytes_per_instance``: what one plan may ask one idle
    instance to download. ``prefetch_min_demand``: jobs that must want a model before it is
    prefetched. ``default_download_bytes_per_second``: for instances without a measured rate.
    ``overrun_wait_seconds``: the expected remaining wait on a busy instance already past its
    ``busy_until``.
    """

    max_delay_seconds: float = 30.0
    aging_seconds: float = 300.0
    prefetch_top_k: int = 8
    prefetch_per_instance: int = 2
    prefetch_max_bytes_per_instance: int = 50 * 10**9
    prefetch_min_demand: int = 2
    default_download_bytes_per_second: float = 50e6
    overrun_wait_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.max_delay_seconds < 0 or self.aging_seconds < 0 or self.overrun_wait_seconds < 0:
            raise ValueError("max_delay_seconds, aging_seconds and overrun_wait_seconds must not be negative")
        if (
            self.prefetch_top_k < 0
            or self.prefetch_per_instance < 0
            or self.prefetch_max_bytes_per_instance < 0
        ):
            raise ValueError("prefetch limits must not be negative")
        if not self.default_download_bytes_per_second > 0:
            raise ValueError("default_download_bytes_per_second must be positive")


@dataclass(frozen=True, slots=True)
class Assign:
    """Start ``job_id`` on ``instance_id``; ``expected_start_seconds`` is the estimate from ``now``."""

    job_id: str
    instance_id: str
    expected_start_seconds: float
    reason: str


@dataclass(frozen=True, slots=True)
class Prefetch:
    """Download ``model_key`` onto the idle ``instance_id`` ahead of demand."""

    instance_id: str
    model_key: str


_INF = math.inf
_QUEUED_AT = attrgetter("queued_at")
_JOB_ID = attrgetter("job_id")
_INSTANCE_ORDER = attrgetter("instance_id")

# (key, size) pairs without duplicates, the anchor key (largest model; the checkpoint on a tie) and its size.
_Needs = tuple[tuple[tuple[str, int], ...], str | None, int]


def _needs(job: RoutableJob) -> _Needs:
    required = job.required
    n = len(required)
    if n == 0:
        return (), None, 0
    if n == 1:
        m = required[0]
        size = m.size if m.size > 0 else 0
        return ((m.key, size),), m.key, size
    models = [(m.key, m.size if m.size > 0 else 0) for m in required]
    if len({key for key, _ in models}) < n:  # a model listed twice: keep its largest size
        sizes: dict[str, int] = {}
        for key, size in models:
            if sizes.get(key, -1) < size:
                sizes[key] = size
        models = list(sizes.items())
    ckpt = job.checkpoint
    anchor, anchor_size = models[0]
    for key, size in models:
        if size > anchor_size or (size == anchor_size and key == ckpt):
            anchor, anchor_size = key, size
    return tuple(models), anchor, anchor_size


def _rate(inst: RoutableInstance, config: RoutingConfig) -> float:
    rate = inst.download_bytes_per_second
    return rate if rate > 0 else config.default_download_bytes_per_second


def _wait(inst: RoutableInstance, now: float, config: RoutingConfig) -> float:
    until = inst.busy_until
    if inst.free_slots > 0:
        return until - now if until is not None and until > now else 0.0
    if until is None:
        return _INF
    return until - now if until > now else config.overrun_wait_seconds


def estimate_start_seconds(
    job: RoutableJob, instance: RoutableInstance, *, now: float, config: RoutingConfig | None = None
) -> float:
    """The expected seconds from ``now`` until ``job`` could start on ``instance`` (module docstring).

    ``inf`` for a busy instance with no known end. The pool is not checked.
    """
    config = config or RoutingConfig()
    wait = _wait(instance, now, config)
    cached = instance.cached
    loaded = instance.loaded_checkpoint
    missing = sum(size for key, size in _needs(job)[0] if key not in cached and key != loaded)
    cost = wait + missing / _rate(instance, config)
    if job.checkpoint is not None and loaded != job.checkpoint:
        cost += max(0.0, instance.checkpoint_load_seconds)
    return cost


@dataclass
class _Pool:
    """The plan's indexes over one pool's instances (by position in the id-sorted instance list)."""

    free_slots: int = 0
    # free instances sorted by (1 / download rate, position); dead ones are skipped, `head` passes them
    by_rate: list[tuple[float, int]] = field(default_factory=list)
    head: int = 0
    # loaded checkpoint -> free instances with it loaded, ascending (may hold stale entries: re-checked)
    loaded_free: dict[str, list[int]] = field(default_factory=dict)
    # model key -> free holders as (checkpoint load seconds, position), ascending; built lazily
    holders_free: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    # instances without a free slot whose end of work is known
    busy: list[int] = field(default_factory=list)
    # model key -> heap of (earliest possible start, position, version) over busy holders: the
    # expected end of their work, plus their checkpoint load when another checkpoint is loaded. Built
    # lazily. A change to an instance bumps its version; it only moves its start later, except in the
    # heap of its new checkpoint (and of models it did not hold), where it gets a fresh entry at once.
    # An outdated entry that reaches the top is dropped when a fresh one exists (`fresh`: the version
    # of the entry last pushed per (key, position)), and otherwise pushed again with the current value.
    busy_heaps: dict[str, list[tuple[float, int, int]]] = field(default_factory=dict)
    fresh: dict[tuple[str, int], int] = field(default_factory=dict)
    min_wait: float = _INF
    min_inv_rate: float = _INF
    min_load: float = _INF


class _Planner:
    """Mutable state of one planning pass: the instances' view as the plan's actions change it."""

    def __init__(self, instances: Sequence[RoutableInstance], now: float, config: RoutingConfig) -> None:
        self.now = now
        ordered = sorted(instances, key=_INSTANCE_ORDER)
        self.ids = [i.instance_id for i in ordered]
        self.free = [max(0, i.free_slots) for i in ordered]
        self.loaded = [i.loaded_checkpoint for i in ordered]
        self.inv_rate = [1.0 / _rate(i, config) for i in ordered]
        self.load = [max(0.0, i.checkpoint_load_seconds) for i in ordered]
        # absolute time at which the instance can start new work (inf: unknown)
        self.ready_at: list[float] = []
        self.cached: list[Set[str]] = [i.cached for i in ordered]
        self.owned: list[bool] = [False] * len(ordered)
        self.version: list[int] = [0] * len(ordered)
        self.pools: dict[str, _Pool] = {}
        overrun = now + config.overrun_wait_seconds
        # a busy instance whose work ends later than this is never waited for in this plan (the plan
        # only moves ends later), so the busy indexes leave it out
        self.horizon = horizon = now + config.max_delay_seconds
        ready_at, cached, pools = self.ready_at, self.cached, self.pools
        for pos, inst in enumerate(ordered):
            loaded = inst.loaded_checkpoint
            if loaded is not None and loaded not in inst.cached:
                cached[pos] = inst.cached | {loaded}
            until = inst.busy_until
            pool = pools.get(inst.pool)
            if pool is None:
                pool = pools[inst.pool] = _Pool()
            free = self.free[pos]
            if free > 0:
                at = until if until is not None and until > now else now
                ready_at.append(at)
                pool.free_slots += free
                inv_rate = self.inv_rate[pos]
                pool.by_rate.append((inv_rate, pos))
                if loaded is not None:
                    pool.loaded_free.setdefault(loaded, []).append(pos)
                if at - now < pool.min_wait:
                    pool.min_wait = at - now
                if inv_rate < pool.min_inv_rate:
                    pool.min_inv_rate = inv_rate
                if self.load[pos] < pool.min_load:
                    pool.min_load = self.load[pos]
            elif until is None:
                ready_at.append(_INF)
            else:
                at = until if until > now else overrun
                ready_at.append(at)
                if at <= horizon:
                    pool.busy.append(pos)
        for pool in pools.values():
            pool.by_rate.sort()
        self.free_total = sum(p.free_slots for p in pools.values())

    # -- costs ---------------------------------------------------------------------------------

    def cost(self, pos: int, models: tuple[tuple[str, int], ...], ckpt: str | None) -> float:
        cached = self.cached[pos]
        missing = 0
        for key, size in models:
            if key not in cached:
                missing += size
        cost = self.ready_at[pos] - self.now
        if missing:
            cost += missing * self.inv_rate[pos]
        if ckpt is not None and self.loaded[pos] != ckpt:
            cost += self.load[pos]
        return cost

    def _holders_free(self, pool: _Pool, key: str) -> list[tuple[float, int]]:
        lst = pool.holders_free.get(key)
        if lst is None:
            cached, load, free = self.cached, self.load, self.free
            lst = sorted((load[pos], pos) for _, pos in pool.by_rate if free[pos] > 0 and key in cached[pos])
            pool.holders_free[key] = lst
        return lst

    def _priority(self, pos: int, key: str) -> float:
        return self.ready_at[pos] + (self.load[pos] if self.loaded[pos] != key else 0.0)

    def _busy_heap(self, pool: _Pool, key: str) -> list[tuple[float, int, int]]:
        heap = pool.busy_heaps.get(key)
        if heap is None:
            cached, version, ready_at, loaded, load = (
                self.cached,
                self.version,
                self.ready_at,
                self.loaded,
                self.load,
            )
            heap = [
                (ready_at[pos] + (load[pos] if loaded[pos] != key else 0.0), pos, version[pos])
                for pos in pool.busy
                if key in cached[pos]
            ]
            heapq.heapify(heap)
            pool.busy_heaps[key] = heap
        return heap

    def _push_busy(self, pool: _Pool, pos: int, keys: Iterable[str]) -> None:
        """Record a change to the instance: fresh entries in the built busy heaps of ``keys``."""
        self.version[pos] += 1
        version = self.version[pos]
        heaps, fresh = pool.busy_heaps, pool.fresh
        for key in keys:
            heap = heaps.get(key)
            if heap is not None:
                heapq.heappush(heap, (self._priority(pos, key), pos, version))
                fresh[key, pos] = version

    def best_loaded(self, pool: _Pool, needs: _Needs, ckpt: str | None) -> tuple[float, int]:
        """The smallest estimate over the free instances with the job's checkpoint loaded."""
        if ckpt is None:
            return _INF, -1
        lst = pool.loaded_free.get(ckpt)
        if not lst:
            return _INF, -1
        models = needs[0]
        free, loaded = self.free, self.loaded
        floor = pool.min_wait
        best, best_pos = _INF, -1
        dead = 0
        for pos in lst:
            if free[pos] <= 0 or loaded[pos] != ckpt:
                dead += 1
                continue
            c = self.cost(pos, models, ckpt)
            if c < best:
                best, best_pos = c, pos
                if c <= floor:  # nothing is cheaper, and the list is in id order
                    break
        if dead * 4 > len(lst):
            lst[:] = [p for p in lst if free[p] > 0 and loaded[p] == ckpt]
        return best, best_pos

    def best_rest(
        self, pool: _Pool, needs: _Needs, ckpt: str | None, best: float, best_pos: int, rival: float
    ) -> tuple[float, int]:
        """Continue :meth:`best_loaded` over the other free instances (see the module docstring).

        An instance is costed only when its lower bound is below ``best`` (found so far) and at most
        ``rival`` (a busy instance's estimate), so the result is exact whenever it is ``<= rival``,
        and when it is not, every free instance's estimate exceeds ``rival``.
        """
        models, anchor, anchor_size = needs
        free, loaded = self.free, self.loaded
        floor = pool.min_wait
        if anchor is None:
            # no models: only wait and checkpoint load matter; scan the free instances
            for _, pos in pool.by_rate[pool.head :]:
                if free[pos] > 0 and (ckpt is None or loaded[pos] != ckpt):
                    c = self.cost(pos, models, ckpt)
                    if c < best or (c == best and pos < best_pos):
                        best, best_pos = c, pos
            return best, best_pos
        has_ckpt = ckpt is not None
        load_floor = pool.min_load if has_ckpt else 0.0

        # 2. holders of the anchor (without the checkpoint loaded): cost >= wait + load
        if floor + load_floor <= best and floor + load_floor <= rival:
            hold = self._holders_free(pool, anchor)
            dead = 0
            for load_s, pos in hold:
                bound = floor + load_s if has_ckpt else floor
                if bound > best or bound > rival:
                    break
                if free[pos] <= 0:
                    dead += 1
                    continue
                if has_ckpt and loaded[pos] == ckpt:
                    continue
                c = self.cost(pos, models, ckpt)
                if c < best or (c == best and pos < best_pos):
                    best, best_pos = c, pos
            if dead * 4 > len(hold):
                hold[:] = [e for e in hold if free[e[1]] > 0]

        # 3. the others, fastest download first: cost >= wait + anchor / rate + load
        base = floor + load_floor
        if base + anchor_size * pool.min_inv_rate > min(best, rival):
            return best, best_pos
        by_rate = pool.by_rate
        cached = self.cached
        i = pool.head
        n = len(by_rate)
        while i < n and free[by_rate[i][1]] <= 0:
            i += 1
        pool.head = i
        while i < n:
            inv_rate, pos = by_rate[i]
            i += 1
            bound = base + anchor_size * inv_rate
            if bound > best or bound > rival:
                break
            if free[pos] <= 0 or anchor in cached[pos] or (has_ckpt and loaded[pos] == ckpt):
                continue
            c = self.cost(pos, models, ckpt)
            if c < best or (c == best and pos < best_pos):
                best, best_pos = c, pos
        return best, best_pos

    def best_busy(
        self, pool: _Pool, needs: _Needs, ckpt: str | None, beat: float, max_delay: float
    ) -> tuple[float, int]:
        """The smallest estimate over the busy holders of the anchor; only candidates that could start
        before ``beat`` and within ``max_delay`` are costed (``(inf, -1)`` when none is)."""
        models, anchor, _ = needs
        if anchor is None or not pool.busy:
            return _INF, -1
        heap = self._busy_heap(pool, anchor)
        version, fresh, now = self.version, pool.fresh, self.now
        best, best_pos = _INF, -1
        if ckpt != anchor:
            # the heap's order bounds only jobs whose checkpoint is the anchor: cost every holder
            for pos in {pos for _, pos, _ in heap}:
                wait = self.ready_at[pos] - now
                if wait < beat and wait <= best:
                    c = self.cost(pos, models, ckpt)
                    if c < best or (c == best and pos < best_pos):
                        best, best_pos = c, pos
            return (best, best_pos) if best <= max_delay else (_INF, -1)
        popped: list[tuple[float, int, int]] = []
        while heap:
            prio, pos, ver = heap[0]
            current = version[pos]
            if ver != current:
                if fresh.get((anchor, pos)) == current:
                    heapq.heappop(heap)
                else:
                    heapq.heapreplace(heap, (self._priority(pos, anchor), pos, current))
                    fresh[anchor, pos] = current
                continue
            bound = prio - now  # a lower bound of the estimate on this and every later instance
            if bound >= beat or bound > best or bound > max_delay:
                break
            popped.append(heapq.heappop(heap))
            c = self.cost(pos, models, ckpt)
            if c < best or (c == best and pos < best_pos):
                best, best_pos = c, pos
        for entry in popped:
            heapq.heappush(heap, entry)
        return (best, best_pos) if best <= max_delay else (_INF, -1)

    # -- plan changes --------------------------------------------------------------------------

    def _take(self, pos: int, needs: _Needs, ckpt: str | None, ends_at: float) -> list[str]:
        """Record that the instance runs this job until ``ends_at``; returns the newly cached keys."""
        cached = self.cached[pos]
        new = [key for key, _ in needs[0] if key not in cached]
        if ckpt is not None and ckpt not in cached and ckpt not in new:
            new.append(ckpt)
        if new:
            if self.owned[pos]:
                mutable = cast(set[str], cached)
            else:  # copy on first write: the snapshot's frozenset stays untouched
                mutable = set(cached)
                self.cached[pos] = mutable
                self.owned[pos] = True
            mutable.update(new)
        if ckpt is not None:
            self.loaded[pos] = ckpt
        self.ready_at[pos] = ends_at
        return new

    def assign(self, pool: _Pool, pos: int, needs: _Needs, job: RoutableJob, start: float) -> None:
        ckpt = job.checkpoint
        was_loaded = self.loaded[pos]
        new = self._take(pos, needs, ckpt, self.now + start + max(0.0, job.expected_run_seconds))
        self.free[pos] -= 1
        pool.free_slots -= 1
        self.free_total -= 1
        if self.free[pos] > 0:  # a multi-slot instance stays a free candidate with its new state
            for key in new:
                lst = pool.holders_free.get(key)
                if lst is not None:
                    insort(lst, (self.load[pos], pos))
            if ckpt is not None and ckpt != was_loaded:
                insort(pool.loaded_free.setdefault(ckpt, []), pos)
        elif self.ready_at[pos] <= self.horizon:  # now a busy instance that later jobs may wait for
            pool.busy.append(pos)
            self._push_busy(pool, pos, pool.busy_heaps.keys() & self.cached[pos])

    def reserve(self, pool: _Pool, pos: int, needs: _Needs, job: RoutableJob, start: float) -> None:
        new = self._take(pos, needs, job.checkpoint, self.now + start + max(0.0, job.expected_run_seconds))
        ckpt = job.checkpoint
        self._push_busy(pool, pos, new if ckpt is None or ckpt in new else [*new, ckpt])

    def explain(self, pos: int, needs: _Needs, ckpt: str | None, start: float, aged: float | None) -> str:
        cached = self.cached[pos]
        missing = [(key, size) for key, size in needs[0] if key not in cached]
        parts: list[str] = []
        wait = self.ready_at[pos] - self.now
        if wait > 0:
            parts.append(f"waits {wait:.1f}s for earlier work")
        if missing:
            nbytes = sum(size for _, size in missing)
            seconds = nbytes * self.inv_rate[pos]
            parts.append(f"downloads {len(missing)} model(s), {nbytes / 1e6:.1f} MB (~{seconds:.1f}s)")
        else:
            parts.append("all models cached" if needs[0] else "needs no models")
        if ckpt is not None:
            parts.append(
                "checkpoint loaded"
                if self.loaded[pos] == ckpt
                else f"loads its checkpoint (~{self.load[pos]:.1f}s)"
            )
        head = f"aged {aged:.0f}s, best free instance" if aged is not None else "soonest start"
        return f"{head}: expected start in {start:.1f}s; " + ", ".join(parts)


def _in_queue_order(jobs: Iterable[RoutableJob]) -> Iterator[RoutableJob]:
    """Oldest first: by ``queued_at``, then ``job_id``. The sort on one float key is linear on input
    already in queue order; the rare runs of equal ``queued_at`` are ordered by id as they are reached."""
    ordered = sorted(jobs, key=_QUEUED_AT)
    n = len(ordered)
    i = 0
    while i < n:
        job = ordered[i]
        j = i + 1
        if j < n and ordered[j].queued_at == job.queued_at:
            while j < n and ordered[j].queued_at == job.queued_at:
                j += 1
            yield from sorted(ordered[i:j], key=_JOB_ID)
        else:
            yield job
        i = j


def plan_routes(
    jobs: Sequence[RoutableJob],
    instances: Sequence[RoutableInstance],
    *,
    now: float,
    config: RoutingConfig | None = None,
) -> list[Assign]:
    """Assign queued jobs to the instances where they are expected to start soonest.

    Jobs that get no action stay queued: their pool has no free slot left in this plan, or they
    wait for a busy instance that holds their models (delay scheduling). See the module docstring
    for the cost model, the delay and aging rules, and the complexity. Instance ids are unique.
    """
    config = config or RoutingConfig()
    planner = _Planner(instances, now, config)
    if planner.free_total <= 0 or not jobs:
        return []
    pools = planner.pools
    max_delay = config.max_delay_seconds
    aging = config.aging_seconds
    actions: list[Assign] = []
    for job in _in_queue_order(jobs):
        pool = pools.get(job.pool)
        if pool is None or pool.free_slots <= 0:
            continue
        needs = _needs(job)
        ckpt = job.checkpoint
        waited = now - job.queued_at
        aged = waited >= aging
        best, pos = planner.best_loaded(pool, needs, ckpt)
        rival, rival_pos = _INF, -1
        if not aged and best > 0.0 and max_delay > 0.0:
            rival, rival_pos = planner.best_busy(pool, needs, ckpt, best, max_delay)
        best, pos = planner.best_rest(pool, needs, ckpt, best, pos, rival)
        if rival_pos >= 0 and rival < best:
            planner.reserve(pool, rival_pos, needs, job, rival)
            continue
        if pos < 0:  # not reached: a pool with a free slot always yields a candidate
            continue
        reason = planner.explain(pos, needs, ckpt, best, waited if aged else None)
        actions.append(Assign(job.job_id, planner.ids[pos], best, reason))
        planner.assign(pool, pos, needs, job, best)
        if planner.free_total <= 0:
            break
    return actions


def route_ignoring_caches(
    jobs: Sequence[RoutableJob],
    instances: Sequence[RoutableInstance],
    *,
    now: float,
    config: RoutingConfig | None = None,
) -> list[Assign]:
    """The cache-blind baseline: oldest job first onto its pool's free instance with the most free
    slots (then the shortest wait, then the smallest id), as the FIFO policy does; never waits.

    ``expected_start_seconds`` is still the full estimate (downloads included), so the two policies
    can be compared on the same figures. ``O(N log N + J log J + A log F)``.
    """
    config = config or RoutingConfig()
    planner = _Planner(instances, now, config)
    if planner.free_total <= 0 or not jobs:
        return []
    heaps: dict[str, list[tuple[int, float, int]]] = {}
    for name, members in planner.pools.items():
        heap = [(-planner.free[pos], planner.ready_at[pos], pos) for _, pos in members.by_rate]
        heapq.heapify(heap)
        heaps[name] = heap
    actions: list[Assign] = []
    for job in _in_queue_order(jobs):
        pool = planner.pools.get(job.pool)
        if pool is None or pool.free_slots <= 0:
            continue
        heap = heaps[job.pool]
        _, _, pos = heapq.heappop(heap)
        needs = _needs(job)
        start = planner.cost(pos, needs[0], job.checkpoint)
        actions.append(
            Assign(job.job_id, planner.ids[pos], start, "cache-blind FIFO: least loaded free instance")
        )
        planner.assign(pool, pos, needs, job, start)
        if planner.free[pos] > 0:
            heapq.heappush(heap, (-planner.free[pos], planner.ready_at[pos], pos))
        if planner.free_total <= 0:
            break
    return actions


def plan_prefetch(
    jobs: Iterable[RoutableJob],
    instances: Sequence[RoutableInstance],
    *,
    now: float,
    config: RoutingConfig | None = None,
) -> list[Prefetch]:
    """Popular models onto idle instances that lack them.

    Demand is counted per pool over ``jobs`` (recent and/or queued: each job counts once for each
    model it needs). A pool's candidates are its ``prefetch_top_k`` most demanded models wanted by at
    least ``prefetch_min_demand`` jobs. Idle instances have a free slot and no work (``busy_until``
    unset or past). Repeatedly, the candidate with the highest demand per copy in the pool
    (``demand / (copies + 1)``, copies counted over all the pool's instances, cached or loaded) that
    has fewer copies than its demand goes to the idle instance lacking it with the fastest download
    (then the smallest id) and budget left: at most ``prefetch_per_instance`` models and
    ``prefetch_max_bytes_per_instance`` bytes per instance. Deterministic; listed in planning order.
    """
    config = config or RoutingConfig()
    if config.prefetch_top_k == 0 or config.prefetch_per_instance == 0:
        return []
    demand: dict[str, dict[str, int]] = {}
    sizes: dict[str, int] = {}
    for job in jobs:
        counts = demand.setdefault(job.pool, {})
        for key, size in _needs(job)[0]:
            counts[key] = counts.get(key, 0) + 1
            if sizes.get(key, -1) < size:
                sizes[key] = size
    by_pool: dict[str, list[RoutableInstance]] = {}
    for inst in sorted(instances, key=_INSTANCE_ORDER):
        by_pool.setdefault(inst.pool, []).append(inst)

    actions: list[Prefetch] = []
    for pool_name in sorted(demand):
        members = by_pool.get(pool_name, [])
        ranked = sorted(demand[pool_name].items(), key=lambda kv: (-kv[1], kv[0]))
        top = [(key, n) for key, n in ranked[: config.prefetch_top_k] if n >= config.prefetch_min_demand]
        if not top or not members:
            continue
        holdings = [
            inst.cached | {inst.loaded_checkpoint} if inst.loaded_checkpoint else inst.cached
            for inst in members
        ]
        idle = sorted(
            (
                idx
                for idx, inst in enumerate(members)
                if inst.free_slots > 0 and (inst.busy_until is None or inst.busy_until <= now)
            ),
            key=lambda idx: (-_rate(members[idx], config), members[idx].instance_id),
        )
        if not idle:
            continue
        taken = dict.fromkeys(idle, 0)
        spent = dict.fromkeys(idle, 0)
        heap: list[tuple[float, str, int, int]] = []  # (-demand per copy, key, demand, copies)
        for key, n in top:
            copies = sum(1 for held in holdings if key in held)
            if copies < n:
                heap.append((-n / (copies + 1), key, n, copies))
        heapq.heapify(heap)
        planned: set[tuple[int, str]] = set()
        while heap:
            _, key, n, copies = heapq.heappop(heap)
            size = sizes[key]
            target = next(
                (
                    idx
                    for idx in idle
                    if taken[idx] < config.prefetch_per_instance
                    and spent[idx] + size <= config.prefetch_max_bytes_per_instance
                    and key not in holdings[idx]
                    and (idx, key) not in planned
                ),
                None,
            )
            if target is None:
                continue
            planned.add((target, key))
            taken[target] += 1
            spent[target] += size
            actions.append(Prefetch(members[target].instance_id, key))
            copies += 1
            if copies < n:
                heapq.heappush(heap, (-n / (copies + 1), key, n, copies))
    return actions
