"""`Idempotency-Key` on POST /v1/jobs: a retry answers the first job instead of submitting another."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.store.db import transaction
from swarmstation.store.models import IdempotencyKey, Job
from tests.conftest import FakeClock
from tests.helpers import add_user

BODY = {"tool": "sd15-txt2img", "inputs": {"prompt": "a fox", "steps": 4}}


@pytest.fixture
def cp(settings: Settings, clock: FakeClock) -> Iterator[ControlPlane]:
    quiet = settings.model_copy(update={"scheduler_interval_seconds": 3600, "control_interval_seconds": 3600})
    plane = build(quiet, provider=None, clock=clock)
    yield plane
    plane.state.engine.dispose()


@pytest.fixture
def api(cp: ControlPlane) -> Iterator[TestClient]:
    with TestClient(cp.app, raise_server_exceptions=False) as client:
        yield client


def key_user(cp: ControlPlane, clock: FakeClock, name: str) -> dict[str, str]:
    with transaction(cp.state.sessions) as s:
        _, key = add_user(s, clock(), name)
    return {"Authorization": f"Bearer {key}"}


def jobs(cp: ControlPlane) -> int:
    with transaction(cp.state.sessions) as s:
        return s.scalar(select(func.count()).select_from(Job)) or 0


def post(api: TestClient, auth: dict[str, str], key: str | None, body: Any = BODY) -> Any:
    headers = {**auth, **({"Idempotency-Key": key} if key is not None else {})}
    if isinstance(body, str):
        return api.post("/v1/jobs", headers={**headers, "Content-Type": "application/json"}, content=body)
    return api.post("/v1/jobs", headers=headers, json=body)


def test_a_retry_with_the_same_key_answers_the_first_job(
    api: TestClient, cp: ControlPlane, clock: FakeClock
) -> None:
    alice = key_user(cp, clock, "alice")
    first = post(api, alice, "retry-1")
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = post(api, alice, "retry-1")
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    # The same request written differently (key order, spacing) is the same request.
    reordered = json.dumps({"inputs": {"steps": 4, "prompt": "a fox"}, "tool": "sd15-txt2img"}, indent=2)
    assert post(api, alice, "retry-1", reordered).json()["id"] == first.json()["id"]
    assert jobs(cp) == 1
    # Without a key, or with another key, it is a new job.
    assert post(api, alice, None).json()["id"] != first.json()["id"]
    assert post(api, alice, "retry-2").json()["id"] != first.json()["id"]
    assert jobs(cp) == 3


def test_the_same_key_with_another_body_is_refused(
    api: TestClient, cp: ControlPlane, clock: FakeClock
) -> None:
    alice = key_user(cp, clock, "alice")
    assert post(api, alice, "k").status_code == 201
    r = post(api, alice, "k", {**BODY, "inputs": {"prompt": "a wolf"}})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "idempotency_key_reused" and "Idempotency-Key" in r.json()["detail"]
    assert jobs(cp) == 1


def test_keys_belong_to_their_user(api: TestClient, cp: ControlPlane, clock: FakeClock) -> None:
    alice, bob = key_user(cp, clock, "alice"), key_user(cp, clock, "bob")
    a = post(api, alice, "shared").json()
    b = post(api, bob, "shared")
    assert b.status_code == 201 and b.json()["id"] != a["id"]
    # Bob's key does not reveal or replay Alice's job, even with a different body.
    assert post(api, bob, "shared", {**BODY, "inputs": {"prompt": "x"}}).status_code == 422
    assert jobs(cp) == 2


def test_keys_are_kept_for_24_hours(api: TestClient, cp: ControlPlane, clock: FakeClock) -> None:
    alice = key_user(cp, clock, "alice")
    first = post(api, alice, "day").json()
    clock.advance(24 * 3600 - 60)
    assert post(api, alice, "day").json()["id"] == first["id"]
    clock.advance(120)  # past the retention: the key is free again
    later = post(api, alice, "day")
    assert later.status_code == 201 and later.json()["id"] != first["id"]
    assert post(api, alice, "day").json()["id"] == later.json()["id"]
    with transaction(cp.state.sessions) as s:
        assert s.scalar(select(func.count()).select_from(IdempotencyKey)) == 1


def test_a_failed_request_leaves_its_key_unused(api: TestClient, cp: ControlPlane, clock: FakeClock) -> None:
    alice = key_user(cp, clock, "alice")
    bad = post(api, alice, "fix-me", {"tool": "sd15-txt2img", "inputs": {"steps": "many"}})
    assert bad.status_code == 422
    assert post(api, alice, "fix-me").status_code == 201
    assert jobs(cp) == 1


@pytest.mark.parametrize(
    ("key", "why"),
    [("x" * 256, "at most 255"), ("two words", "pattern"), ("", "at least 1")],
)
def test_bad_keys_are_refused(
    api: TestClient, cp: ControlPlane, clock: FakeClock, key: str, why: str
) -> None:
    alice = key_user(cp, clock, "alice")
    r = post(api, alice, key)
    assert r.status_code == 422 and "Idempotency-Key" in r.json()["detail"], r.text
    assert jobs(cp) == 0
    assert post(api, alice, "x" * 255).status_code == 201


def test_concurrent_requests_with_one_key_make_one_job(
    api: TestClient, cp: ControlPlane, clock: FakeClock
) -> None:
    alice = key_user(cp, clock, "alice")
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: post(api, alice, "burst"), range(8)))
    assert {r.status_code for r in replies} == {201}, [r.text for r in replies]
    assert len({r.json()["id"] for r in replies}) == 1
    assert jobs(cp) == 1


def test_the_key_is_documented(api: TestClient) -> None:
    op = api.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]
    header = next(p for p in op["parameters"] if p["name"] == "Idempotency-Key")
    assert header["in"] == "header" and header["schema"]["anyOf"][0]["maxLength"] == 255
