"""Interruptible rentals as an operator sets them: `rental` and `bid_margin` over the pools API
(validated, shown in the pool view) and how they reach the provider's offer filters (the 0008
migration is tested in tests/store/test_migrations.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from swarmstation.control.pools import offer_filters
from swarmstation.store.models import Pool


def test_rental_settings_over_the_api(api: TestClient, admin: dict[str, str]) -> None:
    r = api.post("/v1/admin/pools", headers=admin, json={"name": "plain"})
    assert r.status_code == 201, r.text
    assert r.json()["rental"] == "on-demand" and r.json()["bid_margin"] == 1.1

    body = {"name": "cheap", "rental": "interruptible", "bid_margin": 1.25}
    r = api.post("/v1/admin/pools", headers=admin, json=body)
    assert r.status_code == 201, r.text
    got = api.get("/v1/admin/pools/cheap", headers=admin).json()
    assert got["rental"] == "interruptible" and got["bid_margin"] == 1.25
    listed = {p["name"]: p for p in api.get("/v1/admin/pools", headers=admin).json()}
    assert listed["cheap"]["rental"] == "interruptible" and listed["plain"]["rental"] == "on-demand"

    for margin in (1.0, 3.0):
        r = api.patch("/v1/admin/pools/cheap", headers=admin, json={"bid_margin": margin})
        assert r.status_code == 200 and r.json()["bid_margin"] == margin, r.text
    r = api.patch("/v1/admin/pools/cheap", headers=admin, json={"rental": "on-demand"})
    assert r.status_code == 200 and r.json()["rental"] == "on-demand" and r.json()["bid_margin"] == 3.0

    bad = [
        ({"rental": "spot"}, "rental", "'on-demand' or 'interruptible'"),
        ({"rental": "bid"}, "rental", "'on-demand' or 'interruptible'"),
        ({"rental": ""}, "rental", "'on-demand' or 'interruptible'"),
        ({"rental": None}, "rental", "must not be null"),
        ({"bid_margin": 0.99}, "bid_margin", "greater than or equal to 1"),
        ({"bid_margin": 0}, "bid_margin", "greater than or equal to 1"),
        ({"bid_margin": 3.01}, "bid_margin", "less than or equal to 3"),
        ({"bid_margin": "high"}, "bid_margin", "number"),
        ({"bid_margin": None}, "bid_margin", "must not be null"),
        # not a GPU filter: set as its own pool setting, so that it is validated
        ({"gpu_filters": {"interruptible": True}}, "interruptible", "Extra inputs are not permitted"),
    ]
    for i, (fields, name, why) in enumerate(bad):
        for r in (
            api.post("/v1/admin/pools", headers=admin, json={"name": f"bad{i}", **fields}),
            api.patch("/v1/admin/pools/cheap", headers=admin, json=fields),
        ):
            assert r.status_code == 422, (fields, r.text)
            assert name in r.json()["detail"] and why in r.json()["detail"], (fields, r.text)
    assert api.get("/v1/admin/pools/bad0", headers=admin).status_code == 404
    got = api.get("/v1/admin/pools/cheap", headers=admin).json()
    assert got["rental"] == "on-demand" and got["bid_margin"] == 3.0  # unchanged


def test_offer_filters_carry_the_rental_from_the_pool_columns_only() -> None:
    pool = Pool(
        name="p",
        provider="vastai",
        min_instances=0,
        max_instances=1,
        scale_up_queue_threshold=1,
        idle_minutes=5,
        created_at=datetime.now(UTC),
        gpu_filters={"max_price_per_hour": 0.3, "interruptible": False, "bid_margin": 9.0},
        rental="interruptible",
        bid_margin=1.5,
    )
    filters = offer_filters(pool)
    assert filters.interruptible and filters.bid_margin == 1.5 and filters.max_price_per_hour == 0.3
    pool.rental = "on-demand"
    assert not offer_filters(pool).interruptible
