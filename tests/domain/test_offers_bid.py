"""Interruptible (bid) rentals in the offer domain: `min_bid` parsing, the bid price, ranking and
the price cap on the bid, and the search query's `"type"` (pure)."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmstation.domain.offers import (
    RELIABILITY_EXPONENT,
    Offer,
    OfferFilters,
    accept,
    bid_price,
    offer_from_json,
    rank_offers,
    rental_price,
    search_query,
)

BID = OfferFilters(interruptible=True, bid_margin=1.1)
ON_DEMAND = OfferFilters()


def offer(offer_id: int = 1, **fields: Any) -> Offer:
    data: dict[str, Any] = {
        "id": offer_id,
        "gpu_name": "RTX 4090",
        "num_gpus": 1,
        "gpu_ram": 24564,
        "dph_total": 0.4,
        "min_bid": 0.2,
        "reliability2": 0.99,
        "verified": True,
        "dlperf": 60.0,
    }
    data.update(fields)
    parsed = offer_from_json(data)
    assert parsed is not None
    return parsed


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.2, 0.2), ("0.25 \n", 0.25), (None, None), (0, None), (-0.1, None), ("cheap", None), (True, None)],
)
def test_min_bid_is_parsed_or_none(value: Any, expected: float | None) -> None:
    assert offer(min_bid=value).min_bid == expected


def test_an_offer_without_min_bid_field_has_none() -> None:
    parsed = offer_from_json({"id": 3, "gpu_name": "RTX 3090", "dph_total": 0.3})
    assert parsed is not None and parsed.min_bid is None


@pytest.mark.parametrize(
    ("min_bid", "margin", "expected"),
    [
        (0.2, 1.1, 0.22),  # 0.2 * 1.1 is 0.22000000000000003 in floats: not 0.2201
        (0.2, 1.0, 0.2),
        (0.2, 3.0, 0.6),
        (0.12345, 1.0, 0.1235),  # rounded up: never under the floor
        (0.1, 1.23456, 0.1235),
    ],
)
def test_bid_price_is_min_bid_times_margin_to_four_places(
    min_bid: float, margin: float, expected: float
) -> None:
    assert bid_price(replace(offer(), min_bid=min_bid), margin) == expected


@given(
    min_bid=st.floats(0.0001, 50, allow_nan=False, allow_infinity=False),
    margin=st.floats(1.0, 3.0, allow_nan=False, allow_infinity=False),
)
def test_bid_price_is_never_under_the_floor_nor_far_over_the_margin(min_bid: float, margin: float) -> None:
    price = bid_price(replace(offer(), min_bid=min_bid), margin)
    assert price is not None
    assert price >= min_bid - 1e-12
    assert price <= min_bid * margin + 1e-4 + 1e-9
    assert price == round(price, 4)


def test_rental_price_is_the_bid_for_interruptible_and_dph_total_otherwise() -> None:
    o = offer(dph_total=0.4, min_bid=0.2)
    assert rental_price(o, ON_DEMAND) == 0.4
    assert rental_price(o, BID) == 0.22
    assert rental_price(replace(o, min_bid=None), BID) is None
    assert rental_price(replace(o, min_bid=None), ON_DEMAND) == 0.4


@pytest.mark.parametrize(
    ("fields", "filters", "expected"),
    [
        # the cap applies to what we pay: the bid, not the on-demand price
        ({"dph_total": 0.8, "min_bid": 0.2}, replace(BID, max_price_per_hour=0.25), True),
        ({"dph_total": 0.8, "min_bid": 0.2}, replace(BID, max_price_per_hour=0.21), False),  # bid 0.22
        ({"dph_total": 0.8, "min_bid": 0.2}, replace(BID, max_price_per_hour=0.21, bid_margin=1.0), True),
        ({"dph_total": 0.8, "min_bid": 0.2}, replace(ON_DEMAND, max_price_per_hour=0.25), False),
        ({"dph_total": 0.2, "min_bid": 0.1}, replace(ON_DEMAND, max_price_per_hour=0.25), True),
        # no floor: it cannot be bid on, whatever its on-demand price
        ({"dph_total": 0.2, "min_bid": None}, BID, False),
        ({"dph_total": 0.2, "min_bid": None}, ON_DEMAND, True),
    ],
)
def test_accept_caps_the_rental_price(fields: dict[str, Any], filters: OfferFilters, expected: bool) -> None:
    assert accept(offer(**fields), filters) is expected


def test_interruptible_ranking_uses_the_bid_not_dph_total() -> None:
    # a: cheapest on-demand, but its bid floor is high; b: dearer on-demand, cheap to bid on
    a = offer(1, dph_total=0.30, min_bid=0.25)
    b = offer(2, dph_total=0.50, min_bid=0.12)
    assert [o.id for o in rank_offers([a, b], ON_DEMAND)] == [1, 2]
    assert [o.id for o in rank_offers([a, b], BID)] == [2, 1]


def test_interruptible_ranking_without_dlperf_and_ties() -> None:
    slow = offer(1, dlperf=0, min_bid=0.05)  # no dlperf: last however cheap
    x = offer(2, min_bid=0.2)
    y = offer(3, min_bid=0.2)  # the same as x: the lower id first
    z = offer(4, min_bid=None)  # cannot be bid on
    assert [o.id for o in rank_offers([z, slow, y, x], BID)] == [2, 3, 1]


offers_strategy = st.lists(
    st.builds(
        lambda i, price, bid, rel, perf: offer(
            i, dph_total=price, min_bid=bid, reliability2=rel, dlperf=perf
        ),
        st.integers(1, 10_000),
        st.floats(0.05, 3.0),
        st.one_of(st.none(), st.floats(0.01, 3.0)),
        st.floats(0.5, 1.0),
        st.one_of(st.just(0.0), st.floats(1.0, 200.0)),
    ),
    max_size=12,
    unique_by=lambda o: o.id,
)


@given(
    offers=offers_strategy,
    margin=st.floats(1.0, 3.0),
    cap=st.one_of(st.none(), st.floats(0.05, 3.0)),
    rnd=st.randoms(use_true_random=False),
)
def test_interruptible_rank_orders_by_bid_score_and_caps_the_bid(
    offers: list[Offer], margin: float, cap: float | None, rnd: random.Random
) -> None:
    filters = OfferFilters(interruptible=True, bid_margin=margin, max_price_per_hour=cap)
    ranked = rank_offers(offers, filters)
    shuffled = list(offers)
    rnd.shuffle(shuffled)
    assert rank_offers(shuffled, filters) == ranked
    assert all(o.min_bid is not None for o in ranked)
    assert {o.id for o in ranked} == {
        o.id for o in offers if o.min_bid is not None and (cap is None or (bid_price(o, margin) or 0) <= cap)
    }
    scored = [o for o in ranked if o.dlperf > 0]
    assert ranked[: len(scored)] == scored
    values = [o.dlperf / (bid_price(o, margin) or 1) * o.reliability**RELIABILITY_EXPONENT for o in scored]
    assert all(a >= b or math.isclose(a, b) for a, b in itertools.pairwise(values))


def test_search_query_type_and_price_cap() -> None:
    on_demand = search_query(OfferFilters(max_price_per_hour=0.6))
    assert on_demand["type"] == "on-demand" and on_demand["dph_total"] == {"lte": 0.6}
    bid = search_query(OfferFilters(max_price_per_hour=0.6, interruptible=True))
    assert bid["type"] == "bid"
    # dph_total is the on-demand price: capping it would hide offers whose bid is under the cap
    assert "dph_total" not in bid
    assert {k: v for k, v in bid.items() if k not in ("type",)} == {
        k: v for k, v in on_demand.items() if k not in ("type", "dph_total")
    }
    assert search_query(OfferFilters(interruptible=True))["type"] == "bid"
