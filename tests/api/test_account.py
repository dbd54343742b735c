"""Credits over HTTP: GET /v1/account and its ledger, the admin's grants (idempotent, bounded,
naming the admin), welcome credits for new users, and the 402 body of InsufficientCredits."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from swarmstation.api.errors import install_error_handlers
from swarmstation.control import ledger
from swarmstation.domain.credits import InsufficientCredits
from swarmstation.store.db import transaction

PLANE_SETTINGS = {"welcome_credits": 25}


def new_user(
    api: TestClient, admin: dict[str, str], name: str, role: str = "user"
) -> tuple[str, dict[str, str]]:
    resp = api.post("/v1/admin/users", json={"name": name, "role": role}, headers=admin)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    return body["id"], {"Authorization": f"Bearer {body['api_key']}"}


def grant(api: TestClient, admin: dict[str, str], user: str, body: Any, key: str | None = None) -> Any:
    headers = {**admin, **({"Idempotency-Key": key} if key else {})}
    return api.post(f"/v1/admin/users/{user}/credits", json=body, headers=headers)


def test_a_new_user_gets_the_welcome_credits_as_a_grant(api: TestClient, admin: dict[str, str]) -> None:
    user_id, alice = new_user(api, admin, "alice")
    account = api.get("/v1/account", headers=alice).json()
    assert (account["balance"], account["held"], account["available"]) == (25, 0, 25)
    assert account["user"]["id"] == user_id and account["credits_per_usd"] == 1000
    entries = api.get("/v1/account/ledger", headers=alice).json()["entries"]
    assert [(e["kind"], e["amount"], e["reason"]) for e in entries] == [("grant", 25, "welcome credits")]


def test_an_admin_grants_and_adjusts_by_id_or_name(
    api: TestClient, admin: dict[str, str], plane: Any
) -> None:
    user_id, bob = new_user(api, admin, "bob")
    resp = grant(api, admin, "bob", {"amount": 1000, "reason": "beta tester"})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert (body["balance"], body["available"], body["entry"]["kind"]) == (1025, 1025, "grant")
    admin_id = api.get("/v1/account", headers=admin).json()["user"]["id"]
    assert body["entry"]["actor_id"] == admin_id and body["entry"]["reason"] == "beta tester"
    resp = grant(api, admin, user_id, {"amount": -25, "reason": "welcome taken back"})
    assert resp.status_code == 201 and resp.json()["entry"]["kind"] == "adjustment"
    assert api.get("/v1/account", headers=bob).json()["balance"] == 1000
    as_admin = api.get("/v1/admin/users/bob/account", headers=admin).json()
    assert as_admin["balance"] == 1000 and as_admin["user"]["name"] == "bob"
    assert len(api.get(f"/v1/admin/users/{user_id}/ledger", headers=admin).json()["entries"]) == 3
    with transaction(plane.state.sessions) as s:
        assert ledger.verify(s) == []


def test_an_idempotency_key_grants_once(api: TestClient, admin: dict[str, str]) -> None:
    new_user(api, admin, "carol")
    body = {"amount": 500, "reason": "refund"}
    first = grant(api, admin, "carol", body, key="refund-1")
    again = grant(api, admin, "carol", body, key="refund-1")
    assert first.status_code == again.status_code == 201
    assert first.json()["entry"]["id"] == again.json()["entry"]["id"]
    assert again.json()["balance"] == 525
    other = grant(api, admin, "carol", {"amount": 501, "reason": "refund"}, key="refund-1")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert grant(api, admin, "carol", body, key="x" * 256).status_code == 422
    longest = grant(api, admin, "carol", body, key="x" * 255)  # as long as POST /v1/jobs allows
    assert longest.status_code == 201 and grant(api, admin, "carol", body, key="x" * 255).json()[
        "entry"
    ]["id"] == longest.json()["entry"]["id"]
    assert grant(api, admin, "carol", body, key="has space").status_code == 422


def test_bad_grants_are_refused_with_a_4xx_and_write_nothing(
    api: TestClient, admin: dict[str, str], plane: Any
) -> None:
    user_id, dave = new_user(api, admin, "dave")
    for bad in (
        {"amount": 0, "reason": "x"},
        {"amount": 1.5, "reason": "x"},
        {"amount": "100", "reason": "x"},
        {"amount": True, "reason": "x"},
        {"amount": 10**30, "reason": "x"},
        {"amount": 10**13, "reason": "x"},  # over SWARMSTATION_MAX_CREDIT_GRANT
        {"amount": 5, "reason": "   "},
        {"amount": 5},
        {"amount": -26, "reason": "more than there is"},
    ):
        resp = grant(api, admin, "dave", bad)
        assert resp.status_code == 422, (bad, resp.text)
        assert resp.json()["code"] in ("validation_error", "invalid_request"), resp.json()
    assert grant(api, admin, "nobody", {"amount": 5, "reason": "x"}).status_code == 404
    refused = grant(api, dave, user_id, {"amount": 5, "reason": "to myself"})
    assert refused.status_code == 403
    assert api.get("/v1/admin/users/dave/account", headers=dave).status_code == 403
    assert api.get("/v1/admin/users/nobody/ledger", headers=admin).status_code == 404
    assert api.get("/v1/account", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert api.get("/v1/account", headers=dave).json()["balance"] == 25
    with transaction(plane.state.sessions) as s:
        assert len(ledger.entries(s, user_id, limit=10)) == 1
        assert ledger.verify(s) == []


def test_the_ledger_pages_newest_first(api: TestClient, admin: dict[str, str]) -> None:
    _, erin = new_user(api, admin, "erin")
    for n in range(1, 5):
        assert grant(api, admin, "erin", {"amount": n, "reason": f"n{n}"}).status_code == 201
    page = api.get("/v1/account/ledger?limit=3", headers=erin).json()
    assert [e["amount"] for e in page["entries"]] == [4, 3, 2]
    rest = api.get(f"/v1/account/ledger?limit=3&before={page['next_before']}", headers=erin).json()
    assert [e["amount"] for e in rest["entries"]] == [1, 25] and rest["next_before"] is None
    for bad in ("limit=0", "limit=501", "before=0", "before=x", "limit=1.5"):
        assert api.get(f"/v1/account/ledger?{bad}", headers=erin).status_code == 422, bad


def test_insufficient_credits_answers_402_with_required_and_available() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/spend")
    def spend() -> None:
        raise InsufficientCredits(required=120, available=45)

    resp = TestClient(app).get("/spend")
    assert resp.status_code == 402
    assert resp.json() == {
        "detail": "insufficient credits: this needs 120, 45 available",
        "code": "insufficient_credits",
        "required": 120,
        "available": 45,
    }

