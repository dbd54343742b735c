"""`swarmstation tools price` and `swarmstation costs --pnl` against a real control plane over
HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from swarmstation.api.app import build
from swarmstation.config import Settings
from tests.e2e.conftest import BIN, free_port


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    settings = Settings(
        data_dir=tmp_path / "data",
        provider="none",
        scheduler_interval_seconds=3600,
        control_interval_seconds=3600,
    )
    plane = build(settings, provider=None)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(plane.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    assert plane.admin_key is not None
    yield f"http://127.0.0.1:{port}", plane.admin_key
    server.should_exit = True
    thread.join(timeout=10)
    plane.state.engine.dispose()


def cli(served: tuple[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSTATION_")}
    env = {**clean, "COLUMNS": "200", "SWARMSTATION_URL": served[0], "SWARMSTATION_API_KEY": served[1]}
    return subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=60, cwd="/")


def test_tools_price_sets_shows_and_clears_a_price(served: tuple[str, str]) -> None:
    done = cli(served, "tools", "price", "sd15-txt2img", "--per-run", "40")
    assert done.returncode == 0, done.stderr
    assert "sd15-txt2img: 40 credits per run (a run with its defaults: 40 credits)" in done.stdout
    capped = cli(served, "tools", "price", "sd15-txt2img", "--per-gpu-second", "2", "--cap", "50", "--json")
    assert json.loads(capped.stdout) == {"model": "per_gpu_second", "credits": 2, "cap": 50, "estimate": 50}
    shown = cli(served, "tools", "price", "sd15-txt2img")
    assert "2 credits per GPU second, at most 50" in shown.stdout
    no_cap = cli(served, "tools", "price", "sd15-txt2img", "--per-gpu-second", "2")
    assert no_cap.returncode == 1 and "needs a cap" in no_cap.stderr
    both = cli(served, "tools", "price", "sd15-txt2img", "--per-run", "1", "--derived")
    assert both.returncode == 1 and "give one of" in both.stderr
    cleared = cli(served, "tools", "price", "sd15-txt2img", "--derived", "--json")
    assert json.loads(cleared.stdout)["model"] == "derived"
    listed = cli(served, "tools", "list")
    assert listed.returncode == 0 and "derived" in listed.stdout


def test_costs_pnl(served: tuple[str, str]) -> None:
    table = cli(served, "costs", "--pnl")
    assert table.returncode == 0, table.stderr
    assert "profit and loss by tool" in table.stdout and "margin" in table.stdout
    data = json.loads(cli(served, "costs", "--pnl", "--by", "day", "--json").stdout)
    assert data["group_by"] == "day" and data["revenue_credits"] == 0 and data["credits_per_usd"] == 1000
    bad = cli(served, "costs", "--pnl", "--by", "instance")
    assert bad.returncode == 1
