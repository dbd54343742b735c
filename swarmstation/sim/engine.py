"""A discrete-event simulator of a GPU pool on a virtual clock, driving the real domain policies.

The pool policies call the same pure functions as the control plane: routing
(``domain.routing.plan_routes``, ``route_ignoring_caches``, ``plan_prefetch``), scaling
(``domain.scaling.plan_scaling``), cache eviction (``domain.cache.plan_eviction``) and billing
(``domain.pricing.bill``). Virtual seconds are mapped to datetimes from
:data:`EPOCH` where a policy takes datetimes.

Model
-----
* Marketplace (:class:`Marketplace`): each launch draws ``offers_per_launch`` offers (price,
  reliability, DLPerf) and rents the first that ``domain.offers.rank_offers`` ranks, as the VastAI
  provider does. It then draws the image pull (``loading``: storage is billed, the GPU is not), the
  boot until the worker is ready (``running``: the GPU is billed, VastAI bills GPU time from
  ``running``), whether the instance never becomes ready (stuck in ``loading``, or up but never
  healthy; either way it is destroyed at the provisioning timeout and the autoscaler replaces it), a
  lifetime after which it dies (exponential), a download bandwidth and a checkpoint load speed. The
  n-th launch draws the same figures under every policy (common random numbers), so policies differ
  by their decisions, not by luck.
* An instance runs one job at a time: it downloads the job's missing models (after any prefetch in
  progress), evicting with ``plan_eviction`` under its disk budget, loads the checkpoint when another
  one is loaded, then runs for the trace's run time.
* Control loops: a scheduler pass every ``scheduler_interval_s`` (routing), a pool pass every
  ``pool_interval_s`` (scaling, prefetch, sampling of the time series).
* A job that loses its instance returns to the queue with its original arrival time.

Policies: ``ours``, ``ours-no-cache-affinity``, ``no-warm-pool`` (event-driven here),
``managed`` (closed form, :func:`simulate_managed`) and two lower bounds: ``oracle`` (run seconds
only, :func:`simulate_oracle`) and ``clairvoyant`` (whole GPUs rented per window with hindsight,
:func:`simulate_clairvoyant`).
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from swarmstation.domain.cache import CachedModel, plan_eviction
from swarmstation.domain.offers import Offer, OfferFilters, rank_offers, rental_price
from swarmstation.domain.pricing import BilledInstance, JobRun, bill
from swarmstation.domain.routing import (
    ModelNeed,
    RoutableInstance,
    RoutableJob,
    RoutingConfig,
    plan_prefetch,
    plan_routes,
    route_ignoring_caches,
)
from swarmstation.domain.scaling import (
    Drain,
    InstanceView,
    Launch,
    Park,
    PoolConfig,
    PoolSnapshot,
    Resume,
    plan_scaling,
)
from swarmstation.domain.states import InstanceState
from swarmstation.sim.trace import Trace, TraceJob

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
POOL = "sim"
POLICIES = ("ours", "ours-no-cache-affinity", "no-warm-pool", "managed", "oracle", "clairvoyant")
BOUNDS = ("oracle", "clairvoyant")  # lower bounds, not policies one could run
Progress = Callable[[float], None]


def at(seconds: float) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


@dataclass(frozen=True)
class Marketplace:
    """A GPU marketplace such as VastAI. Prices: seed-roadmap.md §2, RTX 4090 ~$0.30/hour.

    Billing follows protocols.md §2.5: storage from creation, GPU time from ``running`` (after the
    image pull). The storage rate is ~$0.15 per GB-month for the disk we ask for."""

    price_per_hour: float = 0.30
    price_spread: tuple[float, float] = (0.9, 1.2)  # an offer costs price_per_hour x U(lo, hi)
    offers_per_launch: int = 5  # offers seen per launch; the ranked best is rented
    reliability_range: tuple[float, float] = (0.90, 1.0)
    pull_median_s: float = 100.0  # created -> running (image pull), GPU not billed
    boot_median_s: float = 50.0  # running -> worker ready (onstart, ComfyUI start), GPU billed
    provision_sigma: float = 0.5
    never_running_prob: float = 0.04  # stuck in loading: storage billed only
    never_ready_prob: float = 0.03  # running but never healthy: GPU billed until destroyed
    provision_timeout_s: float = 900.0
    storage_per_hour: float = 0.016
    # Resuming a parked (stopped) instance: the container starts again with its disk, so only the
    # boot is paid. It fails when the GPU was rented out meanwhile, likelier the longer it was
    # parked (an assumption: protocols.md §2.6 says only that it may fail); the control plane gives
    # up after resume_timeout_s and launches instead.
    resume_median_s: float = 45.0
    resume_fail_per_hour: float = 0.03
    resume_timeout_s: float = 180.0
    mean_lifetime_hours: float = 48.0
    bandwidth_median: float = 100e6  # bytes/s
    bandwidth_sigma: float = 0.6
    load_bytes_per_second: float = 1.5e9  # checkpoint from disk into VRAM
    load_base_s: float = 2.0
    load_spread: tuple[float, float] = (0.7, 1.3)  # per-instance disk speed factor
    disk_budget_bytes: int = 80 * 10**9
    # Interruptible (bid) rentals: an offer's min_bid is this fraction of its on-demand price, and
    # a running bid instance is outbid (stopped by VastAI, then destroyed by the control plane and
    # its job requeued) at this rate. Both are assumptions; protocols.md gives no figures.
    bid_fraction: tuple[float, float] = (0.40, 0.60)
    outbid_per_hour: float = 0.125

    @property
    def cheapest_per_hour(self) -> float:
        return self.price_per_hour * self.price_spread[0]


@dataclass(frozen=True)
class ManagedService:
    """A per-second managed service priced like ComfyUI Deploy (seed-roadmap.md §2: A10G ~$1.21/hour
    plus a $100/month platform fee; prior-system.md lists A10G at $0.000337/s). Keep-warm and
    cold-start figures are assumptions (Modal-style containers), not from the references."""

    gpu_price_per_second: float = 0.000337
    platform_fee_per_month: float = 100.0
    keep_warm_s: float = 60.0
    cold_start_median_s: float = 45.0
    cold_start_sigma: float = 0.4
    run_speed_factor: float = 1.0  # A10G vs RTX 4090; 1.0 favours the managed service


def default_pool() -> PoolConfig:
    return PoolConfig(
        name=POOL,
        min_instances=0,
        max_instances=60,
        scale_up_queue_threshold=1,
        idle_minutes=10.0,
        target_wait_seconds=30.0,
    )


@dataclass(frozen=True)
class SimConfig:
    pool: PoolConfig = field(default_factory=default_pool)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    market: Marketplace = field(default_factory=Marketplace)
    managed: ManagedService = field(default_factory=ManagedService)
    scheduler_interval_s: float = 0.5  # Settings.scheduler_interval_seconds
    pool_interval_s: float = 2.0  # Settings.control_interval_seconds
    skip_idle_passes: bool = True  # only a speed-up: results are the same either way (tested)
    prefetch_interval_s: float = 10.0  # workers get prefetch hints with heartbeats every few seconds
    recent_window_s: float = 1800.0  # demand window for prefetch
    utilisation_window_s: float = 600.0  # window of PoolSnapshot.busy_slots_recent
    clairvoyant_window_s: float = 300.0
    # the pool rents interruptible (bid) instances at min_bid * bid_margin (pool setting `rental`)
    interruptible: bool = False
    bid_margin: float = 1.1

    @property
    def cheapest_per_hour(self) -> float:
        """The lowest rate the pool's kind of rental can get: the bounds pay it."""
        m = self.market
        if self.interruptible:
            return m.cheapest_per_hour * m.bid_fraction[0] * self.bid_margin
        return m.cheapest_per_hour

    # new instances fetch each tool's default checkpoint as they start, as the control plane's
    # preload list (the models of every tool the pool serves) makes real workers do
    preload_tool_models: bool = True
    sample_interval_s: float = 60.0


