"""`swarmstation credits` against a real control plane over HTTP: grant, balance, ledger, verify
(exit status 1 when the books do not balance)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import text

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.store.db import transaction
from tests.e2e.conftest import BIN, free_port


@dataclass
class Served:
    url: str
    plane: ControlPlane


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    settings = Settings(
        data_dir=tmp_path / "data",
        provider="none",
        scheduler_interval_seconds=3600,
        control_interval_seconds=3600,
        welcome_credits=10,
    )
    plane = build(settings, provider=None)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(plane.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield Served(url, plane)
    server.should_exit = True
    thread.join(timeout=10)
    plane.state.engine.dispose()


def cli(served: Served, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSTATION_")}
    env = {**clean, "COLUMNS": "200", "SWARMSTATION_URL": served.url, "SWARMSTATION_API_KEY": key}
    return subprocess.run(
        [str(BIN), "credits", *args], env=env, capture_output=True, text=True, timeout=60, cwd="/"
    )


def test_grant_balance_ledger_and_verify(served: Served) -> None:
    admin = served.plane.admin_key
    assert admin is not None
    made = httpx.post(
        f"{served.url}/v1/admin/users",
        json={"name": "zoe", "role": "user"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert made.status_code == 201, made.text
    zoe = made.json()["api_key"]

    granted = cli(served, admin, "grant", "zoe", "250", "--reason", "prize", "--idempotency-key", "p1")
    assert granted.returncode == 0, granted.stderr
    assert "grant +250 to zoe: balance 260" in granted.stdout
    again = cli(
        served, admin, "grant", "zoe", "250", "--reason", "prize", "--idempotency-key", "p1", "--json"
    )
    assert json.loads(again.stdout)["balance"] == 260  # the same key granted once

    mine = cli(served, zoe, "balance", "--json")
    assert (json.loads(mine.stdout)["balance"], json.loads(mine.stdout)["available"]) == (260, 260)
    assert "zoe: balance 260, held 0, available 260" in cli(served, admin, "balance", "zoe").stdout

    entries = json.loads(cli(served, admin, "ledger", "zoe", "--json").stdout)["entries"]
    assert [(e["kind"], e["amount"]) for e in entries] == [("grant", 250), ("grant", 10)]
    assert "prize" in cli(served, zoe, "ledger").stdout

    refused = cli(served, zoe, "grant", "zoe", "5", "--reason", "me")
    assert refused.returncode == 1 and "403" in refused.stderr
    missing = cli(served, admin, "grant", "nobody", "5", "--reason", "x")
    assert missing.returncode == 1 and "not found" in missing.stderr

    ok = cli(served, admin, "verify")
    assert ok.returncode == 0 and "ledger ok" in ok.stdout, ok.stderr
    with transaction(served.plane.state.sessions) as s:
        s.execute(text("UPDATE accounts SET balance = balance + 1"))
    broken = cli(served, admin, "verify")
    assert broken.returncode == 1 and "problem" in broken.stderr
