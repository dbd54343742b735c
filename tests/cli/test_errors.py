"""The real CLI, in subprocesses, against a real `swarmstation serve`: a server's refusal (4xx) or
an unreachable server ends every command with the server's message on stderr and a non-zero exit
status, never a traceback."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import BIN, free_port, wait_for


@dataclass
class Served:
    url: str
    admin_key: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("cli-errors")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSTATION_")}
    log = (folder / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN), "serve", "--provider", "none", "--port", str(port), "--data-dir", str(folder / "data")],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, (folder / "serve.log").read_text()
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 60, "swarmstation serve")
        yield Served(url, (folder / "data" / "admin.key").read_text().strip(), env)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def cli(served: Served, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**served.env, "SWARMSTATION_URL": served.url, "SWARMSTATION_API_KEY": key or served.admin_key}
    return subprocess.run(
        [str(BIN), *args], env=env, capture_output=True, text=True, timeout=60, cwd=Path("/")
    )


def assert_refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    # one short message, not pages of output
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr


def test_a_worker_with_a_wrong_token_says_so_and_exits(served: Served) -> None:
    result = cli(
        served,
        "worker",
        "--server",
        served.url,
        "--token",
        "swt_wrong",
        "--comfyui",
        f"http://127.0.0.1:{free_port()}",
        "--log-level",
        "error",
    )
    assert_refused(result, "invalid worker token")


def test_a_bad_api_key_is_a_one_line_refusal(served: Served) -> None:
    for args in (["tools", "list"], ["status"], ["pool", "list"], ["generate", "a fox", "--no-wait"]):
        assert_refused(cli(served, *args, key="ss_not_a_real_key"), "HTTP 401")


def test_not_found_and_invalid_input_show_the_servers_message(served: Served) -> None:
    assert_refused(cli(served, "tools", "show", "no-such-tool"), "unknown tool 'no-such-tool'")
    assert_refused(cli(served, "pool", "show", "no-such-pool"), "HTTP 404")
    result = cli(served, "generate", "a fox", "--tool", "sd15-txt2img", "-i", "steps=100000", "--no-wait")
    assert_refused(result, "HTTP 422")
    assert "inputs.steps" in result.stderr
    assert_refused(cli(served, "pool", "add", "p2", "-s", "min_instances=-3"), "HTTP 422")


def test_an_unreachable_server_is_one_line(served: Served) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for args in (["tools", "list"], ["status"], ["generate", "a fox"], ["users", "list"]):
        result = cli(served, *args, "--url", dead)
        assert_refused(result, "cannot reach the control plane")
