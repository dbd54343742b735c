"""Offer parsing, filtering, ranking and the Vast search query (pure)."""

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
    offer_from_json,
    rank_offers,
    search_query,
)


def raw(offer_id: int = 1, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": offer_id,
        "gpu_name": "RTX 4090",
        "num_gpus": 1,
        "gpu_ram": 24564,
        "dph_total": 0.4,
        "reliability2": 0.99,
        "verified": True,
        "cuda_max_good": 12.4,
        "geolocation": "California, US",
        "inet_down": 800.0,
        "dlperf": 60.0,
    }
    data.update(fields)
    return data


def offer(offer_id: int = 1, **fields: Any) -> Offer:
    parsed = offer_from_json(raw(offer_id))
    assert parsed is not None
    return replace(parsed, **fields)


# -- parsing ---------------------------------------------------------------------------------------


def test_offer_from_json_units_and_whitespace() -> None:
    parsed = offer_from_json(
        raw(
            7,
            gpu_name="RTX 4090 \n",
            geolocation="Ontario, CA\n",
            gpu_ram=24564,
            reliability2=0.97,
            reliability=0.5,
            machine_id=12,
        )
    )
    assert parsed is not None
    assert parsed.id == 7
    assert parsed.gpu_name == "RTX 4090"
    assert parsed.geolocation == "Ontario, CA"
    assert parsed.region == "CA"
    assert parsed.gpu_ram_gb == pytest.approx(24.564)  # MB → GB as Vast's CLI counts (1000 MB a GB)
    assert parsed.reliability == 0.97  # reliability2 preferred
    assert parsed.price_per_hour == 0.4
    assert parsed.machine_id == 12
    assert parsed.dlperf_per_dollar == pytest.approx(150.0)


def test_offer_from_json_is_tolerant_of_odd_fields() -> None:
    parsed = offer_from_json(
        {
            "id": "42",
            "gpu_name": " A100  SXM4 ",
            "dph_total": "1.25",
            "reliability": 0.93,  # no reliability2
            "verification": "verified",  # no `verified`
            "num_gpus": None,
            "gpu_ram": "garbage",
            "cuda_max_good": float("nan"),
            "dlperf": True,  # a bool is not a number
            "inet_down": -5,
            "geolocation": None,
        }
    )
    assert parsed is not None
    assert (parsed.id, parsed.gpu_name, parsed.price_per_hour) == (42, "A100 SXM4", 1.25)
    assert parsed.reliability == 0.93
    assert parsed.verified is True
    assert parsed.num_gpus == 1
    assert parsed.gpu_ram_gb == 0.0
    assert parsed.cuda_max_good is None
    assert parsed.dlperf == 0.0
    assert parsed.inet_down == 0.0
    assert parsed.region == ""


@pytest.mark.parametrize(
    "broken",
    [
        {"gpu_name": "RTX 4090", "dph_total": 0.4},  # no id
        {"id": 1.5, "gpu_name": "RTX 4090", "dph_total": 0.4},
        {"id": 1, "dph_total": 0.4},  # no GPU name
        {"id": 1, "gpu_name": "   ", "dph_total": 0.4},
        {"id": 1, "gpu_name": "RTX 4090"},  # no price
        {"id": 1, "gpu_name": "RTX 4090", "dph_total": 0},
        {"id": 1, "gpu_name": "RTX 4090", "dph_total": "free"},
        {"id": True, "gpu_name": "RTX 4090", "dph_total": 0.4},
    ],
)
def test_offer_from_json_rejects_unusable_offers(broken: dict[str, Any]) -> None:
    assert offer_from_json(broken) is None


def test_offer_from_json_never_raises_on_junk() -> None:
    junks: list[dict[str, Any]] = [
        {},
        {"id": None},
        {"id": [], "gpu_name": {}, "dph_total": []},
        {"id": 1, "verified": "maybe"},
    ]
    for junk in junks:
        offer_from_json(junk)
    assert offer_from_json("not a dict") is None  # type: ignore[arg-type]


# -- accept ----------------------------------------------------------------------------------------


