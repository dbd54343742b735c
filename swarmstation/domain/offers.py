"""GPU offers on a marketplace: which ones a pool accepts, and in what order to try them.

Pure: the provider client searches, this module filters and ranks, the client tries the offers
in order (an offer taken between search and create → the next one).

Units follow Vast.ai (protocol reference §2.3): `gpu_ram` is reported in MB and, like Vast's own
CLI, we convert with 1000 MB = 1 GB, so a 24 GB card that reports 24564 MB passes
`min_vram_gb=24` both in the server-side query and in `accept`. `geolocation` looks like
`"California, US"`; its last comma-separated part is the country code.

Ranking (`rank_offers`): among accepted offers, higher `score` first, where

    score = dlperf / price_per_hour * reliability ** RELIABILITY_EXPONENT

that is, deep-learning performance per dollar per hour, discounted by the chance that the host
fails us (exponent 4: reliability 0.99 → 0.96, 0.95 → 0.81, 0.90 → 0.66, so a flaky host
must be much cheaper to win). Offers that report no `dlperf` (missing or 0) cannot be compared on
performance and come after all that do, ranked by `reliability ** 4 / price_per_hour`. Ties are
broken by lower price, then higher reliability, then lower offer id, so the order never depends
on the order of the input.

Interruptible rentals (`OfferFilters.interruptible`, Vast's `type: "bid"`): the price we pay is our
bid, `min_bid * bid_margin` (`bid_price`), not the on-demand `dph_total`, so that bid price is
what ranks the offers and what `max_price_per_hour` caps; an offer without a `min_bid` cannot be
bid on and is not accepted. `rental_price` is the price of an offer for a pool's kind of rental.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MB_PER_GB = 1000.0
RELIABILITY_EXPONENT = 4
DEFAULT_SEARCH_LIMIT = 64
BID_SCALE = 10_000  # bids are sent with 4 decimal places


@dataclass(frozen=True)
class OfferFilters:
    """A pool's requirements of a rented machine."""

    gpu_names: tuple[str, ...] = ()  # e.g. ("RTX 4090", "RTX 3090"); empty = any
    min_vram_gb: float = 0.0
    max_price_per_hour: float | None = None
    min_reliability: float = 0.0  # 0..1
    verified_only: bool = True
    min_cuda: float | None = None
    excluded_regions: tuple[str, ...] = ()  # country codes or region names to avoid
    num_gpus: int = 1
    disk_gb: float = 40.0
    # Interruptible (bid) rentals: about half the price of on-demand, but the machine is stopped
    # when someone outbids us. The bid is `min_bid * bid_margin`: a margin over the floor makes
    # an outbid less likely for a little more money.
    interruptible: bool = False
    bid_margin: float = 1.1


@dataclass(frozen=True)
class Offer:
    """One rentable machine configuration, as parsed from a Vast.ai offer."""

    id: int  # the offer id (what create takes)
    gpu_name: str
    num_gpus: int
    gpu_ram_gb: float  # per GPU
    price_per_hour: float  # dph_total: GPU + storage for the requested disk
    reliability: float  # 0..1 (reliability2 when reported)
    verified: bool
    cuda_max_good: float | None = None
    geolocation: str = ""  # e.g. "California, US"
    inet_down: float = 0.0
    dlperf: float = 0.0  # 0 = not reported
    gpu_frac: float = 1.0  # < 1 is a fraction of a GPU
    machine_id: int | None = None
    rentable: bool = True
    rented: bool = False
    min_bid: float | None = None  # the lowest bid Vast takes for an interruptible rental, $/h

    @property
    def region(self) -> str:
        """The country code: the last comma-separated part of `geolocation` ("" when unknown)."""
        return self.geolocation.rsplit(",", 1)[-1].strip()

    @property
    def dlperf_per_dollar(self) -> float:
        return self.dlperf / self.price_per_hour if self.dlperf > 0 else 0.0


# -- parsing ---------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return result if math.isfinite(result) else None


def _integer(value: Any) -> int | None:
    number = _number(value)
    if number is None or number != int(number):
        return None
    return int(number)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    return None


def offer_from_json(d: Mapping[str, Any]) -> Offer | None:
    """An `Offer` from one element of Vast's `{"offers": [...]}`; None when it is unusable
    (no integer id, no GPU name, no positive price). Other missing or odd fields get defaults."""
    if not isinstance(d, Mapping):
        return None
    offer_id = _integer(d.get("id"))
    gpu_name = _text(d.get("gpu_name"))
    price = _number(d.get("dph_total"))
    if offer_id is None or not gpu_name or price is None or price <= 0:
        return None
    reliability = _number(d.get("reliability2"))
    if reliability is None:
        reliability = _number(d.get("reliability"))
    verified = _flag(d.get("verified"))
    if verified is None:
        verified = _text(d.get("verification")).lower() == "verified"
    num_gpus = _integer(d.get("num_gpus"))
    gpu_ram_mb = _number(d.get("gpu_ram"))
    gpu_frac = _number(d.get("gpu_frac"))
    min_bid = _number(d.get("min_bid"))
    rentable = _flag(d.get("rentable"))
    rented = _flag(d.get("rented"))
    return Offer(
        id=offer_id,
        gpu_name=" ".join(gpu_name.split()),
        num_gpus=num_gpus if num_gpus is not None and num_gpus > 0 else 1,
        gpu_ram_gb=max(gpu_ram_mb or 0.0, 0.0) / MB_PER_GB,
        price_per_hour=price,
        reliability=min(max(reliability or 0.0, 0.0), 1.0),
        verified=verified,
        cuda_max_good=_number(d.get("cuda_max_good")),
        geolocation=_text(d.get("geolocation")),
        inet_down=max(_number(d.get("inet_down")) or 0.0, 0.0),
        dlperf=max(_number(d.get("dlperf")) or 0.0, 0.0),
        gpu_frac=gpu_frac if gpu_frac is not None and gpu_frac > 0 else 1.0,
        machine_id=_integer(d.get("machine_id")),
        rentable=True if rentable is None else rentable,
        rented=False if rented is None else rented,
        min_bid=min_bid if min_bid is not None and min_bid > 0 else None,
    )


