"""GET /v1/admin/costs/series: revenue, royalties, cost and jobs per hour or day, every bucket
from `since` to now, agreeing with the P&L report."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane
from swarmstation.control import jobs as jobs_ops
from swarmstation.control import ledger
from swarmstation.domain.states import InstanceState
from swarmstation.store.db import transaction
from swarmstation.store.models import Job
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user

PLANE_SETTINGS = {"default_gpu_price_per_hour": "0.36", "min_price_credits": 1}
TOOL = "sd15-txt2img"


def _payer(plane: ControlPlane, clock: FakeClock) -> dict[str, str]:
    with transaction(plane.state.sessions) as s:
        user, key = add_user(s, clock())
        ledger.grant(
            s, user_id=user.id, amount=1000, reason="t", actor_id=None, key=f"g:{user.id}", now=clock()
        )
    return {"Authorization": f"Bearer {key}"}


def _run_job(
    api: TestClient, plane: ControlPlane, clock: FakeClock, who: dict[str, str], seconds: int
) -> None:
    """A job submitted, run for `seconds` on a new $3.60/h instance, and completed (charged)."""
    job = api.post("/v1/jobs", json={"tool": TOOL, "inputs": {"prompt": "a fox"}}, headers=who).json()
    with transaction(plane.state.sessions) as s:
        inst, _ = add_instance(s, clock())
        inst.price_per_hour = 3.6  # $0.001 a second
        row = s.get(Job, job["id"])
        assert row is not None
        jobs_ops.assign_job(s, row, inst, lease_seconds=600, now=clock())
        jobs_ops.mark_running(s, row, lease_seconds=600, now=clock())
        clock.advance(seconds)
        jobs_ops.complete_job(s, row, timings={"run_seconds": float(seconds)}, now=clock())
        # gone with its job: its whole bill is the job's, and the next job needs a new one
        inst.state, inst.terminated_at = InstanceState.TERMINATED, clock()


def _series(api: TestClient, admin: dict[str, str], **params: Any) -> Any:
    r = api.get("/v1/admin/costs/series", params=params, headers=admin)
    assert r.status_code == 200, r.text
    return r.json()


def test_hourly_buckets_carry_each_jobs_revenue_and_cost_and_agree_with_the_pnl(
    api: TestClient, admin: dict[str, str], plane: ControlPlane, clock: FakeClock
) -> None:
    price = {"model": "per_run", "credits": 40}
    assert api.put(f"/v1/admin/tools/{TOOL}/price", json=price, headers=admin).status_code == 200
    alice = _payer(plane, clock)
    start = clock()  # 2026-01-01 12:00 UTC
    _run_job(api, plane, clock, alice, 10)  # ends 12:00:10
    clock.advance(2 * 3600)
    _run_job(api, plane, clock, alice, 20)  # ends 14:00:30
    clock.advance(600)

    data = _series(api, admin, bucket="hour", since=(start - timedelta(hours=1)).isoformat())
    assert data["bucket"] == "hour" and data["credits_per_usd"] == 1000
    points = data["points"]
    # every hour from 11:00 to 14:00, the empty ones too
    assert [p["start"][11:16] for p in points] == ["11:00", "12:00", "13:00", "14:00"]
    assert [p["jobs"] for p in points] == [0, 1, 0, 1]
    assert [p["revenue_credits"] for p in points] == [0, 40, 0, 40]
    assert [p["revenue_usd"] for p in points] == ["0.000000", "0.040000", "0.000000", "0.040000"]
    assert [p["cost_usd"] for p in points] == ["0.000000", "0.010000", "0.000000", "0.020000"]

    # the same money as the P&L report, in daily buckets
    pnl = api.get("/v1/admin/costs/pnl", params={"group_by": "day"}, headers=admin).json()
    daily = _series(api, admin, bucket="day", since=start.isoformat())
    assert len(daily["points"]) == 1 and daily["points"][0]["start"].startswith("2026-01-01T00:00:00")
    assert daily["points"][0]["revenue_credits"] == pnl["revenue_credits"] == 80
    assert daily["points"][0]["cost_usd"] == pnl["cost_usd"] == "0.030000"


def test_defaults_limits_and_who_may_ask(
    api: TestClient, admin: dict[str, str], plane: ControlPlane, clock: FakeClock
) -> None:
    hourly = _series(api, admin)
    assert len(hourly["points"]) == 49 and all(p["jobs"] == 0 for p in hourly["points"])  # 48 h back, and now
    assert len(_series(api, admin, bucket="day")["points"]) == 31
    bad = [
        {"bucket": "minute"},
        {"since": "2026-01-01T00:00:00"},  # no time zone
        {"since": (clock() + timedelta(days=2)).isoformat()},
        {"bucket": "hour", "since": (clock() - timedelta(days=365)).isoformat()},  # too many buckets
    ]
    for params in bad:
        assert api.get("/v1/admin/costs/series", params=params, headers=admin).status_code == 422, params
    assert api.get("/v1/admin/costs/series", headers=_payer(plane, clock)).status_code == 403
    assert api.get("/v1/admin/costs/series").status_code == 401