@dataclass
class PolicyResult:
    policy: str
    jobs: int
    completed: int
    cost: float
    waits: list[float]  # queued -> run start, per completed job (trace order)
    cold_starts: int = 0
    cache_hits: int = 0
    cache_lookups: int = 0
    run_seconds: float = 0.0
    instance_seconds: float = 0.0
    launches: int = 0
    never_ready: int = 0
    parks: int = 0
    resumes: int = 0
    resume_failures: int = 0
    outbids: int = 0
    deaths: int = 0
    requeued: int = 0
    downloaded_bytes: int = 0
    unattributed_cost: float = 0.0
    first_ready_at: float | None = None
    waits_after_first_start: list[float] = field(default_factory=list)
    series: list[tuple[float, int, int]] = field(default_factory=list)  # (t, queued, live instances)
    sim_seconds: float = 0.0
    notes: str = ""


@dataclass(eq=False, slots=True)
class _Job:
    tj: TraceJob
    rj: RoutableJob
    attempts: int = 0
    start: float | None = None
    end: float | None = None
    instance: _Instance | None = None
    assigned: float = 0.0


@dataclass(eq=False, slots=True)
class _Instance:
    iid: str
    created: float
    price: float
    bw: float
    load_rate: float
    running_at: float | None = None  # GPU billing starts here (after the image pull)
    gpu_since: float | None = None  # start of the GPU billing span now open
    gpu_spans: list[tuple[float, float]] = field(default_factory=list)
    parked_at: float | None = None
    resumes: int = 0
    lost: bool = False  # its host died while it was parked: a resume fails
    outbid: bool = False  # its end (the _DIE event) is an outbid interruptible rental
    state: InstanceState = InstanceState.PROVISIONING
    ended: float | None = None
    # key -> [size, last_used, download start, ready_at]
    cache: dict[str, list[float]] = field(default_factory=dict)
    frozen: frozenset[str] | None = None
    loaded: str | None = None
    job: _Job | None = None
    busy_until: float | None = None
    idle_since: float | None = None
    bg_free_at: float = 0.0  # when its background downloads (preload, prefetch) are done
    dedicated: _Job | None = None
    runs: list[tuple[str, float, float]] = field(default_factory=list)
    jobs_run: int = 0

    def cached(self) -> frozenset[str]:
        if self.frozen is None:
            self.frozen = frozenset(self.cache)
        return self.frozen