# -- selection -------------------------------------------------------------------------------------


def normalise_gpu_name(name: str) -> str:
    """Vast spells GPU names with spaces ("RTX 4090"); accept "rtx_4090" and stray whitespace."""
    return " ".join(name.replace("_", " ").split()).lower()


def _region_excluded(offer: Offer, excluded: Iterable[str]) -> bool:
    parts = {part.strip().lower() for part in offer.geolocation.split(",") if part.strip()}
    whole = offer.geolocation.strip().lower()
    for region in excluded:
        key = region.strip().lower()
        if key and (key in parts or key == whole):
            return True
    return False


def bid_price(offer: Offer, bid_margin: float) -> float | None:
    """What we bid for this offer, $/h: its `min_bid` times the margin, to 4 places (as sent to
    Vast in the create's `price`); None when it cannot be bid on (no `min_bid`). Rounded up, not
    to nearest, so that a margin of 1.0 on a floor with more decimals never bids under the floor
    (the inner round absorbs float noise: 0.2 * 1.1 is 0.22000000000000003, bid 0.22)."""
    if offer.min_bid is None:
        return None
    return math.ceil(round(offer.min_bid * bid_margin * BID_SCALE, 6)) / BID_SCALE


def rental_price(offer: Offer, filters: OfferFilters) -> float | None:
    """What the pool would pay per hour for this offer: the bid for an interruptible rental,
    `dph_total` otherwise; None when the offer cannot be rented that way."""
    if filters.interruptible:
        return bid_price(offer, filters.bid_margin)
    return offer.price_per_hour


def accept(offer: Offer, filters: OfferFilters) -> bool:
    """Whether the offer meets every requirement of the pool (the same ones `search_query` asks
    the server for, checked again because servers and caches are not to be trusted)."""
    if filters.gpu_names and normalise_gpu_name(offer.gpu_name) not in {
        normalise_gpu_name(name) for name in filters.gpu_names
    }:
        return False
    if offer.gpu_ram_gb < filters.min_vram_gb:
        return False
    price = rental_price(offer, filters)
    if price is None or price <= 0:
        return False
    if filters.max_price_per_hour is not None and price > filters.max_price_per_hour:
        return False
    if offer.reliability < filters.min_reliability:
        return False
    if filters.verified_only and not offer.verified:
        return False
    if filters.min_cuda is not None and (offer.cuda_max_good or 0.0) < filters.min_cuda:
        return False
    if filters.excluded_regions and _region_excluded(offer, filters.excluded_regions):
        return False
    if offer.num_gpus != filters.num_gpus:
        return False
    return offer.gpu_frac >= 1.0 and offer.rentable and not offer.rented


def _score(offer: Offer, price: float) -> float:
    value = offer.dlperf if offer.dlperf > 0 else 1.0
    return value / price * offer.reliability**RELIABILITY_EXPONENT


def rank_offers(offers: Iterable[Offer], filters: OfferFilters) -> list[Offer]:
    """The accepted offers, best first (see the module docstring for the formula), priced at
    `rental_price`: the bid for interruptible rentals."""
    priced: list[tuple[Offer, float]] = []
    for offer in offers:
        price = rental_price(offer, filters)
        if price is not None and accept(offer, filters):
            priced.append((offer, price))
    ranked = sorted(
        priced,
        key=lambda op: (op[0].dlperf <= 0, -_score(op[0], op[1]), op[1], -op[0].reliability, op[0].id),
    )
    return [offer for offer, _ in ranked]


def search_query(filters: OfferFilters, *, limit: int = DEFAULT_SEARCH_LIMIT) -> dict[str, Any]:
    """The body of Vast's `POST /api/v0/bundles/` for a pool's filters: `"type": "bid"` for
    interruptible rentals, `"on-demand"` otherwise.

    Regions are not sent (Vast's `geolocation` values are free text); `accept` drops them. For
    interruptible rentals the price cap is not sent either: `dph_total` is the on-demand price, so
    capping it would hide offers whose bid is under the cap, and whether Vast filters on `min_bid`
    is not documented; `accept` caps the bid price instead."""
    query: dict[str, Any] = {
        "rentable": {"eq": True},
        "rented": {"eq": False},
        "external": {"eq": False},
        "num_gpus": {"eq": filters.num_gpus},
        "gpu_frac": {"gte": 1.0},
    }
    if filters.verified_only:
        query["verified"] = {"eq": True}
    if filters.gpu_names:
        query["gpu_name"] = {"in": [" ".join(name.replace("_", " ").split()) for name in filters.gpu_names]}
    if filters.min_vram_gb > 0:
        query["gpu_ram"] = {"gte": round(filters.min_vram_gb * MB_PER_GB, 3)}
    if filters.max_price_per_hour is not None and not filters.interruptible:
        query["dph_total"] = {"lte": filters.max_price_per_hour}
    if filters.min_reliability > 0:
        query["reliability"] = {"gte": filters.min_reliability}
    if filters.min_cuda is not None:
        query["cuda_max_good"] = {"gte": filters.min_cuda}
    query["type"] = "bid" if filters.interruptible else "on-demand"
    query["order"] = [["dph_total", "asc"]]
    query["limit"] = limit
    query["allocated_storage"] = filters.disk_gb
    return query
