"""The pool loop: keep each pool at the size the scaling policy asks for, and sweep what died.

One tick, for each compute provider: (1) reconcile the provider's list with the database —
instances whose processes exited or that the provider lost become UNHEALTHY (their jobs are
requeued by the scheduler), instances found by label whose provider id was never recorded (a
crash between create and commit) are adopted, instances the database does not know are
destroyed once they have been seen for `orphan_grace_seconds`; (2) destroy UNHEALTHY instances
and DRAINING ones that have finished their jobs, then mark them TERMINATED; (3) ask
`plan_scaling` for each pool and launch, resume, park or drain. Attached (static) instances
belong to no provider, so (1) and (2) never see them; (3) counts them and never drains or parks
them (`InstanceView.static`); a detached one is TERMINATED once its jobs are done.

Parking. A parked instance is STOPPED here and stopped at the provider with its disk (its model
cache), so it costs storage only. Resuming it makes it PROVISIONING again (`info["resumed_at"]`)
and starts it at the provider; its worker registers again with the same token, as a new one does.
A resume can fail at the provider (the GPU was rented out meanwhile): a failed start call, a
provider status that says it exited or failed (reconcile), or no ready worker within
`resume_timeout_seconds` makes it UNHEALTHY, it is destroyed, and the policy resumes or launches
another. With `pool_replace_overdue_resumes` it is replaced sooner: once a resume has gone
without a ready worker past the bound derived from the pool's own past resume times
(`domain.startup.resume_give_up_seconds`, read from the instance transitions:
`resume_give_up_factor` times their median, `resume_heartbeat_timeout_seconds` until five have
succeeded), scaling counts it as covering nothing (`InstanceView.overdue`) and resumes or
launches another while it may still come up. With `pool_count_start_success`, scaling also
counts an instance still starting by its kind's share of past starts that became ready
(`start_success_window`), so a pool whose launches often fail asks for more of them. Both are off
by default: in the simulator (which does the same, README "Simulator") neither lowered the prior
preset's p95 wait. Reconcile stops again a STOPPED instance that the provider still runs (a lost
stop call). A parked instance that the policy drains is destroyed by (2).

Stopped behind our back. An instance that we did not park (live here: PROVISIONING to DRAINING,
no `parked_at`) and that the provider reports stopped runs nothing: an interruptible (bid)
instance that was outbid, or one the host stopped. Reconcile makes it UNHEALTHY at once (rather
than after the heartbeat or provisioning timeout), so that the scheduler requeues its jobs, (2)
destroys it (a stopped instance still bills storage, and an outbid one may not run again for
hours) and the policy launches a replacement. A resumed instance is exempt until its worker is
back: right after our start the provider may still show it stopped, and the resume timeout covers
a start that never happens.

Provider calls happen outside database transactions. A row is written before a launch, so a
crash between the two leaves a PROVISIONING row that the provisioning timeout sweeps, never an
instance we cannot name. Likewise the state changes before a stop or a start: a crash in between
leaves a STOPPED instance still running (reconcile stops it again) or a resumed one still stopped
(the resume timeout gives it up).
"""

from __future__ import annotations

import bisect
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from swarmstation.auth import WORKER_TOKEN_PREFIX, hash_secret, new_secret
from swarmstation.config import Settings
from swarmstation.control.instances import move_instance
from swarmstation.control.jobs import active_job_count
from swarmstation.control.replicas import ReplicaPresence
from swarmstation.domain import estimates, forecast, startup
from swarmstation.domain.offers import OfferFilters
from swarmstation.domain.replicas import NoSharedAddress, worker_address
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
from swarmstation.domain.states import (
    LEASED_JOB_STATES,
    LIVE_INSTANCE_STATES,
    InstanceState,
    InstanceTrigger,
    JobState,
)
from swarmstation.domain.tools import tool_from_dict
from swarmstation.domain.workflow import required_models
from swarmstation.providers.base import ComputeProvider, LaunchSpec, ProviderError
from swarmstation.providers.local import preload_env
from swarmstation.providers.static import STATIC_PROVIDER, finish_detached
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, InstanceTransition, Job, Pool, Tool