_SIM_FILTERS = OfferFilters(gpu_names=("RTX 4090",), min_vram_gb=20.0)

_ARRIVE, _SCHED, _POOL, _READY, _TIMEOUT, _DIE, _DONE, _SAMPLE = range(8)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def tool_medians(trace: Trace) -> dict[str, float]:
    runs: dict[str, list[float]] = {}
    for j in trace.jobs:
        runs.setdefault(j.tool, []).append(j.run_seconds)
    return {k: statistics.median(v) for k, v in runs.items()}


def pool_preload(trace: Trace) -> tuple[tuple[str, int], ...]:
    """Each tool's default checkpoint (the one most of its jobs use: what its workflow names), most
    demanded first, as the control plane orders a pool's preload list."""
    counts: dict[str, dict[ModelNeed, int]] = {}
    for j in trace.jobs:
        for m in j.models:
            if m.key == j.checkpoint:
                per_tool = counts.setdefault(j.tool, {})
                per_tool[m] = per_tool.get(m, 0) + 1
    demand: dict[ModelNeed, int] = {}
    for c in counts.values():
        model, n = max(c.items(), key=lambda kv: (kv[1], kv[0].key))
        demand[model] = demand.get(model, 0) + n
    return tuple((m.key, m.size) for m, _ in sorted(demand.items(), key=lambda kv: (-kv[1], kv[0].key)))


