"""The rented side of the simulation: a GPU marketplace such as VastAI, and a managed
per-second service such as ComfyUI Deploy, with the random draws a launch or a resume makes.

Each launch draws ``offers_per_launch`` offers (price, reliability, DLPerf) and rents the first
that ``domain.offers.rank_offers`` ranks, as the VastAI provider does. It then draws the image pull
(``loading``: storage is billed, the GPU is not), the boot until the worker is ready (``running``:
the GPU is billed, VastAI bills GPU time from ``running``), whether the instance never becomes
ready (stuck in ``loading``, or up but never healthy; either way it is destroyed at the
provisioning timeout and the autoscaler replaces it), a lifetime after which it dies
(exponential), a download bandwidth and a checkpoint load speed. The n-th launch draws the same
figures under every policy (common random numbers, seeded by the launch's number), so policies
differ by their decisions, not by luck.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from swarmstation.domain.offers import Offer, OfferFilters, rank_offers, rental_price

_SIM_FILTERS = OfferFilters(gpu_names=("RTX 4090",), min_vram_gb=20.0)
_D = TypeVar("_D", bound=Any)


@dataclass(frozen=True)
class Marketplace:
    """A GPU marketplace such as VastAI (the ``optimistic`` preset's figures; :data:`MARKETS` has
    both presets and :data:`ASSUMPTIONS` the source of each figure).

    Billing follows protocols.md §2.3 and §2.5: the GPU rate (``dph_total``) is billed from
    ``running`` and already includes the storage for the disk we ask for; storage alone is billed
    while the instance is not running (the image pull before ``running``, and while stopped)."""

    price_per_hour: float = 0.30
    price_spread: tuple[float, float] = (0.9, 1.2)  # an offer costs price_per_hour x U(lo, hi)
    offers_per_launch: int = 5  # offers seen per launch; the ranked best is rented
    reliability_range: tuple[float, float] = (0.90, 1.0)
    pull_median_s: float = 100.0  # created -> running (image pull), GPU not billed
    boot_median_s: float = 50.0  # running -> worker ready (onstart, ComfyUI start), GPU billed
    provision_sigma: float = 0.5
    never_running_prob: float = 0.04  # stuck in loading: storage billed only
    never_ready_prob: float = 0.03  # running but never healthy: GPU billed until destroyed
    storage_per_hour: float = 0.016  # while not running only (dph_total includes it while running)
    # Resuming a parked (stopped) instance: the container starts again with its disk, so only the
    # boot is paid. It fails when the GPU was rented out meanwhile, likelier the longer it was
    # parked (an assumption: protocols.md §2.6 says only that it may fail); the control plane gives
    # up after Settings.resume_timeout_seconds and launches instead.
    resume_median_s: float = 45.0
    resume_fail_per_hour: float = 0.03
    mean_lifetime_hours: float = 48.0
    bandwidth_median: float = 100e6  # bytes/s
    bandwidth_sigma: float = 0.6
    load_bytes_per_second: float = 1.5e9  # checkpoint from disk into VRAM
    load_base_s: float = 2.0
    load_spread: tuple[float, float] = (0.7, 1.3)  # per-instance disk speed factor
    disk_budget_bytes: int = 80 * 10**9
    output_bytes: int = 1_500_000  # what a job uploads (one PNG), at the instance's bandwidth
    # A prebuilt image (deploy/worker.Dockerfile with the pool's preload models baked in): its pull
    # also brings the models (at the instance's bandwidth, before `running`: storage billed only),
    # and the boot skips installing ComfyUI's dependencies. The factor is an assumption.
    prebuilt_boot_factor: float = 0.5
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
    plus a $100/month platform fee; prior-system.md §6.3 lists A10G at $0.000337/s). Containers take
    jobs from one shared queue (whichever is free first); the figures without a source are
    assumptions (:data:`ASSUMPTIONS`), chosen on the managed service's side where unsure."""

    gpu_price_per_second: float = 0.000337
    platform_fee_per_month: float = 100.0
    keep_warm_s: float = 60.0
    cold_start_median_s: float = 45.0
    cold_start_sigma: float = 0.4
    run_speed_factor: float = 1.0  # A10G run time / RTX 4090 run time; 1.0 favours the managed service
    max_concurrency: int | None = None  # containers at once; None = unbounded (favours it)
    load_bytes_per_second: float = 1.5e9  # switching checkpoints in a warm container (as ours)
    load_base_s: float = 2.0


