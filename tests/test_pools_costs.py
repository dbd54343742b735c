"""Pools over the API, cost reports, and one leader among control planes on one PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane
from swarmstation.control.leader import LeaderLock
from swarmstation.store.db import transaction
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
