"""An event-driven pool on a virtual clock (policies ``ours``, ``ours-no-cache-affinity``,
``no-warm-pool``), driving the control plane's own policies and its instance lifecycle.

* An instance runs one job at a time: it downloads the job's missing models (after any prefetch in
  progress), evicting with ``domain.cache.plan_eviction`` under its disk budget, loads the
  checkpoint when another one is loaded, then runs for the trace's run time.
* Control loops: a scheduler pass every ``scheduler_interval_s`` (routing: ``plan_routes`` or
  ``route_ignoring_caches``), a pool pass every ``pool_interval_s`` (``plan_scaling``, and
  ``plan_prefetch`` once per heartbeat interval), sampling of the time series.
* Information parity: the policies see what the live control plane would, through
  ``domain.estimates``: an instance is an :class:`~swarmstation.domain.estimates.InstanceObservation`
  (its cache and loaded checkpoint as of its last heartbeat, its download rate as measured from
  its finished jobs, 0 until then, the time its job was reported started, which the worker does
  before downloading), a job's run time is the median of the last 50 completed, prefetch demand the
  last 200 submitted. The simulator's own truths (bandwidth, real end times) never reach a policy.
* The live defaults (``Settings``): provisioning and resume timeouts, checkpoint load estimate,
  loop intervals. An instance that dies is noticed as the live control plane notices it: a host
  that vanishes after ``heartbeat_timeout_s`` without heartbeats, an outbid one at the next pool
  pass (the provider reports it stopped); until then routing may still send it work, and its job
  is requeued only then. A job uploads its output after running (the instance stays busy).
* Every change of an instance's state goes through ``domain.states.INSTANCE``, the table the
  control plane uses: a move the control plane could not make fails the simulation.
* A job that loses its instance returns to the queue (its wait still counts from its arrival).
* Billing: ``domain.pricing.bill`` per span of GPU time (``dph_total``, storage included), storage
  alone while not running (the image pull, parked).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from swarmstation.domain import estimates, forecast, startup
from swarmstation.domain.cache import CachedModel, plan_eviction
from swarmstation.domain.pricing import BilledInstance, JobRun, bill
from swarmstation.domain.routing import (
    Assign,
    ModelNeed,
    RoutableInstance,
    RoutableJob,
    plan_prefetch,
    plan_routes,
    route_ignoring_caches,
)
from swarmstation.domain.scaling import (
    Drain,
    InstanceView,
    Launch,
    Park,
    PoolSnapshot,
    Resume,
    plan_scaling,
)
from swarmstation.domain.states import INSTANCE, InstanceState, InstanceTrigger
from swarmstation.sim.config import POOL, SimConfig, at
from swarmstation.sim.market import draw_rental, draw_resume
from swarmstation.sim.result import PolicyResult
from swarmstation.sim.trace import Trace, TraceJob, generate

Progress = Callable[[float], None]


@dataclass(eq=False, slots=True)
class SimJob:
    tj: TraceJob
    rj: RoutableJob
    attempts: int = 0
    start: float | None = None
    end: float | None = None
    instance: SimInstance | None = None
    assigned: float = 0.0
    fetch_bytes: int = 0  # what this attempt downloaded itself
    models_ready: float = 0.0  # when its models were on disk (the worker's model_fetch_seconds)


@dataclass(eq=False, slots=True)
class SimInstance:
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
    job: SimJob | None = None
    busy_until: float | None = None
    idle_since: float | None = None
    bg_free_at: float = 0.0  # when its background downloads (preload, prefetch) are done
    dedicated: SimJob | None = None
    runs: list[tuple[str, float, float]] = field(default_factory=list)
    jobs_run: int = 0
    # what the control plane knows: heartbeats every heartbeat_interval_s from `hb0` (when its
    # worker became ready), the checkpoint loaded before `loaded_at`, the measured download rate
    hb0: float = 0.0
    loaded_at: float = 0.0
    loaded_before: str | None = None
    measured_bps: float = 0.0
    died_at: float | None = None  # its host died / it was outbid; noticed later (_LOST)
    baked: bool = False  # a prebuilt image: the preload models are on disk when it is ready
    start_at: float = 0.0  # when its current start (launch or resume) began

    def cached(self) -> frozenset[str]:
        if self.frozen is None:
            self.frozen = frozenset(self.cache)
        return self.frozen


_ARRIVE, _SCHED, _POOL, _READY, _TIMEOUT, _DIE, _DONE, _SAMPLE, _LOST = range(9)


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
        self.instances: dict[str, SimInstance] = {}
        self.live: dict[str, SimInstance] = {}
        self.parked: dict[str, SimInstance] = {}
        self.sched_armed = True
        self.next_prefetch = 0.0
        self.pool_armed = True
        self.pool_wake = 0
        self.queue: dict[str, SimJob] = {}  # in live queue order (queued_at: a requeued job goes last)
        # what the live control plane reads back: the last submitted jobs, newest first, and the
        # run seconds of the last completed ones
        self.submitted: deque[SimJob] = deque(maxlen=config.prefetch_demand_jobs)
        self.completed_runs: deque[float] = deque(maxlen=config.run_window_jobs)
        self.expected_s = estimates.expected_run_seconds(())
        self.launches = 0
        self.done = 0
        self.last_scale_up: float | None = None
        self.busy_log: deque[tuple[float, float]] = deque()  # (assigned, done) of finished jobs
        self.jobs = [
            SimJob(tj, RoutableJob(tj.job_id, POOL, tj.t, tj.models, tj.checkpoint, self.expected_s))
            for tj in trace.jobs
        ]
        # pre-warm: the arrivals the forecaster reads (history before t=0, then the trace's as they come)
        self.arrivals: list[float] = []
        if config.pool.prewarm and trace.preset and config.forecast_history_days > 0:
            days = config.forecast_history_days
            past = generate(trace.preset, days=days, seed=seed + 10_000)
            self.arrivals = [j.t - days * 86400.0 for j in past.jobs]
        self.profile: forecast.Profile | None = None
        self.forecast_at = -math.inf
        self.forecast_n = 0
        no_preload = policy == "no-warm-pool" or not config.preload_tool_models
        self.preload = () if no_preload else pool_preload(trace)
        self.res = PolicyResult(policy, len(self.jobs), 0, 0.0, [])
        # finished starts (domain.startup.StartOutcome), the last `window` of each kind, as the live
        # pool loop reads them from the instance transitions; the estimates cached until one is added
        window = max(1, config.start.window)
        self.starts: dict[startup.StartKind, deque[startup.StartOutcome]] = {
            kind: deque(maxlen=window) for kind in startup.StartKind
        }
        self._start_estimates: tuple[float, float, float] | None = None

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
            _LOST: self.on_lost,
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
        assert isinstance(job, SimJob)
        self.submitted.appendleft(job)
        self.arrivals.append(job.tj.t)
        if self.policy == "no-warm-pool":
            self.launch(dedicated=job)
        self.queue[job.tj.job_id] = job
        self.arm_scheduler()
        self.arm_pool()

    def on_sample(self, _: object) -> None:
        self.res.series.append((self.now, len(self.queue), len(self.live)))
        self.push(self.now + self.cfg.sample_interval_s, _SAMPLE)

    # -- instances -----------------------------------------------------------------------------

    def launch(self, dedicated: SimJob | None = None) -> SimInstance:
        n = self.launches
        self.launches += 1
        m = self.cfg.market
        rental = draw_rental(
            m, n, seed=self.seed, interruptible=self.cfg.interruptible, bid_margin=self.cfg.bid_margin
        )
        inst = SimInstance(
            iid=f"i{n:05d}",
            created=self.now,
            price=rental.price,
            bw=rental.bandwidth,
            load_rate=rental.load_rate,
            dedicated=dedicated,
            outbid=rental.outbid,
        )
        pull, boot = rental.pull_s, rental.boot_s
        if self.cfg.prebuilt_image and dedicated is None and self.preload:
            # the image brings the preload models: a longer pull (not GPU-billed), a shorter boot
            inst.baked = True
            pull += sum(size for _, size in self.preload) / rental.bandwidth
            boot *= m.prebuilt_boot_factor
        timeout = self.cfg.provision_timeout_s
        if not rental.never_running and pull < timeout:
            inst.running_at = inst.gpu_since = self.now + pull
        inst.start_at = self.now
        self.instances[inst.iid] = inst
        self.live[inst.iid] = inst
        if rental.never_running or rental.never_ready or pull + boot >= timeout:
            self.push(self.now + timeout, _TIMEOUT, inst)
        else:
            self.push(self.now + pull + boot, _READY, inst)
            self.push(self.now + pull + boot + rental.life_s, _DIE, inst)
        return inst

    def _close_gpu_span(self, inst: SimInstance) -> None:
        if inst.gpu_since is not None and self.now > inst.gpu_since:
            inst.gpu_spans.append((inst.gpu_since, self.now))
        inst.gpu_since = None

    def terminate(self, inst: SimInstance, *why: InstanceTrigger) -> None:
        """Destroy `inst`, after the triggers that took it out (`why`), as the control plane does:
        an instance that dies or times out is UNHEALTHY first, an idle one is drained."""
        for trigger in why:
            INSTANCE.apply(inst, trigger)
        INSTANCE.apply(inst, InstanceTrigger.DESTROY)
        inst.ended = self.now
        self._close_gpu_span(inst)
        self.live.pop(inst.iid, None)
        self.parked.pop(inst.iid, None)

    def park(self, inst: SimInstance) -> None:
        """Stop an idle instance, keeping its disk: storage is billed, the GPU is not."""
        INSTANCE.apply(inst, InstanceTrigger.PARK)
        if inst.died_at is not None:
            inst.lost = True  # parked before anyone noticed its host was gone
            inst.died_at = None
        inst.parked_at = self.now
        inst.idle_since = None
        inst.loaded = inst.loaded_before = None  # VRAM does not survive a stop
        self._close_gpu_span(inst)
        self.live.pop(inst.iid, None)
        self.parked[inst.iid] = inst
        self.res.parks += 1

    def resume(self, inst: SimInstance) -> None:
        m = self.cfg.market
        parked_hours = (self.now - (inst.parked_at or self.now)) / 3600.0
        fails, took = draw_resume(
            m, seed=self.seed, iid=inst.iid, resumes=inst.resumes, parked_hours=parked_hours, lost=inst.lost
        )
        inst.resumes += 1
        del self.parked[inst.iid]
        self.live[inst.iid] = inst
        INSTANCE.apply(inst, InstanceTrigger.RESUME)
        inst.parked_at = None
        inst.start_at = self.now
        self.res.resumes += 1
        # the control plane sees no reason, only that no worker registered: past the bound from the
        # pool's past resumes it starts a replacement (resume_overdue), at the resume timeout it
        # gives the resume up
        if fails or took >= self.cfg.resume_timeout_s:
            if not fails:
                self.res.resumes_given_up_slow += 1
                inst.gpu_since = self.now  # it runs at the provider, billed, until given up
            self.push(self.now + self.cfg.resume_timeout_s, _TIMEOUT, inst)
        else:
            inst.gpu_since = self.now  # running again at once; the boot is billed
            self.push(self.now + took, _READY, inst)

    def resume_overdue(self, inst: SimInstance) -> bool:
        """A resume still without a ready worker past the bound (domain.startup.resume_give_up_seconds)
        at this pool pass: scaling counts it as covering nothing, so a replacement is started."""
        if (
            not self.cfg.replace_overdue_resumes
            or inst.resumes == 0
            or inst.state != InstanceState.PROVISIONING
        ):
            return False
        return startup.resume_overdue(self.now - inst.start_at, self.start_estimates()[2])

    def record_start(self, inst: SimInstance, ready: bool) -> None:
        kind = startup.StartKind.RESUME if inst.resumes else startup.StartKind.LAUNCH
        after = self.now - inst.start_at if ready else None
        self.starts[kind].append(startup.StartOutcome(kind, inst.start_at, after))
        self._start_estimates = None

    def start_estimates(self) -> tuple[float, float, float]:
        """(launch success, resume success, resume give-up seconds) from the finished starts."""
        if self._start_estimates is None:
            outcomes = [*self.starts[startup.StartKind.LAUNCH], *self.starts[startup.StartKind.RESUME]]
            cfg = self.cfg.start
            self._start_estimates = (
                startup.start_success(outcomes, startup.StartKind.LAUNCH, cfg),
                startup.start_success(outcomes, startup.StartKind.RESUME, cfg),
                startup.resume_give_up_seconds(outcomes, cfg),
            )
        return self._start_estimates

    def on_ready(self, inst: object) -> None:
        assert isinstance(inst, SimInstance)
        if inst.state != InstanceState.PROVISIONING:
            return
        INSTANCE.apply(inst, InstanceTrigger.READY)
        self.record_start(inst, ready=True)
        inst.idle_since = self.now
        inst.bg_free_at = self.now
        inst.hb0 = self.now  # the worker registers and heartbeats from now on
        # the worker fetches the pool's preload models in the background as it starts taking jobs
        # (worker/agent.py): one after another, sharing the link with a job's own downloads
        for key, size in self.preload:
            if key in inst.cache:  # a resumed instance still has them on disk
                continue
            if inst.baked and inst.resumes == 0:
                self._make_room(inst, size, set())
                inst.cache[key] = [float(size), self.now, self.now, self.now]  # in the image
                inst.frozen = None
                self.res.downloaded_bytes += size
            else:
                self._background_download(inst, key, size)
        if self.res.first_ready_at is None:
            self.res.first_ready_at = self.now
        if inst.dedicated is not None:
            self.start_job(inst.dedicated, inst)

    def on_timeout(self, inst: object) -> None:
        assert isinstance(inst, SimInstance)
        if inst.state != InstanceState.PROVISIONING:
            return
        if inst.resumes:
            self.res.resume_failures += 1
        else:
            self.res.never_ready += 1
        self.record_start(inst, ready=False)
        self.terminate(inst, InstanceTrigger.STARTUP_TIMEOUT)
        if inst.dedicated is not None:  # no-warm-pool: try another instance for the job
            inst.dedicated.attempts += 1
            self.launch(dedicated=inst.dedicated)

    def last_heartbeat(self, inst: SimInstance) -> float:
        every = self.cfg.heartbeat_interval_s
        return inst.hb0 + math.floor((self.now - inst.hb0) / every + 1e-9) * every

    def on_die(self, inst: object) -> None:
        """The host died or outbid the instance. The control plane finds out later (:meth:`on_lost`):
        an outbid instance at the next pool pass (the provider reports it stopped), a vanished host
        when its heartbeats have been missing for ``heartbeat_timeout_s`` (the scheduler's next pass)."""
        assert isinstance(inst, SimInstance)
        if inst.state == InstanceState.TERMINATED:
            return
        if inst.state == InstanceState.STOPPED:
            inst.lost = True  # found out at the next resume
            return
        inst.died_at = self.now
        if inst.outbid:
            noticed = self._tick_after(self.now, self.cfg.pool_interval_s)
        else:
            silent_since = self.last_heartbeat(inst) + self.cfg.heartbeat_timeout_s
            noticed = self._tick_after(silent_since - 1e-9, self.cfg.scheduler_interval_s)
        self.push(noticed, _LOST, inst)

    def on_lost(self, inst: object) -> None:
        assert isinstance(inst, SimInstance)
        if inst.died_at is None or inst.state in (InstanceState.TERMINATED, InstanceState.STOPPED):
            return
        if inst.outbid:
            self.res.outbids += 1
        else:
            self.res.deaths += 1
        job = inst.job
        self.terminate(inst, InstanceTrigger.INSTANCE_LOST)
        if job is not None:
            self.res.requeued += 1
            job.attempts += 1
            job.start = None
            job.instance = None
            if self.policy == "no-warm-pool":
                self.launch(dedicated=job)
            job.rj = replace(job.rj, queued_at=self.now)  # requeue_job sets queued_at = now
            self.queue[job.tj.job_id] = job
            self.arm_scheduler()

    # -- jobs ----------------------------------------------------------------------------------

    def _make_room(self, inst: SimInstance, size: int, keep: set[str]) -> None:
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
        self, inst: SimInstance, key: str, size: int, keep: set[str], start: float, seconds: float
    ) -> float:
        """Put ``key`` on the instance's disk, there from ``start + seconds``; returns that time."""
        self._make_room(inst, size, keep)
        ready = start + seconds
        inst.cache[key] = [float(size), self.now, start, ready]
        inst.frozen = None
        self.res.downloaded_bytes += size
        return ready

    def _background_download(self, inst: SimInstance, key: str, size: int) -> None:
        start = max(self.now, inst.bg_free_at)
        inst.bg_free_at = self._download(inst, key, size, set(), start, size / inst.bw)

    def _job_download_seconds(self, inst: SimInstance, size: int, start: float) -> float:
        """A job's download shares the link (half the bandwidth) while background downloads run."""
        return size / inst.bw * (2.0 if start < inst.bg_free_at else 1.0)

    def start_job(self, job: SimJob, inst: SimInstance) -> None:
        del self.queue[job.tj.job_id]
        tj = job.tj
        inst.job = job
        INSTANCE.apply(inst, InstanceTrigger.ASSIGN)
        inst.idle_since = None
        job.instance = inst
        job.assigned = self.now  # the worker reports `started` at once, before downloading
        if inst.died_at is not None:
            return  # routed to a machine that is gone: the job sits there until it is noticed
        keep = {m.key for m in tj.models}
        t = self.now  # the job's own downloads, one after another
        ready = self.now  # models already on disk or on their way (a download in progress is shared)
        cold = inst.jobs_run == 0
        job.fetch_bytes = 0
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
                job.fetch_bytes += m.size
                if m.key == tj.checkpoint:
                    cold = True
        t = max(t, ready)
        job.models_ready = t
        if tj.checkpoint is not None and inst.loaded != tj.checkpoint:
            size = next((m.size for m in tj.models if m.key == tj.checkpoint), 0)
            t += self.cfg.market.load_base_s + size / inst.load_rate
            inst.loaded_before, inst.loaded, inst.loaded_at = inst.loaded, tj.checkpoint, t
        if cold:
            self.res.cold_starts += 1
        inst.jobs_run += 1
        job.start = t
        end = t + tj.run_seconds + self.cfg.market.output_bytes / inst.bw  # then it uploads its output
        inst.busy_until = end
        self.push(end, _DONE, (inst, job, job.attempts))

    def on_done(self, payload: object) -> None:
        assert isinstance(payload, tuple)
        inst, job, attempt = payload
        if inst.job is not job or job.attempts != attempt or inst.state == InstanceState.TERMINATED:
            return
        if inst.died_at is not None:
            return  # it died first: requeued when that is noticed
        job.end = self.now
        assert job.start is not None
        inst.runs.append((job.tj.job_id, job.start, self.now))
        self.busy_log.append((job.assigned, self.now))
        # what the worker reports with `complete`: run seconds, bytes fetched and the fetch's time
        self.completed_runs.appendleft(job.tj.run_seconds)
        self.expected_s = estimates.expected_run_seconds(self.completed_runs)
        rate = estimates.measured_rate(inst.measured_bps, job.fetch_bytes, job.models_ready - job.assigned)
        inst.measured_bps = rate or 0.0
        inst.job = None
        inst.busy_until = None
        INSTANCE.apply(inst, InstanceTrigger.RELEASE)
        inst.idle_since = self.now
        self.done += 1
        if inst.dedicated is not None:
            self.terminate(inst)

    # -- control loops -------------------------------------------------------------------------

    def observe(self, inst: SimInstance) -> estimates.InstanceObservation:
        """What the live control plane would know of ``inst`` now: the models and checkpoint its last
        heartbeat reported, when its job was reported started, the rate measured so far."""
        hb = self.last_heartbeat(inst)
        reported = frozenset(key for key, v in inst.cache.items() if v[3] <= hb)
        loaded = inst.loaded if inst.loaded_at <= hb else inst.loaded_before
        return estimates.InstanceObservation(
            inst.iid,
            POOL,
            self.cfg.pool.slots_per_instance,
            (inst.job.assigned,) if inst.job is not None else (),
            reported,
            loaded,
            inst.measured_bps,
        )

    def _routable(self, inst: SimInstance, expected_run_seconds: float | None = None) -> RoutableInstance:
        return estimates.routable_instance(
            self.observe(inst),
            expected_run_seconds=self.expected_s if expected_run_seconds is None else expected_run_seconds,
            checkpoint_load_seconds=self.cfg.checkpoint_load_s,
        )

    def _ready(self) -> list[SimInstance]:
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
        jobs = []
        for j in itertools.islice(self.queue.values(), self.cfg.queued_batch):
            if j.rj.expected_run_seconds != self.expected_s:
                j.rj = replace(j.rj, expected_run_seconds=self.expected_s)
            jobs.append(j.rj)
        for a in self.route(jobs, views):
            self.start_job(self.queue[a.job_id], self.instances[a.instance_id])

    def route(self, jobs: list[RoutableJob], views: list[RoutableInstance]) -> list[Assign]:
        """The scheduler's routing call: the same snapshot types the live scheduler builds."""
        policy = plan_routes if self.policy == "ours" else route_ignoring_caches
        return policy(jobs, views, now=self.now, config=self.cfg.routing)

    def _tick_after(self, t: float, tick: float) -> float:
        return (math.floor(t / tick) + 1) * tick

    def _align_prefetch(self, first_pass: float) -> None:
        """Prefetch runs on its own grid of times, as if the loop had never slept."""
        every = self.cfg.heartbeat_interval_s
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
        if (
            self.cfg.skip_idle_passes
            and not self.live
            and not self.queue
            and pool.min_instances == 0
            and self.forecast_instances() == 0
        ):
            horizon = pool.park_max_hours * 3600.0
            expiries = [(i.parked_at or 0.0) + horizon for i in self.parked.values()]
            if pool.prewarm:  # the next forecast may ask for instances
                expiries.append(self.forecast_at + self.cfg.forecast_interval_s)
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
                resuming=i.resumes > 0 and i.state == InstanceState.PROVISIONING,
                overdue=self.resume_overdue(i),
            )
            for i in (*self.live.values(), *self.parked.values())
        ]
        p_launch, p_resume = self.start_estimates()[:2] if self.cfg.count_start_success else (1.0, 1.0)
        prices = [i.price for i in (*self.live.values(), *self.parked.values())]
        snapshot = PoolSnapshot(  # as control/pools.py builds it (no price cap on this pool)
            queued_jobs=len(self.queue),
            expected_job_seconds=self.expected_s,
            new_instance_price=max(prices) if prices else 0.0,
            last_scale_up_at=at(self.last_scale_up) if self.last_scale_up is not None else None,
            busy_slots_recent=self.busy_slots_recent(),
            forecast_instances=self.forecast_instances() if pool.prewarm else None,
            launch_success=p_launch,
            resume_success=p_resume,
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
                    # an idle or parked instance goes at once: drained (nothing to finish), destroyed
                    self.terminate(leaving, InstanceTrigger.DRAIN)
        if self.policy == "ours" and self.now >= self.next_prefetch:
            # on a fixed grid (multiples of the interval): the same whether or not the loop slept
            # (a grid of "last + interval" drifted with the pool ticks, and waking realigned it)
            self.next_prefetch = self._tick_after(self.now, self.cfg.heartbeat_interval_s)
            self.prefetch()

    def forecast_instances(self) -> int:
        """domain.forecast.prewarm_instances, re-read every ``forecast_interval_s`` (its profile
        rebuilt once per bucket: the same as rebuilding it every time); 0 with pre-warm off."""
        if not self.cfg.pool.prewarm or self.now >= self.trace.duration:
            return 0  # past the trace's end no job comes: capacity for a forecast would be billed for nothing
        every = self.cfg.forecast_interval_s
        due = math.floor(self.now / every + 1e-9) * every
        if due > self.forecast_at:
            fc = self.cfg.forecast
            bucket = math.floor(due / fc.bucket_seconds + 1e-9)
            if self.profile is None or self.profile.built_for_bucket != bucket:
                self.profile = forecast.build_profile(self.arrivals, now=due, config=fc)
            self.forecast_at = due
            self.forecast_n = forecast.prewarm_instances(
                self.arrivals,
                now=due,
                expected_job_seconds=self.expected_s,
                slots_per_instance=self.cfg.pool.slots_per_instance,
                config=fc,
                profile=self.profile,
            )
        return self.forecast_n

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
        """control/scheduler.plan_prefetches: the last submitted jobs' models onto IDLE instances
        (the hints reach the worker with its next heartbeat: this runs once per heartbeat interval)."""
        if not self.submitted:
            return
        ready = [i for i in self._ready() if i.job is None]
        if not ready:
            return
        recent = estimates.prefetch_demand(self.submitted, limit=self.cfg.prefetch_demand_jobs)
        demand = [j.rj for j in recent]
        sizes = {m.key: m.size for rj in demand for m in rj.required}
        views = [self._routable(i, estimates.DEFAULT_RUN_SECONDS) for i in ready]
        for p in plan_prefetch(demand, views, now=self.now, config=self.cfg.routing):
            inst = self.instances[p.instance_id]
            if p.model_key in inst.cache or inst.job is not None or inst.died_at is not None:
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
            if inst.gpu_since is not None and ended > inst.gpu_since:
                inst.gpu_spans.append((inst.gpu_since, ended))
                inst.gpu_since = None
            # dph_total includes the disk while running: storage alone is paid the rest of the time
            running = sum(e - b for b, e in inst.gpu_spans)
            storage = storage_rate * max(0.0, ended - inst.created - running)
            res.cost += storage
            res.unattributed_cost += storage
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
