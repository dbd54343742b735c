"""`/metrics` needs the operator's token when one is set, and stays open when none is (issue 11,
item 6)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from tests.conftest import FakeClock

TOKEN = "metrics-Token-0123456789"


@pytest.fixture
def guarded(tmp_path: Path, clock: FakeClock) -> Iterator[ControlPlane]:
    settings = Settings(
        data_dir=tmp_path / "data",
        provider="none",
        scheduler_interval_seconds=60,
        control_interval_seconds=60,
        metrics_token=TOKEN,
        auth_failures_per_minute=3,
    )
    cp = build(settings, provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


def test_the_token_is_required_when_set(guarded: ControlPlane) -> None:
    with TestClient(guarded.app) as api:
        r = api.get("/metrics")
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert "swarmstation_jobs" not in r.text and "metrics token" in r.json()["detail"]
        assert api.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert api.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
        # An API key is not the metrics token, not even the admin's.
        admin = {"Authorization": f"Bearer {guarded.admin_key}"}
        assert api.get("/metrics", headers=admin).status_code == 401
        ok = api.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and 'swarmstation_jobs{state="QUEUED"}' in ok.text


def test_wrong_tokens_count_as_failed_authentications(guarded: ControlPlane) -> None:
    with TestClient(guarded.app) as api:
        statuses = [
            api.get("/metrics", headers={"Authorization": f"Bearer guess-{i}"}).status_code for i in range(4)
        ]
        # three guesses (the burst of 3 per minute) are answered 401, the fourth waits
        assert statuses == [401, 401, 401, 429]


def test_the_token_is_not_in_the_settings_repr(guarded: ControlPlane) -> None:
    assert TOKEN not in repr(guarded.state.settings)


def test_open_without_a_token(api: TestClient) -> None:
    r = api.get("/metrics")
    assert r.status_code == 200 and "swarmstation_jobs" in r.text


def test_runs_by_state(api: TestClient) -> None:
    r = api.get("/metrics")
    assert r.status_code == 200
    for state in ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"):
        assert f'swarmstation_runs{{state="{state}"}} 0.0' in r.text