log = logging.getLogger(__name__)

OnstartRenderer = Callable[[Pool], str]


def pool_config(pool: Pool, *, prewarm: bool = False) -> PoolConfig:
    return PoolConfig(
        name=pool.name,
        min_instances=pool.min_instances,
        max_instances=pool.max_instances,
        scale_up_queue_threshold=pool.scale_up_queue_threshold,
        idle_minutes=pool.idle_minutes,
        slots_per_instance=pool.slots_per_instance,
        target_wait_seconds=pool.target_wait_seconds,
        max_spend_per_hour=pool.max_spend_per_hour,
        max_lifetime_hours=pool.max_lifetime_hours,
        scale_cooldown_seconds=pool.scale_cooldown_seconds,
        target_utilisation=pool.target_utilisation,
        utilisation_grace_seconds=pool.utilisation_grace_seconds,
        max_parked=pool.max_parked,
        park_max_hours=pool.park_max_hours,
        prewarm=prewarm,
    )


# Set from the pool's own columns (validated by the API), never from its gpu_filters JSON.
RENTAL_FILTERS = frozenset({"interruptible", "bid_margin"})


def offer_filters(pool: Pool) -> OfferFilters:
    known = set(OfferFilters.__dataclass_fields__) - RENTAL_FILTERS
    values: dict[str, Any] = {}
    for k, v in (pool.gpu_filters or {}).items():
        if k in known:
            values[k] = tuple(v) if isinstance(v, list) else v
    return OfferFilters(
        **values,
        interruptible=pool.rental == "interruptible",
        bid_margin=pool.bid_margin if pool.bid_margin is not None else 1.1,
    )


def preload_models(s: Session, pool: str) -> tuple[tuple[str, str], ...]:
    """The pool's preload list plus the models of every tool the pool serves."""
    wanted: set[tuple[str, str]] = set()
    row = s.get(Pool, pool)
    for m in (row.preload_models if row is not None else None) or []:
        if isinstance(m, dict) and m.get("folder") and m.get("name"):
            wanted.add((str(m["folder"]), str(m["name"])))
    for tool in s.scalars(select(Tool).where(Tool.pool == pool)):
        try:
            graph = tool_from_dict(tool.spec).workflow
        except ValueError:
            continue
        wanted.update((m.folder, m.name) for m in required_models(graph))
    return tuple(sorted(wanted))


def start_config(settings: Settings) -> startup.StartConfig:
    """The start estimates' knobs (domain/startup.py) from the settings; the simulator uses the
    same defaults (sim/config.live_start_config)."""
    return startup.StartConfig(
        resume_timeout_seconds=settings.resume_timeout_seconds,
        fallback_seconds=settings.resume_heartbeat_timeout_seconds,
        factor=settings.resume_give_up_factor,
        window=settings.start_success_window,
    )


#: how far back the instance transitions are read for past starts
START_HISTORY_SECONDS = 7 * 86400.0
_START_ROWS = (InstanceState.IDLE, InstanceState.UNHEALTHY, InstanceState.TERMINATED)


def start_outcomes(s: Session, pool: str, now: datetime) -> list[startup.StartOutcome]:
    """The pool's finished starts (launches and resumes) of the last `START_HISTORY_SECONDS`, from
    the instance transitions: what `domain.startup` estimates from."""
    since = now - timedelta(seconds=START_HISTORY_SECONDS)
    rows = s.execute(
        select(
            InstanceTransition.instance_id,
            InstanceTransition.from_state,
            InstanceTransition.to_state,
            InstanceTransition.trigger,
            InstanceTransition.at,
        )
        .join(Instance, Instance.id == InstanceTransition.instance_id)
        .where(
            Instance.pool == pool,
            Instance.provider != STATIC_PROVIDER,
            InstanceTransition.at >= since,
            or_(
                InstanceTransition.from_state.is_(None),
                InstanceTransition.trigger == InstanceTrigger.RESUME,
                InstanceTransition.to_state.in_(_START_ROWS),
            ),
        )
        .order_by(InstanceTransition.instance_id, InstanceTransition.id)
    )
    return startup.outcomes_from_transitions(
        startup.Transition(iid, from_state, to_state, trigger, at.timestamp())
        for iid, from_state, to_state, trigger, at in rows
    )