# An ``observed`` marketplace fitted to what the earlier platform saw on VastAI (prior-system.md
# §5.9): a 23 GB UNet in 6.1 min (~63 MB/s per download), 8.2 min end to end for its one success
# (so ~2.1 min of everything else: the instance, SSH, setup, ComfyUI start), 4 of 5 runs failed
# (SSH never ready / instance vanished: 40-80% per attempt, 60% taken).
OBSERVED = replace(
    Marketplace(),
    bandwidth_median=63e6,
    pull_median_s=60.0,
    boot_median_s=66.0,
    never_running_prob=0.30,
    never_ready_prob=0.30,
)
MARKETS: dict[str, Marketplace] = {"optimistic": Marketplace(), "observed": OBSERVED}


@dataclass(frozen=True)
class Assumption:
    """One figure the results rest on: ``target`` is ``market`` or ``managed``, ``fields`` what a
    sensitivity factor multiplies (together), ``source`` where the figure comes from."""

    name: str
    target: str
    fields: tuple[str, ...]
    source: str
    cap: float | None = None  # largest value after scaling (a probability)


ASSUMPTIONS: tuple[Assumption, ...] = (
    Assumption("GPU price $/h", "market", ("price_per_hour",),
               "seed-roadmap.md §2 (RTX 4090 ~$0.30/h); spread x0.9-1.2 assumed"),
    Assumption("download bandwidth", "market", ("bandwidth_median",),
               "optimistic: assumed 100 MB/s; observed: 63 MB/s (prior-system.md §5.9, 23 GB in 6.1 min)"),
    Assumption("launch failures", "market", ("never_running_prob", "never_ready_prob"),
               "optimistic: assumed 7%; observed: 60% (prior-system.md §5.9: 4 of 5 runs failed)", cap=0.45),
    Assumption("image pull + boot", "market", ("pull_median_s", "boot_median_s"),
               "optimistic: assumed 150 s; observed: 126 s (8.2 min end to end - 6.1 min download, §5.9)"),
    Assumption("prebuilt image boot", "market", ("prebuilt_boot_factor",),
               "assumed: boot x0.5 with ComfyUI and its dependencies in the image"),
    Assumption("instance lifetime", "market", ("mean_lifetime_hours",), "assumed 48 h mean"),
    Assumption("resume time", "market", ("resume_median_s",), "assumed 45 s median"),
    Assumption("resume failures", "market", ("resume_fail_per_hour",), "assumed 3% per hour parked"),
    Assumption("checkpoint load", "market", ("load_bytes_per_second",), "assumed 1.5 GB/s disk to VRAM"),
    Assumption("managed price", "managed", ("gpu_price_per_second",),
               "prior-system.md §6.3 (A10G $0.000337/s); seed-roadmap.md §2 ($1.21/h)"),
    Assumption("managed cold start", "managed", ("cold_start_median_s",), "assumed 45 s median"),
    Assumption("managed keep-warm", "managed", ("keep_warm_s",), "assumed 60 s"),
    Assumption("managed GPU slowness", "managed", ("run_speed_factor",),
               "assumed 1.0 (an A10G as fast as a 4090: favours managed)"),
)  # fmt: skip


def scaled(obj: _D, fields: tuple[str, ...], factor: float, cap: float | None = None) -> _D:
    """``obj`` with each of ``fields`` multiplied by ``factor`` (at most ``cap``)."""
    changes: dict[str, float] = {}
    for name in fields:
        value = float(getattr(obj, name)) * factor
        changes[name] = min(value, cap) if cap is not None else value
    return replace(obj, **changes)


@dataclass(frozen=True)
class Rental:
    """What one launch drew: the rented offer's price and the instance's fate."""

    price: float
    bandwidth: float  # bytes/s
    load_rate: float  # checkpoint bytes/s from disk into VRAM
    pull_s: float  # created -> running
    boot_s: float  # running -> worker ready
    life_s: float  # ready -> dies (or is outbid)
    outbid: bool  # its end is an outbid interruptible rental
    never_running: bool
    never_ready: bool