class PoolSimulation:
    """One run of one event-driven policy (``ours``, ``ours-no-cache-affinity``, ``no-warm-pool``)."""

    def __init__(
        self, trace: Trace, policy: str, config: SimConfig, *, seed: int = 0, progress: Progress | None = None
    ) -> None:
        if policy not in ("ours", "ours-no-cache-affinity", "no-warm-pool"):
            raise ValueError(f"not an event-driven policy: {policy}")
        self.trace = trace
        self.policy = policy
        self.cfg = config
        self.seed = seed
        self.progress = progress
        self.now = 0.0
        self.events: list[tuple[float, int, int, object]] = []
        self.seq = 0
        self.instances: dict[str, _Instance] = {}
        self.live: dict[str, _Instance] = {}
        self.parked: dict[str, _Instance] = {}
        self.sched_armed = True
        self.next_prefetch = 0.0
        self.pool_armed = True
        self.pool_wake = 0
        self.next_prefetch = 0.0
        self.queue: dict[str, _Job] = {}
        self.recent: deque[tuple[float, RoutableJob]] = deque()
        self.launches = 0
        self.done = 0
        self.last_scale_up: float | None = None
        self.busy_log: deque[tuple[float, float]] = deque()  # (assigned, done) of finished jobs
        medians = tool_medians(trace)
        self.expected_job_s = statistics.fmean(medians.values()) if medians else 30.0
        self.jobs = [
            _Job(
                tj,
                RoutableJob(tj.job_id, POOL, tj.t, tj.models, tj.checkpoint, medians.get(tj.tool, 30.0)),
            )
            for tj in trace.jobs
        ]
        self.preload = pool_preload(trace) if config.preload_tool_models else ()
        m = config.market
        self.routing_load_s = m.load_base_s + 7e9 / m.load_bytes_per_second
        self.res = PolicyResult(policy, len(self.jobs), 0, 0.0, [])

    # -- events --------------------------------------------------------------------------------

    def push(self, t: float, kind: int, obj: object = None) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, obj))

    def run(self) -> PolicyResult:
        for job in self.jobs:
            self.push(job.tj.t, _ARRIVE, job)
        if self.policy != "no-warm-pool":
            self.push(0.0, _POOL)
            self.sched_armed = False
        self.push(0.0, _SAMPLE)
        horizon = self.trace.duration
        total = len(self.jobs)
        hard_stop = horizon + 7 * 86400.0
        next_report = 0.0
        handlers = {
            _ARRIVE: self.on_arrive,
            _SCHED: self.on_sched,
            _POOL: self.on_pool,
            _READY: self.on_ready,
            _TIMEOUT: self.on_timeout,
            _DIE: self.on_die,
            _DONE: self.on_done,
            _SAMPLE: self.on_sample,
        }
        stop = horizon
        while self.events:
            t, _, kind, obj = heapq.heappop(self.events)
            if t >= horizon and self.done >= total and self._settled():
                stop = max(horizon, self.now)
                break
            if t > hard_stop:
                stop = hard_stop
                break
            self.now = t
            handlers[kind](obj)
            if self.progress is not None and t >= next_report:
                next_report = t + 3600.0
                self.progress(min(1.0, t / horizon) if horizon else 1.0)
        else:
            stop = max(horizon, self.now)
        return self.finish(stop)

    def _settled(self) -> bool:
        """Nothing left that costs money beyond the pool's minimum."""
        if self.policy == "no-warm-pool":
            return not self.live
        return len(self.live) <= self.cfg.pool.min_instances

    def on_arrive(self, job: object) -> None:
        assert isinstance(job, _Job)
        self.recent.append((job.tj.t, job.rj))
        if self.policy == "no-warm-pool":
            self.launch(dedicated=job)
        self.queue[job.tj.job_id] = job
        self.arm_scheduler()
        self.arm_pool()

    def on_sample(self, _: object) -> None:
        self.res.series.append((self.now, len(self.queue), len(self.live)))
        self.push(self.now + self.cfg.sample_interval_s, _SAMPLE)

    # -- instances -----------------------------------------------------------------------------

    def launch(self, dedicated: _Job | None = None) -> _Instance:
        n = self.launches
        self.launches += 1
        r = random.Random(f"{self.seed}:launch:{n}")
        m = self.cfg.market
        offers = []
        for k in range(max(1, m.offers_per_launch)):
            on_demand = m.price_per_hour * r.uniform(*m.price_spread)
            reliability = r.uniform(*m.reliability_range)
            offers.append(
                Offer(
                    id=k,
                    gpu_name="RTX 4090",
                    num_gpus=1,
                    gpu_ram_gb=24.0,
                    price_per_hour=on_demand,
                    reliability=reliability,
                    verified=True,
                    dlperf=100.0,
                    min_bid=on_demand * r.uniform(*m.bid_fraction),
                )
            )
        filters = replace(_SIM_FILTERS, interruptible=self.cfg.interruptible, bid_margin=self.cfg.bid_margin)
        offer = rank_offers(offers, filters)[0]  # the VastAI provider rents the first it can
        price = rental_price(offer, filters)
        assert price is not None  # rank_offers accepts only offers it can price
        # an offer's unreliability scales its odds of failing (1.0 at the middle of the range)
        lo, hi = m.reliability_range
        odds = (1.0 - offer.reliability) / max(1e-9, 1.0 - (lo + hi) / 2)
        inst = _Instance(
            iid=f"i{n:05d}",
            created=self.now,
            price=price,
            bw=min(1e9, max(10e6, r.lognormvariate(math.log(m.bandwidth_median), m.bandwidth_sigma))),
            load_rate=m.load_bytes_per_second * r.uniform(*m.load_spread),
            dedicated=dedicated,
        )
        fate = r.random()
        pull = r.lognormvariate(math.log(m.pull_median_s), m.provision_sigma)
        boot = r.lognormvariate(math.log(m.boot_median_s), m.provision_sigma)
        life = r.expovariate(1.0 / (m.mean_lifetime_hours * 3600.0))
        outbid = r.expovariate(m.outbid_per_hour / 3600.0) if m.outbid_per_hour > 0 else math.inf
        if self.cfg.interruptible and outbid < life:
            life = outbid
            inst.outbid = True
        never_running = fate < m.never_running_prob * odds
        never_ready = not never_running and fate < (m.never_running_prob + m.never_ready_prob) * odds
        if not never_running and pull < m.provision_timeout_s:
            inst.running_at = inst.gpu_since = self.now + pull
        self.instances[inst.iid] = inst
        self.live[inst.iid] = inst
        if never_running or never_ready or pull + boot >= m.provision_timeout_s:
            self.push(self.now + m.provision_timeout_s, _TIMEOUT, inst)
        else:
            self.push(self.now + pull + boot, _READY, inst)
            self.push(self.now + pull + boot + life, _DIE, inst)
        return inst

    def _close_gpu_span(self, inst: _Instance) -> None:
        if inst.gpu_since is not None and self.now > inst.gpu_since:
            inst.gpu_spans.append((inst.gpu_since, self.now))
        inst.gpu_since = None

    def terminate(self, inst: _Instance) -> None:
        inst.state = InstanceState.TERMINATED
        inst.ended = self.now
        self._close_gpu_span(inst)
        self.live.pop(inst.iid, None)
        self.parked.pop(inst.iid, None)

    def park(self, inst: _Instance) -> None:
        """Stop an idle instance, keeping its disk: storage is billed, the GPU is not."""
        inst.state = InstanceState.STOPPED
        inst.parked_at = self.now
        inst.idle_since = None
        inst.loaded = None  # VRAM does not survive a stop
        self._close_gpu_span(inst)
        self.live.pop(inst.iid, None)
        self.parked[inst.iid] = inst
        self.res.parks += 1

    def resume(self, inst: _Instance) -> None:
        m = self.cfg.market
        r = random.Random(f"{self.seed}:resume:{inst.iid}:{inst.resumes}")
        inst.resumes += 1
        parked_hours = (self.now - (inst.parked_at or self.now)) / 3600.0
        fails = inst.lost or r.random() < 1.0 - math.exp(-m.resume_fail_per_hour * parked_hours)
        took = r.lognormvariate(math.log(m.resume_median_s), m.provision_sigma)
        del self.parked[inst.iid]
        self.live[inst.iid] = inst
        inst.state = InstanceState.PROVISIONING
        inst.parked_at = None
        self.res.resumes += 1
        if fails or took >= m.resume_timeout_s:
            self.push(self.now + m.resume_timeout_s, _TIMEOUT, inst)
        else:
            inst.gpu_since = self.now  # running again at once; the boot is billed
            self.push(self.now + took, _READY, inst)

    def on_ready(self, inst: object) -> None:
        assert isinstance(inst, _Instance)
        if inst.state != InstanceState.PROVISIONING:
            return
        inst.state = InstanceState.IDLE
        inst.idle_since = self.now
        inst.bg_free_at = self.now
        # the worker fetches the pool's preload models in the background as it starts taking jobs
        # (worker/agent.py): one after another, sharing the link with a job's own downloads
        for key, size in self.preload:
            if key not in inst.cache:  # a resumed instance still has them on disk
                self._background_download(inst, key, size)
        if self.res.first_ready_at is None:
            self.res.first_ready_at = self.now
        if inst.dedicated is not None:
            self.start_job(inst.dedicated, inst)

    def on_timeout(self, inst: object) -> None:
        assert isinstance(inst, _Instance)
        if inst.state != InstanceState.PROVISIONING:
            return
        if inst.resumes:
            self.res.resume_failures += 1
        else:
            self.res.never_ready += 1
        self.terminate(inst)
        if inst.dedicated is not None:  # no-warm-pool: try another instance for the job
            inst.dedicated.attempts += 1
            self.launch(dedicated=inst.dedicated)

    def on_die(self, inst: object) -> None:
        assert isinstance(inst, _Instance)
        if inst.state == InstanceState.TERMINATED:
            return
        if inst.state == InstanceState.STOPPED:
            inst.lost = True  # found out at the next resume
            return
        if inst.outbid:
            self.res.outbids += 1
        else:
            self.res.deaths += 1
        job = inst.job
        self.terminate(inst)
        if job is not None:
            self.res.requeued += 1
            job.attempts += 1
            job.start = None
            job.instance = None
            if self.policy == "no-warm-pool":
                self.launch(dedicated=job)
            self.queue[job.tj.job_id] = job
            self.queue = dict(sorted(self.queue.items(), key=lambda kv: (kv[1].tj.t, kv[0])))
            self.arm_scheduler()

    # -- jobs ----------------------------------------------------------------------------------

    def _make_room(self, inst: _Instance, size: int, keep: set[str]) -> None:
        cached = [
            CachedModel(key, int(v[0]), v[1], in_use=key in keep or v[3] > self.now)  # downloading: in use
            for key, v in inst.cache.items()
        ]
        evict = plan_eviction(cached, budget_bytes=self.cfg.market.disk_budget_bytes, incoming_bytes=size)
        for key in evict or ():
            del inst.cache[key]
            if inst.loaded == key:
                inst.loaded = None
        inst.frozen = None

    def _download(
        self, inst: _Instance, key: str, size: int, keep: set[str], start: float, seconds: float
    ) -> float:
        """Put ``key`` on the instance's disk, there from ``start + seconds``; returns that time."""
        self._make_room(inst, size, keep)
        ready = start + seconds
        inst.cache[key] = [float(size), self.now, start, ready]
        inst.frozen = None
        self.res.downloaded_bytes += size
        return ready

    def _background_download(self, inst: _Instance, key: str, size: int) -> None:
        start = max(self.now, inst.bg_free_at)
        inst.bg_free_at = self._download(inst, key, size, set(), start, size / inst.bw)

    def _job_download_seconds(self, inst: _Instance, size: int, start: float) -> float:
        """A job's download shares the link (half the bandwidth) while background downloads run."""
        return size / inst.bw * (2.0 if start < inst.bg_free_at else 1.0)

    def start_job(self, job: _Job, inst: _Instance) -> None:
        del self.queue[job.tj.job_id]
        tj = job.tj
        inst.job = job
        inst.state = InstanceState.BUSY
        inst.idle_since = None
        job.instance = inst
        job.assigned = self.now
        keep = {m.key for m in tj.models}
        t = self.now  # the job's own downloads, one after another
        ready = self.now  # models already on disk or on their way (a download in progress is shared)
        cold = inst.jobs_run == 0
        for m in tj.models:
            self.res.cache_lookups += 1
            entry = inst.cache.get(m.key)
            if entry is not None and entry[2] > self.now:
                # queued behind other background downloads, not started: the job fetches it itself
                del inst.cache[m.key]
                entry = None
            if entry is not None or inst.loaded == m.key:
                self.res.cache_hits += 1
                if entry is not None:
                    entry[1] = self.now
                    ready = max(ready, entry[3])
            else:
                t = self._download(inst, m.key, m.size, keep, t, self._job_download_seconds(inst, m.size, t))
                if m.key == tj.checkpoint:
                    cold = True
        t = max(t, ready)
        if tj.checkpoint is not None and inst.loaded != tj.checkpoint:
            size = next((m.size for m in tj.models if m.key == tj.checkpoint), 0)
            t += self.cfg.market.load_base_s + size / inst.load_rate
            inst.loaded = tj.checkpoint
        if cold:
            self.res.cold_starts += 1
        inst.jobs_run += 1
        job.start = t
        end = t + tj.run_seconds
        inst.busy_until = end
        self.push(end, _DONE, (inst, job, job.attempts))

    def on_done(self, payload: object) -> None:
        assert isinstance(payload, tuple)
        inst, job, attempt = payload
        if inst.job is not job or job.attempts != attempt or inst.state == InstanceState.TERMINATED:
            return
        job.end = self.now
        assert job.start is not None
        inst.runs.append((job.tj.job_id, job.start, self.now))
        self.busy_log.append((job.assigned, self.now))
        inst.job = None
        inst.busy_until = None
        inst.state = InstanceState.IDLE
        inst.idle_since = self.now
        self.done += 1
        if inst.dedicated is not None:
            self.terminate(inst)

    # -- control loops -------------------------------------------------------------------------

    def _routable(self, inst: _Instance) -> RoutableInstance:
        busy = inst.job is not None
        until = inst.busy_until if busy else None
        return RoutableInstance(
            inst.iid,
            POOL,
            0 if busy else 1,
            until,
            inst.cached(),
            inst.loaded,
            inst.bw,
            self.routing_load_s,
        )

    def _ready(self) -> list[_Instance]:
        return [i for i in self.live.values() if i.state in (InstanceState.IDLE, InstanceState.BUSY)]

    def arm_scheduler(self) -> None:
        """Scheduler passes tick every ``scheduler_interval_s`` while jobs are queued; a pass over an
        empty queue does nothing, so none is simulated then (same outcome as ticking always)."""
        if not self.sched_armed and self.policy != "no-warm-pool":
            self.sched_armed = True
            tick = self.cfg.scheduler_interval_s
            self.push((math.floor(self.now / tick) + 1) * tick, _SCHED)

    def on_sched(self, _: object) -> None:
        if not self.queue:
            self.sched_armed = False
            return
        self.push(self.now + self.cfg.scheduler_interval_s, _SCHED)
        ready = self._ready()
        if not any(i.job is None for i in ready):
            return
        views = [self._routable(i) for i in ready]
        jobs = [j.rj for j in self.queue.values()]
        route = plan_routes if self.policy == "ours" else route_ignoring_caches
        for a in route(jobs, views, now=self.now, config=self.cfg.routing):
            self.start_job(self.queue[a.job_id], self.instances[a.instance_id])

    def _tick_after(self, t: float, tick: float) -> float:
        return (math.floor(t / tick) + 1) * tick

    def _align_prefetch(self, first_pass: float) -> None:
        """Prefetch runs on its own grid of times, as if the loop had never slept."""
        every = self.cfg.prefetch_interval_s
        self.next_prefetch = max(self.next_prefetch, math.ceil(first_pass / every - 1e-9) * every)

    def arm_pool(self) -> None:
        """Restart the pool loop's ticks after it slept (see :meth:`on_pool`)."""
        if not self.pool_armed and self.policy != "no-warm-pool":
            self.pool_armed = True
            self.pool_wake += 1  # a pending wake-up is superseded by the ticks
            first = self._tick_after(self.now, self.cfg.pool_interval_s)
            self._align_prefetch(first)
            self.push(first, _POOL)

    def on_pool(self, token: object) -> None:
        if token is not None and token != self.pool_wake:
            return  # a wake-up superseded by an arrival
        pool = self.cfg.pool
        tick = self.cfg.pool_interval_s
        if self.cfg.skip_idle_passes and not self.live and not self.queue and pool.min_instances == 0:
            horizon = pool.park_max_hours * 3600.0
            expiries = [(i.parked_at or 0.0) + horizon for i in self.parked.values()]
            if not any(e <= self.now for e in expiries):
                # Nothing runs and nothing waits: every pass until the next arrival (which re-arms
                # the loop) or the next parked instance's expiry would plan nothing, so the loop
                # sleeps until then, on the same grid of ticks.
                self.pool_armed = False
                if expiries:
                    self.pool_wake += 1
                    self.push(self._tick_after(min(expiries) - 1e-9, tick), _POOL, self.pool_wake)
                return
        if not self.pool_armed:  # woken for an expiry
            self.pool_armed = True
            self._align_prefetch(self.now)
        self.push(self.now + tick, _POOL)
        views = [
            InstanceView(
                i.iid,
                i.state,
                1 if i.job is not None else 0,
                at(i.idle_since) if i.idle_since is not None else None,
                at(i.created),
                i.price,
                at(i.parked_at) if i.parked_at is not None else None,
            )
            for i in (*self.live.values(), *self.parked.values())
        ]
        snapshot = PoolSnapshot(
            queued_jobs=len(self.queue),
            expected_job_seconds=self.expected_job_s,
            new_instance_price=self.cfg.market.price_per_hour,
            last_scale_up_at=at(self.last_scale_up) if self.last_scale_up is not None else None,
            busy_slots_recent=self.busy_slots_recent(),
        )
        for action in plan_scaling(pool, views, snapshot, now=at(self.now)):
            if isinstance(action, Launch):
                self.launch()
                self.last_scale_up = self.now
            elif isinstance(action, Resume):
                self.resume(self.parked[action.instance_id])
                self.last_scale_up = self.now
            elif isinstance(action, Park):
                if self.live[action.instance_id].job is None:
                    self.park(self.live[action.instance_id])
            elif isinstance(action, Drain):
                leaving = self.live.get(action.instance_id) or self.parked.get(action.instance_id)
                if leaving is not None and leaving.job is None:
                    self.terminate(leaving)  # an idle or parked instance goes at once
        if self.policy == "ours" and self.now >= self.next_prefetch:
            self.next_prefetch = self.now + self.cfg.prefetch_interval_s
            self.prefetch()

    def busy_slots_recent(self) -> float:
        """Mean busy slots over the last ``utilisation_window_s`` (from assignment to the end of a job)."""
        window = self.cfg.utilisation_window_s
        start = self.now - window
        log = self.busy_log
        while log and log[0][1] <= start:
            log.popleft()
        busy = sum(min(e, self.now) - max(s, start) for s, e in log)
        busy += sum(self.now - max(i.job.assigned, start) for i in self.live.values() if i.job is not None)
        return busy / window

    def prefetch(self) -> None:
        cutoff = self.now - self.cfg.recent_window_s
        while self.recent and self.recent[0][0] < cutoff:
            self.recent.popleft()
        if not self.recent:
            return
        ready = [i for i in self._ready() if i.job is None]
        if not ready:
            return
        demand = [rj for _, rj in self.recent]
        sizes = {m.key: m.size for rj in demand for m in rj.required}
        views = [self._routable(i) for i in ready]
        for p in plan_prefetch(demand, views, now=self.now, config=self.cfg.routing):
            inst = self.instances[p.instance_id]
            if p.model_key in inst.cache or inst.job is not None:
                continue
            self._background_download(inst, p.model_key, sizes[p.model_key])

    # -- results -------------------------------------------------------------------------------

    def finish(self, stop: float) -> PolicyResult:
        res = self.res
        res.sim_seconds = stop
        res.launches = self.launches
        end = at(stop)
        storage_rate = self.cfg.market.storage_per_hour / 3600.0
        for inst in self.instances.values():
            runs = [JobRun(jid, inst.iid, at(s), at(e)) for jid, s, e in inst.runs]
            ended = inst.ended if inst.ended is not None else stop
            storage = storage_rate * max(0.0, ended - inst.created)
            res.cost += storage
            res.unattributed_cost += storage
            if inst.gpu_since is not None and ended > inst.gpu_since:
                inst.gpu_spans.append((inst.gpu_since, ended))
                inst.gpu_since = None
            for span_start, span_end in inst.gpu_spans:  # GPU billed while running, not while parked
                gpu = BilledInstance(inst.iid, inst.price, at(span_start), at(span_end))
                inside = [r for r in runs if at(span_start) <= r.started_at < at(span_end)]
                ib, _ = bill(gpu, inside, now=end)
                res.cost += ib.cost
                res.unattributed_cost += ib.unattributed
                res.instance_seconds += ib.seconds
                res.run_seconds += ib.busy_seconds
        first = res.first_ready_at
        for job in self.jobs:
            if job.start is None or job.end is None:
                continue
            res.completed += 1
            wait = job.start - job.tj.t
            res.waits.append(wait)
            if first is not None and job.tj.t >= first:
                res.waits_after_first_start.append(wait)
        return res


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
    if policy == "clairvoyant":
        return simulate_clairvoyant(trace, config)
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