def expected_job_seconds(s: Session, pool: str) -> float:
    runs = [
        float(t.get("run_seconds", 0.0))
        for t in s.scalars(
            select(Job.timings)
            .where(Job.pool == pool, Job.state == JobState.COMPLETED)
            .order_by(Job.finished_at.desc())
            .limit(estimates.RUN_WINDOW_JOBS)
        )
        if isinstance(t, dict) and t.get("run_seconds")
    ]
    return estimates.expected_run_seconds(runs)


def busy_slots_recent(s: Session, pool: str, now: datetime, window_seconds: float = 600.0) -> float:
    """The mean number of busy job slots in the pool over the last `window_seconds`.

    A job holds a slot from its assignment to an instance (the scheduler counts it against the
    instance from then on) until it finishes, or until now while it is still leased. Only the jobs
    whose interval overlaps the window are read. A requeued job keeps its old `assigned_at` but has
    no instance and no lease, so it does not count until it is assigned again (its earlier attempt's
    time is then lost: a slight underestimate, on the side of keeping instances)."""
    if window_seconds <= 0:
        return 0.0
    start = now - timedelta(seconds=window_seconds)
    rows = s.execute(
        select(Job.assigned_at, Job.finished_at).where(
            Job.pool == pool,
            Job.backend == "pool",
            Job.instance_id.is_not(None),
            Job.assigned_at.is_not(None),
            Job.assigned_at < now,
            or_(
                Job.finished_at > start,
                and_(Job.finished_at.is_(None), Job.state.in_([st.value for st in LEASED_JOB_STATES])),
            ),
        )
    )
    busy = 0.0
    for assigned_at, finished_at in rows:
        if assigned_at is None:  # excluded by the query; this tells the type checker
            continue
        begin = max(assigned_at, start)
        end = min(finished_at or now, now)
        busy += max(0.0, (end - begin).total_seconds())
    return busy / window_seconds


class DemandForecasts:
    """Pre-warm's input, per pool: the arrival history (its jobs' ``created_at``, epoch seconds)
    read incrementally from the jobs table, its forecast profile rebuilt once per bucket, and
    ``domain.forecast.prewarm_instances`` over them, as the simulator calls it."""

    def __init__(self, config: forecast.ForecastConfig | None = None) -> None:
        self.config = config or forecast.ForecastConfig()
        self._arrivals: dict[str, list[float]] = {}
        self._read_until: dict[str, datetime] = {}
        self._profiles: dict[str, forecast.Profile] = {}

    def arrivals(self, s: Session, pool: str, now: datetime) -> list[float]:
        history = self._arrivals.setdefault(pool, [])
        since = self._read_until.get(pool, now - timedelta(seconds=self.config.history_seconds))
        rows = s.scalars(
            select(Job.created_at)
            .where(Job.pool == pool, Job.backend == "pool", Job.created_at > since, Job.created_at <= now)
            .order_by(Job.created_at)
        )
        history.extend(t.timestamp() for t in rows)
        self._read_until[pool] = now
        cutoff = now.timestamp() - self.config.history_seconds
        if history and history[0] < cutoff:
            del history[: bisect.bisect_left(history, cutoff)]
        return history

    def instances(
        self, s: Session, pool: str, now: datetime, *, expected_job_seconds: float, slots_per_instance: int
    ) -> int:
        arrivals = self.arrivals(s, pool, now)
        t = now.timestamp()
        bucket = math.floor(t / self.config.bucket_seconds + 1e-9)
        profile = self._profiles.get(pool)
        if profile is None or profile.built_for_bucket != bucket:
            profile = self._profiles[pool] = forecast.build_profile(arrivals, now=t, config=self.config)
        return forecast.prewarm_instances(
            arrivals,
            now=t,
            expected_job_seconds=expected_job_seconds,
            slots_per_instance=slots_per_instance,
            config=self.config,
            profile=profile,
        )


