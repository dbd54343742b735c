"""What a simulation runs with: the pool and routing settings, the markets, the loop intervals;
and the virtual clock's mapping to datetimes (policies take datetimes).

The control plane's timeouts and intervals are the live defaults, read from
:class:`swarmstation.config.Settings`' field defaults (not from the environment), so the simulated
control plane waits exactly as long as a freshly installed live one."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from swarmstation.config import Settings
from swarmstation.domain import estimates
from swarmstation.domain.forecast import ForecastConfig
from swarmstation.domain.routing import RoutingConfig
from swarmstation.domain.scaling import PoolConfig
from swarmstation.domain.startup import StartConfig
from swarmstation.sim.market import ManagedService, Marketplace

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
POOL = "sim"


def live_default(name: str) -> float:
    """A control-plane setting's default (``Settings``), whatever the environment says."""
    value = Settings.model_fields[name].default
    assert isinstance(value, int | float), name
    return float(value)


def live_routing() -> RoutingConfig:
    """The routing knobs the live scheduler runs with by default (control/routing.routing_config)."""
    return RoutingConfig(
        max_delay_seconds=live_default("routing_max_delay_seconds"),
        aging_seconds=live_default("routing_aging_seconds"),
    )


def live_start_config() -> StartConfig:
    """The start estimates' knobs the live pool loop runs with by default (control/pools.start_config)."""
    return StartConfig(
        resume_timeout_seconds=live_default("resume_timeout_seconds"),
        fallback_seconds=live_default("resume_heartbeat_timeout_seconds"),
        factor=live_default("resume_give_up_factor"),
        window=int(live_default("start_success_window")),
    )


def at(seconds: float) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


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
    routing: RoutingConfig = field(default_factory=live_routing)
    market: Marketplace = field(default_factory=Marketplace)
    managed: ManagedService = field(default_factory=ManagedService)
    market_preset: str = "optimistic"
    # the live control plane's defaults (Settings)
    scheduler_interval_s: float = field(default_factory=lambda: live_default("scheduler_interval_seconds"))
    pool_interval_s: float = field(default_factory=lambda: live_default("control_interval_seconds"))
    provision_timeout_s: float = field(default_factory=lambda: live_default("provisioning_timeout_seconds"))
    resume_timeout_s: float = field(default_factory=lambda: live_default("resume_timeout_seconds"))
    heartbeat_timeout_s: float = field(default_factory=lambda: live_default("heartbeat_timeout_seconds"))
    checkpoint_load_s: float = field(default_factory=lambda: live_default("checkpoint_load_seconds"))
    # the worker heartbeats every min(5, heartbeat timeout / 3) s (api/worker.py); its cache
    # inventory and loaded checkpoint reach routing with the heartbeat, and so do prefetch hints
    heartbeat_interval_s: float = field(
        default_factory=lambda: min(5.0, live_default("heartbeat_timeout_seconds") / 3)
    )
    prefetch_demand_jobs: int = estimates.PREFETCH_DEMAND_JOBS
    run_window_jobs: int = estimates.RUN_WINDOW_JOBS
    queued_batch: int = 500  # control/scheduler.py: _MAX_BATCH oldest queued jobs per pass
    skip_idle_passes: bool = True  # only a speed-up: results are the same either way (tested)
    utilisation_window_s: float = 600.0  # window of PoolSnapshot.busy_slots_recent
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

    # new pool instances fetch each tool's default checkpoint as they start, as the control plane's
    # preload list (the models of every tool the pool serves) makes real workers do (not the
    # fresh-instance-per-job baseline, whose instance fetches only its job's models)
    preload_tool_models: bool = True
    # the pool's instances run a prebuilt image with the preload models baked in (Marketplace.prebuilt_*)
    prebuilt_image: bool = False
    sample_interval_s: float = 60.0
    # pre-warm (PoolConfig.prewarm): the forecaster's settings, how often the pool loop re-reads
    # the forecast, and the days of arrival history it starts with (a generated trace's preset,
    # another seed, before t=0: the live control plane has its jobs table; a trace file has none)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    forecast_interval_s: float = 60.0
    forecast_history_days: float = 7.0
    # domain/startup.py, as the live pool loop (the Settings defaults, both off: measured on prior,
    # neither moved p95 the right way): with replace_overdue_resumes (pool_replace_overdue_resumes)
    # a resume past the bound derived from the pool's past resume times counts as covering nothing
    # (a replacement is started; it is given up at resume_timeout_s); with count_start_success
    # (pool_count_start_success) a starting instance counts by its kind's share of past starts
    # that became ready
    start: StartConfig = field(default_factory=live_start_config)
    replace_overdue_resumes: bool = field(
        default_factory=lambda: bool(Settings.model_fields["pool_replace_overdue_resumes"].default)
    )
    count_start_success: bool = field(
        default_factory=lambda: bool(Settings.model_fields["pool_count_start_success"].default)
    )


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
    prewarm: bool | None = None,
    prebuilt_image: bool | None = None,
) -> SimConfig:
    """``target_utilisation <= 0`` turns utilisation-based scale-down off."""
    pool = config.pool
    if prewarm is not None:
        pool = replace(pool, prewarm=prewarm)
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
    if prebuilt_image is not None:
        config = replace(config, prebuilt_image=prebuilt_image)
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
        "prewarm": pool.prewarm,
        "prebuilt_image": config.prebuilt_image,
        "max_delay_seconds": routing.max_delay_seconds,
        "rental": "interruptible" if config.interruptible else "on-demand",
        "market": config.market_preset,
    }