def test_accept_gpu_names_ignore_case_and_underscores() -> None:
    filters = OfferFilters(gpu_names=("rtx_4090", "RTX 3090"))
    assert accept(offer(gpu_name="RTX 4090"), filters)
    assert accept(offer(gpu_name="RTX 3090"), filters)
    assert not accept(offer(gpu_name="RTX 4080"), filters)
    assert accept(offer(gpu_name="RTX 4080"), OfferFilters())  # empty = any


def test_accept_vram_in_vast_gigabytes() -> None:
    # A 4090 reports 24564 MB: it must pass a 24 GB minimum (it would not with ÷1024).
    assert accept(offer(), OfferFilters(min_vram_gb=24))
    assert not accept(offer(), OfferFilters(min_vram_gb=40))


@pytest.mark.parametrize(
    ("fields", "filters", "expected"),
    [
        ({"price_per_hour": 0.5}, OfferFilters(max_price_per_hour=0.5), True),
        ({"price_per_hour": 0.51}, OfferFilters(max_price_per_hour=0.5), False),
        ({"reliability": 0.95}, OfferFilters(min_reliability=0.95), True),
        ({"reliability": 0.94}, OfferFilters(min_reliability=0.95), False),
        ({"verified": False}, OfferFilters(verified_only=True), False),
        ({"verified": False}, OfferFilters(verified_only=False), True),
        ({"cuda_max_good": 12.1}, OfferFilters(min_cuda=12.1), True),
        ({"cuda_max_good": 11.8}, OfferFilters(min_cuda=12.1), False),
        ({"cuda_max_good": None}, OfferFilters(min_cuda=12.1), False),
        ({"cuda_max_good": None}, OfferFilters(), True),
        ({"num_gpus": 2}, OfferFilters(), False),
        ({"num_gpus": 2}, OfferFilters(num_gpus=2), True),
        ({"gpu_frac": 0.5}, OfferFilters(), False),
        ({"rented": True}, OfferFilters(), False),
        ({"geolocation": "Beijing, CN"}, OfferFilters(excluded_regions=("CN",)), False),
        ({"geolocation": "Hong Kong, HK"}, OfferFilters(excluded_regions=("hong kong",)), False),
        ({"geolocation": "China"}, OfferFilters(excluded_regions=("China",)), False),
        ({"geolocation": "Texas, US"}, OfferFilters(excluded_regions=("CN", "HK")), True),
        ({"geolocation": "Canada, CA"}, OfferFilters(excluded_regions=("C",)), True),  # whole parts only
    ],
)
def test_accept_each_filter(fields: dict[str, Any], filters: OfferFilters, expected: bool) -> None:
    assert accept(offer(**fields), filters) is expected


# -- ranking ---------------------------------------------------------------------------------------


def test_rank_by_performance_per_dollar() -> None:
    cheap_slow = offer(1, dlperf=20.0, price_per_hour=0.20)  # 100 per $
    fast_pricey = offer(2, dlperf=120.0, price_per_hour=0.80)  # 150 per $
    middle = offer(3, dlperf=60.0, price_per_hour=0.50)  # 120 per $
    assert [o.id for o in rank_offers([cheap_slow, fast_pricey, middle], OfferFilters())] == [2, 3, 1]


def test_rank_discounts_unreliable_hosts() -> None:
    reliable = offer(1, dlperf=60.0, price_per_hour=0.40, reliability=0.99)
    flaky_cheaper = offer(2, dlperf=60.0, price_per_hour=0.36, reliability=0.90)  # 10 % cheaper only
    much_cheaper = offer(3, dlperf=60.0, price_per_hour=0.20, reliability=0.90)
    ranked = rank_offers([reliable, flaky_cheaper, much_cheaper], OfferFilters())
    assert [o.id for o in ranked] == [3, 1, 2]
    assert 0.90**RELIABILITY_EXPONENT / 0.36 < 0.99**RELIABILITY_EXPONENT / 0.40


def test_rank_puts_offers_without_dlperf_last_by_price_and_reliability() -> None:
    unknown_cheap = offer(1, dlperf=0.0, price_per_hour=0.05)
    unknown_dear = offer(2, dlperf=0.0, price_per_hour=0.30)
    known = offer(3, dlperf=10.0, price_per_hour=1.0)
    assert [o.id for o in rank_offers([unknown_dear, unknown_cheap, known], OfferFilters())] == [3, 1, 2]


