"""What a simulation runs with: the pool and routing settings, the markets, the loop intervals;
and the virtual clock's mapping to datetimes (policies take datetimes)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from swarmstation.domain.routing import RoutingConfig
from swarmstation.domain.scaling import PoolConfig
from swarmstation.sim.market import ManagedService, Marketplace

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
POOL = "sim"


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