class PoolController:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        providers: Mapping[str, ComputeProvider],
        clock: Callable[[], datetime],
        onstart: OnstartRenderer | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        presence: ReplicaPresence | None = None,
    ) -> None:
        self.settings = settings
        self.presence = presence
        self._no_address_logged_at: float | None = None
        self.sessions = sessions
        self.providers = dict(providers)
        self.clock = clock
        self.onstart = onstart
        self.monotonic = monotonic
        self._orphans_seen: dict[tuple[str, str], float] = {}
        self.forecasts = DemandForecasts()

    @property
    def provider(self) -> ComputeProvider | None:
        """The first provider (what `up` runs with)."""
        return next(iter(self.providers.values()), None)

    def tick(self) -> None:
        self.finish_detached()
        for provider in self.providers.values():
            try:
                self.reconcile(provider)
            except ProviderError as exc:
                log.warning("cannot list %s instances: %s", provider.name, exc)
                continue
            self.destroy_finished(provider)
            self.scale(provider)

    def finish_detached(self) -> None:
        """Attached (static) instances have no provider to destroy them: one being detached is
        TERMINATED here once its jobs are done. Nothing else in this loop acts on them."""
        with transaction(self.sessions) as s:
            draining = s.scalars(
                select(Instance).where(
                    Instance.provider == STATIC_PROVIDER, Instance.state == InstanceState.DRAINING
                )
            )
            finish_detached(s, list(draining), self.clock())

    # -- (1) reconcile ------------------------------------------------------------------------
    def reconcile(self, provider: ComputeProvider) -> None:
        seen = provider.list()
        now = self.clock()
        orphans: list[str] = []
        restop: list[str] = []
        with transaction(self.sessions) as s:
            rows = list(s.scalars(select(Instance).where(Instance.provider == provider.name)))
            by_provider_id = {i.provider_instance_id: i for i in rows if i.provider_instance_id}
            by_id = {i.id: i for i in rows}
            listed: set[str] = set()
            for p in seen:
                inst = by_provider_id.get(p.provider_id)
                if (
                    inst is None
                    and p.instance_id in by_id
                    and by_id[p.instance_id].provider_instance_id is None
                ):
                    inst = by_id[p.instance_id]  # created, but the answer or the commit was lost: adopt
                    inst.provider_instance_id = p.provider_id
                    log.warning("adopted instance %s (%s) found by its label", inst.id, p.provider_id)
                if inst is None or inst.state == InstanceState.TERMINATED:
                    orphans.append(p.provider_id)
                    continue
                listed.add(p.provider_id)
                if p.price_per_hour is not None:
                    inst.price_per_hour = p.price_per_hour
                if p.gpu_name:
                    inst.gpu_name = p.gpu_name
                if p.host and inst.info.get("host") != p.host:
                    inst.info = {**inst.info, "host": p.host}
                if not p.running and inst.state not in (InstanceState.UNHEALTHY,):
                    why = f"the provider reports it {p.status}" if p.status else "its processes exited"
                    move_instance(s, inst, InstanceTrigger.INSTANCE_LOST, why, now)
                elif inst.state == InstanceState.STOPPED and not p.stopped:
                    restop.append(p.provider_id)  # parked here, still running there: the stop was lost
                elif p.stopped and stopped_behind_our_back(inst):
                    why = OUTBID_REASON if p.interruptible else STOPPED_BY_PROVIDER_REASON
                    move_instance(s, inst, InstanceTrigger.INSTANCE_LOST, why, now)
            for inst in rows:
                state = inst.state
                if (
                    inst.provider_instance_id is not None
                    and inst.provider_instance_id not in listed
                    and state in LIVE_INSTANCE_STATES | {InstanceState.DRAINING, InstanceState.STOPPED}
                ):
                    move_instance(s, inst, InstanceTrigger.INSTANCE_LOST, "the provider lost it", now)
            self._give_up_resumes(s, rows, now)
        for pid in restop:
            log.warning("instance %s at %s is parked but still runs; stopping it again", pid, provider.name)
            self._stop(provider, pid)
        current = {(provider.name, pid) for pid in orphans}
        for key in list(self._orphans_seen):
            if key[0] == provider.name and key not in current:
                del self._orphans_seen[key]
        for pid in orphans:
            first = self._orphans_seen.setdefault((provider.name, pid), self.monotonic())
            if self.monotonic() - first >= self.settings.orphan_grace_seconds:
                log.warning("destroying orphan instance %s at %s", pid, provider.name)
                if self._destroy(provider, pid):
                    self._orphans_seen.pop((provider.name, pid), None)

    def _give_up_resumes(self, s: Session, rows: list[Instance], now: datetime) -> None:
        """A resumed instance whose worker is not ready within `resume_timeout_seconds` is given
        up (its GPU may have been rented out meanwhile): UNHEALTHY, then destroyed. Its replacement
        was started earlier, once it was overdue (`scale`). A fresh instance has the provisioning
        timeout instead (scheduler.py)."""
        timeout = self.settings.resume_timeout_seconds
        for inst in rows:
            resumed_at = resumed_at_of(inst)
            if (
                resumed_at is not None
                and inst.state in _STARTING
                and (now - resumed_at).total_seconds() > timeout
            ):
                reason = f"not ready within {timeout:g}s of its resume"
                move_instance(s, inst, InstanceTrigger.STARTUP_TIMEOUT, reason, now)

    def _stop(self, provider: ComputeProvider, provider_id: str) -> bool:
        try:
            provider.stop(provider_id)
            return True
        except (ProviderError, OSError) as exc:
            # reconcile tries again while the provider still lists it running
            log.error("could not stop %s: %s", provider_id, exc)
            return False

    def _destroy(self, provider: ComputeProvider, provider_id: str) -> bool:
        try:
            provider.destroy(provider_id)
            return True
        except ProviderError as exc:
            log.error("could not destroy %s: %s", provider_id, exc)
            return False

    # -- (2) destroy --------------------------------------------------------------------------
    def destroy_finished(self, provider: ComputeProvider) -> None:
        with transaction(self.sessions) as s:
            doomed = [
                (i.id, i.provider_instance_id, i.state)
                for i in s.scalars(
                    select(Instance).where(
                        Instance.provider == provider.name,
                        Instance.state.in_([InstanceState.UNHEALTHY, InstanceState.DRAINING]),
                    )
                )
                if i.state == InstanceState.UNHEALTHY or active_job_count(s, i.id) == 0
            ]
        for instance_id, provider_id, state in doomed:
            if provider_id is not None and not self._destroy(provider, provider_id):
                continue
            with transaction(self.sessions) as s:
                inst = s.get(Instance, instance_id)
                if inst is not None and inst.state == state:
                    reason = (
                        "unhealthy, destroyed" if state == InstanceState.UNHEALTHY else "drained, destroyed"
                    )
                    move_instance(s, inst, InstanceTrigger.DESTROY, reason, self.clock())

    # -- (3) scale ----------------------------------------------------------------------------
    def scale(self, provider: ComputeProvider) -> None:
        now = self.clock()
        launches: list[LaunchSpec] = []
        stops: list[str] = []  # provider ids to stop (parked)
        starts: list[tuple[str, str]] = []  # (instance id, provider id) to start again (resumed)
        with transaction(self.sessions) as s:
            for pool in s.scalars(select(Pool).where(Pool.provider == provider.name)):
                instances = list(
                    s.scalars(
                        select(Instance).where(
                            Instance.pool == pool.name,
                            Instance.state.in_(
                                [st.value for st in LIVE_INSTANCE_STATES | {InstanceState.STOPPED}]
                            ),
                        )
                    )
                )
                config = start_config(self.settings)
                outcomes: list[startup.StartOutcome] | None = None  # read when first needed
                resuming = {
                    i.id: at
                    for i in instances
                    if i.state in _STARTING and (at := resumed_at_of(i)) is not None
                }
                overdue: set[str] = set()
                if resuming and self.settings.pool_replace_overdue_resumes:
                    outcomes = start_outcomes(s, pool.name, now)
                    bound = startup.resume_give_up_seconds(outcomes, config)
                    overdue = {
                        iid
                        for iid, at in resuming.items()
                        if startup.resume_overdue((now - at).total_seconds(), bound)
                    }
                views = [
                    InstanceView(
                        i.id,
                        i.state,
                        active_job_count(s, i.id),
                        i.idle_since,
                        i.created_at,
                        i.price_per_hour,
                        i.parked_at,
                        static=i.provider == STATIC_PROVIDER,
                        resuming=i.id in resuming,
                        overdue=i.id in overdue,
                    )
                    for i in instances
                ]
                queued = (
                    s.scalar(
                        select(func.count())
                        .select_from(Job)
                        .where(Job.pool == pool.name, Job.state == JobState.QUEUED, Job.backend == "pool")
                    )
                    or 0
                )
                prices = [i.price_per_hour for i in instances if i.price_per_hour is not None]
                cap = offer_filters(pool).max_price_per_hour
                expected = expected_job_seconds(s, pool.name)
                prewarm = self.settings.pool_prewarm
                # the start estimates matter only with a queue (they weigh starting and added
                # instances against it): read the history then
                p_launch = p_resume = 1.0
                if queued > 0 and self.settings.pool_count_start_success:
                    if outcomes is None:
                        outcomes = start_outcomes(s, pool.name, now)
                    p_launch = startup.start_success(outcomes, startup.StartKind.LAUNCH, config)
                    p_resume = startup.start_success(outcomes, startup.StartKind.RESUME, config)
                snapshot = PoolSnapshot(
                    queued_jobs=queued,
                    expected_job_seconds=expected,
                    new_instance_price=cap if cap is not None else (max(prices) if prices else 0.0),
                    last_scale_up_at=pool.last_scale_up_at,
                    busy_slots_recent=busy_slots_recent(s, pool.name, now),
                    forecast_instances=self.forecasts.instances(
                        s,
                        pool.name,
                        now,
                        expected_job_seconds=expected,
                        slots_per_instance=pool.slots_per_instance,
                    )
                    if prewarm
                    else None,
                    launch_success=p_launch,
                    resume_success=p_resume,
                )
                for action in plan_scaling(pool_config(pool, prewarm=prewarm), views, snapshot, now=now):
                    if isinstance(action, Launch):
                        server_url = self._worker_server_url()
                        if server_url is None:
                            continue
                        launches.append(self._new_instance(s, pool, action.reason, now, server_url))
                        pool.last_scale_up_at = now
                        continue
                    inst = s.get(Instance, action.instance_id)
                    if inst is None:
                        continue
                    if isinstance(action, Resume):
                        if resume(s, inst, action.reason, now):
                            assert inst.provider_instance_id is not None  # resume() checks
                            starts.append((inst.id, inst.provider_instance_id))
                            pool.last_scale_up_at = now
                    elif isinstance(action, Park):
                        if park(s, inst, action.reason, now):
                            assert inst.provider_instance_id is not None  # park() checks
                            stops.append(inst.provider_instance_id)
                    elif isinstance(action, Drain):
                        move_instance(s, inst, InstanceTrigger.DRAIN, action.reason, now)
        for provider_id in stops:
            if self._stop(provider, provider_id):
                log.info("parked instance %s at %s", provider_id, provider.name)
        for instance_id, provider_id in starts:
            self._start(provider, instance_id, provider_id)
        for spec in launches:
            self._launch(provider, spec)

    def _start(self, provider: ComputeProvider, instance_id: str, provider_id: str) -> None:
        try:
            provider.start(provider_id)
        except (ProviderError, OSError) as exc:
            with transaction(self.sessions) as s:
                inst = s.get(Instance, instance_id)
                if inst is not None and inst.state == InstanceState.PROVISIONING:
                    reason = f"resume failed: {exc}"
                    move_instance(s, inst, InstanceTrigger.LAUNCH_FAILED, reason, self.clock())
            return
        log.info("resumed instance %s (%s at %s)", instance_id, provider_id, provider.name)

    def _worker_server_url(self) -> str | None:
        """The control-plane URL for a new instance's worker; None (and no launch) while other
        replicas run and no shared address is configured: this replica's own address would
        strand the instance when this replica goes."""
        others = self.presence.others() if self.presence is not None else 0
        try:
            return worker_address(self.settings.public_url, self.settings.base_url, others)
        except NoSharedAddress as exc:
            last = self._no_address_logged_at
            if last is None or self.monotonic() - last > 60:
                self._no_address_logged_at = self.monotonic()
                log.error("not launching instances: %s", exc)
            return None

    def _new_instance(
        self, s: Session, pool: Pool, reason: str, now: datetime, server_url: str
    ) -> LaunchSpec:
        token = new_secret(WORKER_TOKEN_PREFIX)
        inst = Instance(
            id=str(uuid.uuid4()),
            pool=pool.name,
            provider=pool.provider,
            provider_instance_id=None,
            state=InstanceState.PROVISIONING,
            state_reason=reason,
            token_hash=hash_secret(token),
            created_at=now,
            state_changed_at=now,
            info={},
        )
        s.add(inst)
        s.flush()
        s.add(
            InstanceTransition(
                instance_id=inst.id,
                from_state=None,
                to_state=InstanceState.PROVISIONING,
                reason=reason,
                at=now,
            )
        )
        models = preload_models(s, pool.name)
        since = now - timedelta(hours=1)
        failed_hosts = frozenset(
            str(i.info["host"])
            for i in s.scalars(
                select(Instance).where(
                    Instance.pool == pool.name,
                    Instance.ready_at.is_(None),
                    Instance.created_at >= since,
                    Instance.state.in_([InstanceState.UNHEALTHY, InstanceState.TERMINATED]),
                )
            )
            if i.info.get("host")
        )
        return LaunchSpec(
            instance_id=inst.id,
            pool=pool.name,
            server_url=server_url,
            worker_token=token,
            preload_models=models,
            env={"SWARMSTATION_PRELOAD_MODELS": preload_env(models)},
            image=pool.image,
            onstart=self.onstart(pool) if self.onstart is not None else "",
            filters=offer_filters(pool),
            avoid_hosts=failed_hosts,
        )

    def _launch(self, provider: ComputeProvider, spec: LaunchSpec) -> None:
        try:
            provider_id = provider.launch(spec)
        except (ProviderError, OSError) as exc:
            with transaction(self.sessions) as s:
                inst = s.get(Instance, spec.instance_id)
                if inst is not None:
                    reason = f"launch failed: {exc}"
                    move_instance(s, inst, InstanceTrigger.LAUNCH_FAILED, reason, self.clock())
            return
        with transaction(self.sessions) as s:
            inst = s.get(Instance, spec.instance_id)
            if inst is not None:
                inst.provider_instance_id = provider_id
        log.info("launched instance %s in pool %s", spec.instance_id, spec.pool)

    def shutdown(self) -> None:
        """Stop every instance the providers run for us (used when `up` exits)."""
        now = self.clock()
        for provider in self.providers.values():
            try:
                for p in provider.list():
                    self._destroy(provider, p.provider_id)
            except ProviderError as exc:
                log.error("cannot list %s instances at shutdown: %s", provider.name, exc)
                continue
            with transaction(self.sessions) as s:
                for inst in s.scalars(select(Instance).where(Instance.provider == provider.name)):
                    state = inst.state
                    if state == InstanceState.TERMINATED:
                        continue
                    if state in LIVE_INSTANCE_STATES:
                        move_instance(s, inst, InstanceTrigger.SHUTDOWN, "control plane shut down", now)
                    move_instance(s, inst, InstanceTrigger.DESTROY, "control plane shut down", now)


