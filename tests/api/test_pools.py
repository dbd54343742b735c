"""The pools API: CRUD and validation, the defaults a new pool gets (written once, in
domain.scaling.POOL_DEFAULTS, and followed by the table and the scaling policy), rental settings
(`rental`, `bid_margin`) and how they reach the provider's offer filters; cost reports; and one
leader among control planes on one PostgreSQL."""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect

from swarmstation.api.app import ControlPlane
from swarmstation.control.leader import LeaderLock
from swarmstation.control.pools import offer_filters
from swarmstation.domain.scaling import POOL_DEFAULTS, PoolConfig
from swarmstation.store.db import transaction
from swarmstation.store.models import Pool
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user, submit


def test_pool_crud_and_validation(api: TestClient, admin: dict[str, str]) -> None:
    body = {
        "name": "sdxl",
        "provider": "vastai",
        "image": "ghcr.io/x/worker:1",
        "min_instances": 0,
        "max_instances": 4,
        "max_spend_per_hour": 2.5,
        "gpu_filters": {"gpu_names": ["RTX 4090"], "min_vram_gb": 20, "max_price_per_hour": 0.6},
        "preload_models": [{"folder": "checkpoints", "name": "sd_xl_base_1.0.safetensors"}],
    }
    r = api.post("/v1/admin/pools", headers=admin, json=body)
    assert r.status_code == 201, r.text
    pool = r.json()
    assert pool["gpu_filters"]["gpu_names"] == ["RTX 4090"] and pool["gpu_filters"]["verified_only"] is True
    assert api.post("/v1/admin/pools", headers=admin, json=body).status_code == 409
    r = api.patch("/v1/admin/pools/sdxl", headers=admin, json={"max_instances": 6, "idle_minutes": 3})
    assert r.json()["max_instances"] == 6 and r.json()["idle_minutes"] == 3
    bad = [
        ({**body, "name": "Bad Name"}, "name"),
        ({**body, "name": "x1", "min_instances": 5, "max_instances": 2}, "min_instances"),
        ({**body, "name": "x2", "provider": "aws"}, "provider"),
        ({**body, "name": "x3", "gpu_filters": {"min_reliability": 2}}, "min_reliability"),
        ({**body, "name": "x4", "gpu_filters": {"bogus": 1}}, "bogus"),
        (
            {**body, "name": "x5", "preload_models": [{"folder": "checkpoints", "name": "../../etc/passwd"}]},
            "..",
        ),
        ({**body, "name": "x6", "image": ""}, "image"),
    ]
    for payload, fragment in bad:
        r = api.post("/v1/admin/pools", headers=admin, json=payload)
        assert r.status_code == 422 and fragment in r.json()["detail"], (payload, r.text)
    assert api.patch("/v1/admin/pools/sdxl", headers=admin, json={"min_instances": 9}).status_code == 422
    assert api.delete("/v1/admin/pools/default", headers=admin).status_code == 409
    assert api.delete("/v1/admin/pools/sdxl", headers=admin).status_code == 204
    assert api.get("/v1/admin/pools/sdxl", headers=admin).status_code == 404


def test_costs_add_up_by_every_grouping(
    api: TestClient, plane: ControlPlane, clock: FakeClock, admin: dict[str, str]
) -> None:
    t0 = clock()
    with transaction(plane.state.sessions) as s:
        user, _ = add_user(s, t0, "carol")
        inst, _ = add_instance(s, t0)
        inst.price_per_hour = 3.6  # $0.001 per second
        idle, _ = add_instance(s, t0)
        idle.price_per_hour = 0.36
        for start, length in ((100, 300), (500, 100)):
            job = submit(s, user, t0)
            job.state, job.instance_id = "COMPLETED", inst.id
            job.started_at, job.finished_at = (
                t0 + timedelta(seconds=start),
                t0 + timedelta(seconds=start + length),
            )
    clock.advance(1000)
    for group in ("pool", "instance", "user", "day", "tool"):
        data = api.get(f"/v1/admin/costs?group_by={group}", headers=admin).json()
        assert data["billed"] == pytest.approx(1.0 + 0.1)
        assert data["attributed"] == pytest.approx(1.0) and data["unattributed"] == pytest.approx(0.1)
        assert sum(r["cost"] for r in data["rows"]) == pytest.approx(1.1)
    by_user = api.get("/v1/admin/costs?group_by=user", headers=admin).json()["rows"]
    carol = next(r for r in by_user if r["jobs"] == 2)
    assert carol["cost"] == pytest.approx(1.0) and carol["gpu_seconds"] == pytest.approx(400)
    assert api.get("/v1/admin/costs?group_by=moon", headers=admin).status_code == 422
    assert api.get("/v1/admin/costs?since=2026-01-01T00:00:00", headers=admin).status_code == 422


def test_one_leader_among_control_planes(database_url: str, tmp_path: Path) -> None:
    """Two control planes on one database (PostgreSQL advisory lock, or a file lock for SQLite):
    exactly one leads, and the other takes over when it lets go."""
    from swarmstation.store.db import make_engine

    a, b = make_engine(database_url), make_engine(database_url)
    la, lb = LeaderLock(a, tmp_path / "leader.lock"), LeaderLock(b, tmp_path / "leader.lock")
    try:
        assert la.try_acquire() is True
        assert lb.try_acquire() is False
        assert la.try_acquire() is True  # still held
        la.release()
        assert lb.try_acquire() is True
        assert la.try_acquire() is False
    finally:
        la.release()
        lb.release()
        a.dispose()
        b.dispose()


def test_a_new_pool_gets_the_defaults(api: Any, admin: dict[str, str]) -> None:
    resp = api.post("/v1/admin/pools", json={"name": "plain"}, headers=admin)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert {name: created[name] for name in asdict(POOL_DEFAULTS)} == asdict(POOL_DEFAULTS)


def test_the_table_and_the_policy_use_the_same_defaults() -> None:
    columns = inspect(Pool).columns
    policy = {f.name: f.default for f in dataclasses.fields(PoolConfig) if f.default is not MISSING}
    for name, value in asdict(POOL_DEFAULTS).items():
        default = columns[name].default
        if default is not None:
            assert default.arg == value, name
        server = columns[name].server_default
        if server is not None:  # as the migrations wrote them
            assert server.arg == (value if isinstance(value, str) else f"{value:g}"), name
        if name in policy:
            assert policy[name] == value, name


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
