"""A user's own API keys (issue 13): created and shown once, listed by prefix and name, revoked at
once (the identity cache does not keep a revoked key alive), never another user's; and the CLI,
`swarmstation keys create|list|revoke`, against a real `swarmstation serve`."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane
from swarmstation.store.db import transaction
from tests.conftest import FakeClock
from tests.helpers import add_user
from tests.served import served


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_create_list_and_revoke_own_keys(plane: ControlPlane, api: TestClient, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        _, first_key = add_user(s, clock.now, name="alice")
    created = api.post("/v1/account/keys", json={"name": "  laptop "}, headers=_bearer(first_key))
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["name"] == "laptop" and key["api_key"].startswith("ss_")
    assert key["prefix"] == key["api_key"][:10] and key["revoked_at"] is None

    listed = api.get("/v1/account/keys", headers=_bearer(key["api_key"])).json()  # the new key works
    assert [k["name"] for k in listed] == ["", "laptop"]
    assert all("api_key" not in k for k in listed)  # shown once, never again
    assert key["api_key"] not in json.dumps(listed)

    assert api.get("/v1/auth/session", headers=_bearer(key["api_key"])).status_code == 200  # now cached
    assert api.delete(f"/v1/account/keys/{key['id']}", headers=_bearer(first_key)).status_code == 204
    refused = api.get("/v1/auth/session", headers=_bearer(key["api_key"]))
    assert refused.status_code == 401  # at once, not after the cache's TTL
    listed = api.get("/v1/account/keys", headers=_bearer(first_key)).json()
    assert listed[1]["revoked_at"] is not None
    assert (
        api.delete(f"/v1/account/keys/{key['id']}", headers=_bearer(first_key)).status_code == 204
    )  # again: no-op


def test_another_users_key_is_not_yours(plane: ControlPlane, api: TestClient, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        _, alice_key = add_user(s, clock.now, name="alice")
        _, bob_key = add_user(s, clock.now, name="bob")
    bobs = api.post("/v1/account/keys", json={"name": "bob's"}, headers=_bearer(bob_key)).json()
    resp = api.delete(f"/v1/account/keys/{bobs['id']}", headers=_bearer(alice_key))
    assert resp.status_code == 404
    assert [k["name"] for k in api.get("/v1/account/keys", headers=_bearer(alice_key)).json()] == [""]
    assert api.get("/v1/auth/session", headers=_bearer(bobs["api_key"])).status_code == 200
    assert api.delete("/v1/account/keys/no-such-key", headers=_bearer(alice_key)).status_code == 404


def test_bad_key_names_are_refused(plane: ControlPlane, api: TestClient, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        _, key = add_user(s, clock.now, name="alice")
    for body in ({"name": ""}, {"name": "   "}, {"name": "x" * 101}, {"name": "a\nb"}, {}, {"name": 5}):
        resp = api.post("/v1/account/keys", json=body, headers=_bearer(key))
        assert resp.status_code == 422 and resp.json()["code"] == "validation_error", (body, resp.text)
    assert len(api.get("/v1/account/keys", headers=_bearer(key)).json()) == 1
    assert api.post("/v1/account/keys", json={"name": "x"}).status_code == 401


def test_the_keys_commands(tmp_path: Path) -> None:
    with served(tmp_path) as plane:
        made = plane.cli("keys", "create", "deploy bot", "--json")
        assert made.returncode == 0, made.stderr
        key = json.loads(made.stdout)
        assert key["name"] == "deploy bot" and key["api_key"].startswith("ss_")

        listed = plane.cli("keys", "list", api_key=key["api_key"])
        assert listed.returncode == 0, listed.stderr
        assert (
            key["id"] in listed.stdout
            and "deploy bot" in listed.stdout
            and key["api_key"] not in listed.stdout
        )
        as_json = json.loads(plane.cli("keys", "list", "--json").stdout)
        assert [k["id"] for k in as_json if k["revoked_at"] is None][-1] == key["id"]

        revoked = plane.cli("keys", "revoke", key["id"])
        assert revoked.returncode == 0 and "revoked" in revoked.stdout
        resp = httpx.get(f"{plane.url}/v1/account/keys", headers=_bearer(key["api_key"]), timeout=10)
        assert resp.status_code == 401
        missing = plane.cli("keys", "revoke", "no-such-key")
        assert missing.returncode == 1 and "not found" in missing.stderr and "Traceback" not in missing.stderr