def _rented_offer(m: Marketplace, r: random.Random, filters: OfferFilters) -> tuple[Offer, float]:
    """Draw ``offers_per_launch`` offers from ``r`` and rent the first ``rank_offers`` ranks, as the
    VastAI provider does: (offer, its rental price)."""
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
    offer = rank_offers(offers, filters)[0]
    price = rental_price(offer, filters)
    assert price is not None  # rank_offers accepts only offers it can price
    return offer, price


def _unreliability(m: Marketplace, offer: Offer) -> float:
    lo, hi = m.reliability_range
    return (1.0 - offer.reliability) / max(1e-9, 1.0 - (lo + hi) / 2)


_CALIBRATION_DRAWS = 2000


@functools.lru_cache(maxsize=256)
def failure_scale(m: Marketplace, filters: OfferFilters) -> float:
    """The factor on an offer's unreliability that makes the launches the provider actually makes
    fail at ``never_running_prob + never_ready_prob`` on average.

    The failure figures are per launch attempt (the observed market's 60% is 4 of 5 runs that
    failed), but the ranked-best offer is more reliable than the average one: scaling each rented
    offer's odds by its unreliability relative to the middle of the range, as before, made the
    simulated launches fail at about 43% of the stated rate (3% instead of 7%, 26% instead of 60%).
    Calibrated on fixed draws (not the simulation's), so it does not move any launch's draws."""
    p = m.never_running_prob + m.never_ready_prob
    if p <= 0:
        return 1.0
    ks = [
        _unreliability(m, _rented_offer(m, random.Random(f"calibrate:{n}"), filters)[0])
        for n in range(_CALIBRATION_DRAWS)
    ]

    def rate(scale: float) -> float:
        return sum(min(1.0, scale * k * p) for k in ks) / len(ks)

    lo, hi = 0.0, 1.0
    while rate(hi) < p and hi < 1e6:
        hi *= 2.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if rate(mid) < p:
            lo = mid
        else:
            hi = mid
    return hi


def draw_rental(m: Marketplace, n: int, *, seed: int, interruptible: bool, bid_margin: float) -> Rental:
    """The n-th launch's draws (WARNING: the order of the draws is part of the results: keep it)."""
    r = random.Random(f"{seed}:launch:{n}")
    filters = replace(_SIM_FILTERS, interruptible=interruptible, bid_margin=bid_margin)
    offer, price = _rented_offer(m, r, filters)
    # an offer's unreliability scales its odds of failing, calibrated so that the rented offers
    # fail at the stated per-attempt rate on average (failure_scale)
    odds = _unreliability(m, offer) * failure_scale(m, filters)
    bandwidth = min(1e9, max(10e6, r.lognormvariate(math.log(m.bandwidth_median), m.bandwidth_sigma)))
    load_rate = m.load_bytes_per_second * r.uniform(*m.load_spread)
    fate = r.random()
    pull = r.lognormvariate(math.log(m.pull_median_s), m.provision_sigma)
    boot = r.lognormvariate(math.log(m.boot_median_s), m.provision_sigma)
    life = r.expovariate(1.0 / (m.mean_lifetime_hours * 3600.0))
    outbid_after = r.expovariate(m.outbid_per_hour / 3600.0) if m.outbid_per_hour > 0 else math.inf
    outbid = interruptible and outbid_after < life
    p_fail = m.never_running_prob + m.never_ready_prob
    fails = min(1.0, p_fail * odds)  # this offer's odds of never becoming ready, split as stated
    never_running = p_fail > 0 and fate < fails * m.never_running_prob / p_fail
    never_ready = not never_running and fate < fails
    return Rental(
        price=price,
        bandwidth=bandwidth,
        load_rate=load_rate,
        pull_s=pull,
        boot_s=boot,
        life_s=outbid_after if outbid else life,
        outbid=outbid,
        never_running=never_running,
        never_ready=never_ready,
    )


def draw_resume(
    m: Marketplace, *, seed: int, iid: str, resumes: int, parked_hours: float, lost: bool
) -> tuple[bool, float]:
    """A parked instance's resume: (whether it fails, how long it takes). It fails when its host
    died while it was parked (`lost`) or, likelier the longer it was parked, when its GPU was
    rented out meanwhile."""
    r = random.Random(f"{seed}:resume:{iid}:{resumes}")
    fails = lost or r.random() < 1.0 - math.exp(-m.resume_fail_per_hour * parked_hours)
    took = r.lognormvariate(math.log(m.resume_median_s), m.provision_sigma)
    return fails, took