def test_rank_filters_first() -> None:
    ranked = rank_offers([offer(1), offer(2, verified=False), offer(3, gpu_name="RTX 3090")], OfferFilters())
    assert [o.id for o in ranked] == [1, 3]
    assert rank_offers([offer(1)], OfferFilters(gpu_names=("H100 SXM",))) == []


def test_rank_ties_are_deterministic() -> None:
    same = [offer(i, dlperf=60.0, price_per_hour=0.4, reliability=0.99) for i in (5, 3, 9, 1)]
    cheaper_same_score = offer(7, dlperf=30.0, price_per_hour=0.2, reliability=0.99)
    pool = [*same, cheaper_same_score]
    expected = [7, 1, 3, 5, 9]  # equal score: lower price, then lower id
    for seed in range(5):
        random.Random(seed).shuffle(pool)
        assert [o.id for o in rank_offers(pool, OfferFilters())] == expected


offers_strategy = st.builds(
    Offer,
    id=st.integers(1, 10_000),
    gpu_name=st.sampled_from(["RTX 4090", "RTX 3090", "A100 SXM4"]),
    num_gpus=st.integers(1, 2),
    gpu_ram_gb=st.floats(8, 80),
    price_per_hour=st.floats(0.05, 4.0),
    reliability=st.floats(0.5, 1.0),
    verified=st.booleans(),
    cuda_max_good=st.none() | st.floats(11.0, 12.8),
    dlperf=st.floats(0, 200),
)


@given(st.lists(offers_strategy, max_size=12, unique_by=lambda o: o.id), st.randoms())
def test_rank_is_a_sorted_filtered_permutation(offers: list[Offer], rnd: random.Random) -> None:
    filters = OfferFilters(min_vram_gb=20, max_price_per_hour=2.0, min_reliability=0.8)
    ranked = rank_offers(offers, filters)
    shuffled = list(offers)
    rnd.shuffle(shuffled)
    assert rank_offers(shuffled, filters) == ranked
    assert {o.id for o in ranked} == {o.id for o in offers if accept(o, filters)}
    scored = [o for o in ranked if o.dlperf > 0]
    assert ranked[: len(scored)] == scored  # offers with dlperf come first
    values = [o.dlperf / o.price_per_hour * o.reliability**RELIABILITY_EXPONENT for o in scored]
    assert all(a >= b or math.isclose(a, b) for a, b in itertools.pairwise(values))


# -- search query ------------------------------------------------------------------------------------


def test_search_query_full() -> None:
    filters = OfferFilters(
        gpu_names=("RTX_4090", "RTX 3090"),
        min_vram_gb=24,
        max_price_per_hour=0.6,
        min_reliability=0.98,
        verified_only=True,
        min_cuda=12.1,
        excluded_regions=("CN",),
        num_gpus=1,
        disk_gb=60,
    )
    assert search_query(filters, limit=20) == {
        "verified": {"eq": True},
        "rentable": {"eq": True},
        "rented": {"eq": False},
        "external": {"eq": False},
        "gpu_frac": {"gte": 1.0},
        "gpu_name": {"in": ["RTX 4090", "RTX 3090"]},
        "num_gpus": {"eq": 1},
        "gpu_ram": {"gte": 24000},
        "dph_total": {"lte": 0.6},
        "reliability": {"gte": 0.98},
        "cuda_max_good": {"gte": 12.1},
        "type": "on-demand",
        "order": [["dph_total", "asc"]],
        "limit": 20,
        "allocated_storage": 60,
    }


def test_search_query_defaults_leave_out_what_is_not_asked() -> None:
    query = search_query(OfferFilters(verified_only=False))
    for absent in ("verified", "gpu_name", "gpu_ram", "dph_total", "reliability", "cuda_max_good"):
        assert absent not in query
    assert query["rentable"] == {"eq": True} and query["rented"] == {"eq": False}
    assert query["allocated_storage"] == 40.0
    assert query["type"] == "on-demand"
    assert isinstance(query["limit"], int)