def with_knobs(
    config: SimConfig,
    *,
    idle_minutes: float | None = None,
    min_instances: int | None = None,
    target_wait_seconds: float | None = None,
    max_delay_seconds: float | None = None,
    scale_up_queue_threshold: int | None = None,
    target_utilisation: float | None = None,
    max_parked: int | None = None,
) -> SimConfig:
    """``target_utilisation <= 0`` turns utilisation-based scale-down off."""
    pool = config.pool
    if max_parked is not None:
        pool = replace(pool, max_parked=max_parked)
    if scale_up_queue_threshold is not None:
        pool = replace(pool, scale_up_queue_threshold=scale_up_queue_threshold)
    if target_utilisation is not None:
        pool = replace(pool, target_utilisation=target_utilisation if target_utilisation > 0 else None)
    if idle_minutes is not None:
        pool = replace(pool, idle_minutes=idle_minutes)
    if min_instances is not None:
        pool = replace(pool, min_instances=min_instances)
    if target_wait_seconds is not None:
        pool = replace(pool, target_wait_seconds=target_wait_seconds)
    routing = config.routing
    if max_delay_seconds is not None:
        routing = replace(routing, max_delay_seconds=max_delay_seconds)
    return replace(config, pool=pool, routing=routing)


def asdict_pool(config: SimConfig) -> dict[str, object]:
    """The pool and routing knobs ``ours`` ran with (for reports)."""
    pool, routing = config.pool, config.routing
    return {
        "idle_minutes": pool.idle_minutes,
        "min_instances": pool.min_instances,
        "max_instances": pool.max_instances,
        "scale_up_queue_threshold": pool.scale_up_queue_threshold,
        "target_wait_seconds": pool.target_wait_seconds,
        "target_utilisation": pool.target_utilisation,
        "max_parked": pool.max_parked,
        "max_delay_seconds": routing.max_delay_seconds,
        "rental": "interruptible" if config.interruptible else "on-demand",
    }


def percentile(values: Sequence[float], q: float) -> float:
    return _percentile(sorted(values), q)