_STARTING = frozenset({InstanceState.PROVISIONING, InstanceState.INITIALIZING})
OUTBID_REASON = "outbid: the provider stopped this interruptible instance"
STOPPED_BY_PROVIDER_REASON = "stopped by the provider, not parked by us"
_STOPPABLE_BEHIND_OUR_BACK = frozenset(
    {
        InstanceState.PROVISIONING,
        InstanceState.INITIALIZING,
        InstanceState.IDLE,
        InstanceState.BUSY,
        InstanceState.DRAINING,
    }
)


def stopped_behind_our_back(inst: Instance) -> bool:
    """Whether a provider's "stopped" for this instance means someone else stopped it: it is live
    here and not parked by us (a parked one being drained keeps `parked_at`), nor being resumed
    (the provider may show our start late; the resume timeout judges it)."""
    if inst.state not in _STOPPABLE_BEHIND_OUR_BACK or inst.parked_at is not None:
        return False
    resuming = inst.state in (InstanceState.PROVISIONING, InstanceState.INITIALIZING)
    return not (resuming and resumed_at_of(inst) is not None)


def park(s: Session, inst: Instance, reason: str, now: datetime) -> bool:
    """Mark an idle instance parked (the caller then stops it at the provider). False, and nothing
    changed, when it is no longer idle (a job came in the meantime) or has no provider id yet."""
    # read it again, locked (PostgreSQL): the scheduler may have given it a job since the snapshot
    s.refresh(inst, with_for_update=True)
    if (
        inst.state != InstanceState.IDLE
        or inst.provider_instance_id is None
        or active_job_count(s, inst.id) > 0
    ):
        return False
    move_instance(s, inst, InstanceTrigger.PARK, f"parked: {reason}", now)
    inst.parked_at = now
    inst.idle_since = None
    inst.comfyui_url = None  # a stopped container serves nothing; the resumed worker tells the new one
    # what does not survive a stop: the loaded checkpoint (VRAM), a pending prefetch, ComfyUI's health
    inst.info = {
        k: v for k, v in inst.info.items() if k not in ("loaded_checkpoint", "prefetch", "comfyui_down_since")
    }
    return True


def resume(s: Session, inst: Instance, reason: str, now: datetime) -> bool:
    """Mark a parked instance resuming (the caller then starts it at the provider): PROVISIONING
    until its worker registers again, as a new instance is."""
    if inst.state != InstanceState.STOPPED or inst.provider_instance_id is None:
        return False
    move_instance(s, inst, InstanceTrigger.RESUME, f"resuming: {reason}", now)
    inst.parked_at = None
    inst.idle_since = None
    # its last heartbeat is from before the park: the heartbeat timeout starts again at registration
    inst.last_heartbeat_at = None
    inst.info = {**inst.info, "resumed_at": now.isoformat()}
    return True


def resumed_at_of(inst: Instance) -> datetime | None:
    """When the instance was last resumed from parking, if ever."""
    value = (inst.info or {}).get("resumed_at")
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def provisioning_deadlines(s: Session, default_seconds: float, now: datetime) -> dict[str, datetime]:
    """Per pool: instances created before this time and still not ready are unhealthy."""
    return {
        p.name: now - timedelta(seconds=p.provisioning_timeout_seconds or default_seconds)
        for p in s.scalars(select(Pool))
    }
