"""Failed authentications are slowed per client address: 429 with Retry-After, logged without the
secret; a known key is not slowed (issue 11, item 4)."""

from __future__ import annotations

import logging
import secrets

import pytest
from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane
from swarmstation.api.limits import AuthThrottle
from swarmstation.domain.ratelimit import FailureLimiter
from swarmstation.store.db import transaction
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user

PLANE_SETTINGS = {"auth_failures_per_minute": 5}


class Ticker:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the policy ------------------------------------------------------------------------------------
def test_a_burst_then_one_failure_per_refill() -> None:
    limiter = FailureLimiter(per_minute=6)  # a token back every 10 s
    waits = [limiter.record_failure("a", 0.0) for _ in range(6)]
    assert waits[:5] == [None] * 5
    assert waits[5] == pytest.approx(10.0)
    assert limiter.retry_after("a", 0.0) == pytest.approx(10.0)
    assert limiter.retry_after("a", 4.0) == pytest.approx(6.0)
    assert limiter.retry_after("a", 10.0) is None
    assert limiter.record_failure("a", 10.0) == pytest.approx(10.0)  # the earned token is spent again
    assert limiter.retry_after("b", 0.0) is None  # clients are counted apart


def test_a_clock_that_goes_back_earns_nothing() -> None:
    limiter = FailureLimiter(per_minute=1)
    limiter.record_failure("a", 100.0)
    assert limiter.retry_after("a", 50.0) == pytest.approx(60.0)


def test_zero_turns_the_limit_off() -> None:
    limiter = FailureLimiter(per_minute=0)
    assert all(limiter.record_failure("a", 0.0) is None for _ in range(1000))
    assert limiter.retry_after("a", 0.0) is None and len(limiter) == 0


def test_memory_is_bounded_and_the_latest_failures_are_kept() -> None:
    limiter = FailureLimiter(per_minute=2, max_clients=100)
    for i in range(1000):
        limiter.record_failure(f"c{i}", 0.0)
        limiter.record_failure(f"c{i}", 0.0)
    assert len(limiter) <= 100
    assert limiter.retry_after("c999", 0.0) is not None
    assert limiter.retry_after("c0", 0.0) is None


# -- over HTTP -------------------------------------------------------------------------------------
@pytest.fixture
def ticker(plane: ControlPlane) -> Ticker:
    ticker = Ticker()
    plane.state.auth_throttle = AuthThrottle(5, clock=ticker)
    return ticker


def random_key() -> dict[str, str]:
    return {"Authorization": f"Bearer ss_{secrets.token_urlsafe(32)}"}


def test_random_keys_are_slowed_and_told_when_to_retry(
    plane: ControlPlane, api: TestClient, ticker: Ticker, clock: FakeClock
) -> None:
    with transaction(plane.state.sessions) as s:
        _, alice_key = add_user(s, clock(), "alice")
        _, bob_key = add_user(s, clock(), "bob")
    alice = {"Authorization": f"Bearer {alice_key}"}
    assert api.get("/v1/jobs", headers=alice).status_code == 200  # known from now on

    statuses = [api.get("/v1/tools", headers=random_key()).status_code for _ in range(100)]
    assert statuses[:5] == [401] * 5
    assert set(statuses[5:]) == {429}
    r = api.get("/v1/tools", headers=random_key())
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "12"  # one failure's worth of a 5-per-minute refill
    assert "too many failed authentications" in r.json()["detail"]

    # A key the server already knows goes the fast way, past the limiter.
    assert api.get("/v1/jobs", headers=alice).status_code == 200
    # A key it must look up waits like any other guess from this address.
    assert api.get("/v1/jobs", headers={"Authorization": f"Bearer {bob_key}"}).status_code == 429

    ticker.now += 12
    assert api.get("/v1/jobs", headers={"Authorization": f"Bearer {bob_key}"}).status_code == 200
    assert api.get("/v1/tools", headers=random_key()).status_code == 401
    assert api.get("/v1/tools", headers=random_key()).status_code == 429


def test_a_missing_key_is_not_a_guess(api: TestClient, ticker: Ticker) -> None:
    assert {api.get("/v1/tools").status_code for _ in range(20)} == {401}


def test_worker_tokens_are_limited_too(plane: ControlPlane, api: TestClient, ticker: Ticker) -> None:
    bad = [
        api.post(
            "/worker/v1/heartbeat",
            headers={"Authorization": f"Bearer sst_{secrets.token_urlsafe(32)}"},
            json={},
        ).status_code
        for _ in range(7)
    ]
    assert bad == [401] * 5 + [429] * 2


def test_a_guess_with_a_body_counts_once(api: TestClient, ticker: Ticker) -> None:
    # Bodies are authenticated before they are read (api/limits.py) and then again by the route's
    # dependency: only one of the two may count the failure.
    body = {"tool": "sd15-txt2img", "inputs": {"prompt": "a fox"}}
    statuses = [api.post("/v1/jobs", headers=random_key(), json=body).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]


def test_failures_are_logged_without_the_secret(
    api: TestClient, ticker: Ticker, caplog: pytest.LogCaptureFixture
) -> None:
    secret = f"ss_{secrets.token_urlsafe(32)}"
    with caplog.at_level(logging.WARNING, logger="swarmstation.api.limits"):
        for _ in range(6):
            api.get("/v1/tools", headers={"Authorization": f"Bearer {secret}"})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "failed authentication (API key) from testclient" in text
    assert "refusing it for 12 s" in text
    assert secret not in text and secret[3:20] not in text


def test_the_limit_is_configured(plane: ControlPlane) -> None:
    # PLANE_SETTINGS sets 5 per minute: build() passes the setting to the app's throttle.
    assert plane.state.auth_throttle.per_minute == 5


def test_a_known_worker_token_is_not_slowed(
    plane: ControlPlane, api: TestClient, ticker: Ticker, clock: FakeClock
) -> None:
    with transaction(plane.state.sessions) as s:
        _, token = add_instance(s, clock())
    worker = {"Authorization": f"Bearer {token}"}
    first = api.post("/worker/v1/heartbeat", headers=worker, json={})
    for _ in range(6):
        api.post("/worker/v1/heartbeat", headers=random_key(), json={})
    again = api.post("/worker/v1/heartbeat", headers=worker, json={})
    assert again.status_code == first.status_code != 429
