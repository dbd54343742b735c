"""POST /v1/quotes, the admin price endpoint, prices in GET /v1/tools, and the profit and loss
report (GET /v1/admin/costs/pnl)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from swarmstation.api.app import ControlPlane
from swarmstation.control import jobs as jobs_ops
from swarmstation.control import ledger
from swarmstation.store.db import transaction
from swarmstation.store.models import Hold, Job
from tests.conftest import FakeClock
from tests.control.test_charging import _lora
from tests.helpers import add_instance, add_user

# a derived price that is not 0: 10 s (the estimate) x $0.36/h x 2 = $0.002 = 2 credits
PLANE_SETTINGS = {"default_gpu_price_per_hour": "0.36", "min_price_credits": 1}
TOOL = "sd15-txt2img"


def _user(plane: ControlPlane, clock: FakeClock, credits: int = 0) -> tuple[str, dict[str, str]]:
    with transaction(plane.state.sessions) as s:
        user, key = add_user(s, clock())
        if credits:
            ledger.grant(
                s, user_id=user.id, amount=credits, reason="t", actor_id=None, key=f"g:{user.id}", now=clock()
            )
        return user.id, {"Authorization": f"Bearer {key}"}


def _put_price(api: TestClient, admin: dict[str, str], body: dict[str, Any], tool: str = TOOL) -> Any:
    return api.put(f"/v1/admin/tools/{tool}/price", json=body, headers=admin)


def test_tools_show_a_derived_price_until_an_admin_sets_one(
    api: TestClient, admin: dict[str, str], plane: ControlPlane, clock: FakeClock
) -> None:
    _, alice = _user(plane, clock)
    listed = {t["slug"]: t for t in api.get("/v1/tools", headers=alice).json()}
    assert listed[TOOL]["price"] == {"model": "derived", "credits": 2, "cap": None, "estimate": 2}
    r = _put_price(api, admin, {"model": "per_gpu_second", "credits": 3, "cap": 90})
    assert r.status_code == 200, r.text
    assert r.json() == {"model": "per_gpu_second", "credits": 3, "cap": 90, "estimate": 90}
    shown = api.get(f"/v1/tools/{TOOL}", headers=alice).json()["price"]
    assert shown["model"] == "per_gpu_second" and shown["cap"] == 90
    back = api.delete(f"/v1/admin/tools/{TOOL}/price", headers=admin)
    assert back.status_code == 200 and back.json()["model"] == "derived"


def test_bad_prices_are_refused_with_the_reason(
    api: TestClient, admin: dict[str, str], plane: ControlPlane, clock: FakeClock
) -> None:
    no_cap = _put_price(api, admin, {"model": "per_gpu_second", "credits": 3})
    assert no_cap.status_code == 422 and "needs a cap" in no_cap.json()["detail"]
    cap_elsewhere = _put_price(api, admin, {"model": "per_run", "credits": 3, "cap": 9})
    assert cap_elsewhere.status_code == 422 and cap_elsewhere.json()["code"] == "invalid_price"
    # an upscaler's output size follows its input image: no per-megapixel quote is possible
    sizeless = _put_price(api, admin, {"model": "per_megapixel", "credits": 3}, tool="upscale-4x")
    assert sizeless.status_code == 422 and "output size" in sizeless.json()["detail"]
    for body in (
        {"model": "per_run", "credits": -1},
        {"model": "per_run", "credits": 1.5},
        {"model": "free"},
    ):
        assert _put_price(api, admin, body).status_code == 422, body
    assert _put_price(api, admin, {"model": "per_run", "credits": 1}, tool="nope").status_code == 404
    _, alice = _user(plane, clock)
    assert _put_price(api, alice, {"model": "per_run", "credits": 1}).status_code == 403


def test_a_quote_prices_the_inputs_and_writes_nothing(
    api: TestClient, admin: dict[str, str], plane: ControlPlane, clock: FakeClock
) -> None:
    assert _put_price(api, admin, {"model": "per_megapixel", "credits": 4}).status_code == 200
    _, alice = _user(plane, clock)
    body = {"tool": TOOL, "inputs": {"prompt": "a fox", "width": 1024, "height": 1024}}
    r = api.post("/v1/quotes", json=body, headers=alice)
    assert r.status_code == 200, r.text
    # 1024 x 1024 = 1.048576 MP x 4 credits = 4.19 → 5
    assert r.json() == {
        "total": 5,
        "lines": [{"kind": "tool", "tool": TOOL, "model": "per_megapixel", "credits": 5}],
        "charged": True,
    }
    small = api.post("/v1/quotes", json={"tool": TOOL, "inputs": {"prompt": "a fox"}}, headers=alice)
    assert small.json()["total"] == 2  # 512 x 512 by default: 1.05 → 2
    assert api.post("/v1/quotes", json=body, headers=admin).json()["charged"] is False
    with transaction(plane.state.sessions) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0
        assert s.scalar(select(func.count()).select_from(Hold)) == 0


def test_quotes_refuse_what_a_job_would_refuse(
    plane: ControlPlane, api: TestClient, clock: FakeClock
) -> None:
    _, alice = _user(plane, clock)
    unknown = api.post("/v1/quotes", json={"tool": "no-such-tool", "inputs": {}}, headers=alice)
    assert unknown.status_code == 404 and "unknown tool" in unknown.json()["detail"]
    bad = api.post(
        "/v1/quotes", json={"tool": TOOL, "inputs": {"prompt": "a fox", "width": "wide"}}, headers=alice
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "inputs.width"
    missing = api.post("/v1/quotes", json={"tool": TOOL, "inputs": {}}, headers=alice)
    assert missing.status_code == 422
    extra = api.post("/v1/quotes", json={"tool": TOOL, "inputs": {}, "x": 1}, headers=alice)
    assert extra.status_code == 422
    assert api.post("/v1/quotes", json={"tool": TOOL, "inputs": {"prompt": "a"}}).status_code == 401


def test_a_quote_names_the_royalty_of_another_authors_lora(
    api: TestClient, admin: dict[str, str], plane: ControlPlane, clock: FakeClock
) -> None:
    assert _put_price(api, admin, {"model": "per_run", "credits": 100}).status_code == 200
    with transaction(plane.state.sessions) as s:
        author, _ = add_user(s, clock(), name="inkmaster")
        _lora(s, clock, author, "inky")
    _, alice = _user(plane, clock)
    r = api.post(
        "/v1/quotes", json={"tool": TOOL, "inputs": {"prompt": "a fox <lora:inky:0.8>"}}, headers=alice
    )
    assert r.status_code == 200, r.text
    assert r.json()["total"] == 100  # royalties come out of the total
    assert r.json()["lines"][1] == {
        "kind": "royalty",
        "lora": "inky",
        "author": "inkmaster",
        "bps": 500,
        "credits": 5,
        "included": True,
    }


def test_pnl_shows_revenue_royalties_and_cost_by_tool(
    api: TestClient, admin: dict[str, str], plane: ControlPlane, clock: FakeClock
) -> None:
    assert _put_price(api, admin, {"model": "per_run", "credits": 40}).status_code == 200
    user_id, alice = _user(plane, clock, credits=100)
    job = api.post("/v1/jobs", json={"tool": TOOL, "inputs": {"prompt": "a fox"}}, headers=alice).json()
    with transaction(plane.state.sessions) as s:
        inst, _ = add_instance(s, clock())
        inst.price_per_hour = 3.6  # $0.001 a second
        row = s.get(Job, job["id"])
        assert row is not None
        jobs_ops.assign_job(s, row, inst, lease_seconds=60, now=clock())
        jobs_ops.mark_running(s, row, lease_seconds=60, now=clock())
        clock.advance(10)
        jobs_ops.complete_job(s, row, timings={"run_seconds": 10.0}, now=clock())
    r = api.get("/v1/admin/costs/pnl", params={"group_by": "tool"}, headers=admin)
    assert r.status_code == 200, r.text
    data = r.json()
    assert (data["revenue_credits"], data["royalty_credits"], data["credits_per_usd"]) == (40, 0, 1000)
    row = next(x for x in data["rows"] if x["key"] == TOOL)
    assert (row["revenue_usd"], row["cost_usd"], row["margin_usd"]) == ("0.040000", "0.010000", "0.030000")
    assert (row["jobs_charged"], row["jobs"]) == (1, 1)
    by_user = api.get("/v1/admin/costs/pnl", params={"group_by": "user"}, headers=admin).json()
    assert [x["key"] for x in by_user["rows"] if x["revenue_credits"]] == [user_id]
    assert api.get("/v1/admin/costs/pnl", params={"group_by": "pool"}, headers=admin).status_code == 422
    assert api.get("/v1/admin/costs/pnl", headers=alice).status_code == 403
