"""The CLI's shape: every command group is listed, and every command that talks to the control
plane takes --url and --api-key from the one shared declaration (swarmstation/cli/common.py)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import typer

from swarmstation.cli import app
from swarmstation.cli.common import ClientCommand
from tests.e2e.conftest import BIN

GROUPS = [
    "tools", "users", "credits", "keys", "loras", "pool", "instances", "models", "simulate", "pipelines"
]
COMMANDS = ["up", "serve", "worker", "comfy-emulator", "generate", "status", "comfydeploy", "costs"]
BENCHES = ["bench", "bench-loras", "bench-routing"]
# Commands that run something here rather than call a control plane.
# eval-agent runs the planner in-process on the labelled set: no server to connect to
LOCAL = {"up", "serve", "worker", "comfy-emulator", "eval-agent", *BENCHES}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSTATION_")}
    return subprocess.run(
        [str(BIN), *args],
        env={**clean, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path("/"),  # no admin.key to fall back to
    )


def test_help_lists_every_command_group() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for name in [*COMMANDS, *BENCHES, *GROUPS]:
        assert f" {name} " in result.stdout, f"{name} missing from --help:\n{result.stdout}"


def _commands(group: typer.core.TyperGroup, prefix: str = "") -> Iterator[tuple[str, object]]:
    for name, command in group.commands.items():
        if isinstance(command, typer.core.TyperGroup):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_every_client_command_has_the_shared_connection_options() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    commands = dict(_commands(root))
    client_commands = {
        name for name, command in commands.items() if not name.startswith("simulate ") and name not in LOCAL
    }
    assert len(client_commands) > 30
    for name in client_commands:
        command = commands[name]
        assert isinstance(command, ClientCommand), f"{name} is not a ClientCommand"
        options = {opt for param in command.params for opt in param.opts}
        assert {"--url", "--api-key"} <= options, name
    for name in LOCAL:
        assert not isinstance(commands[name], ClientCommand), name


class Recorder(BaseHTTPRequestHandler):
    """A control plane that answers every GET with an empty list and remembers who asked."""

    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        body = json.dumps([]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def recorder() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    seen: list[tuple[str, str | None]] = []
    handler = type("Handler", (Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("args", [["tools", "list"], ["users", "list"], ["pool", "list"]])
def test_url_and_api_key_options_reach_the_request(
    recorder: tuple[str, list[tuple[str, str | None]]], args: list[str]
) -> None:
    url, seen = recorder
    result = run_cli(*args, "--json", "--url", url, "--api-key", "ss_flag")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert len(seen) == 1 and seen[0][1] == "Bearer ss_flag"


def test_url_and_api_key_come_from_the_environment(
    recorder: tuple[str, list[tuple[str, str | None]]],
) -> None:
    url, seen = recorder
    result = run_cli(
        "models", "list", "--json", env={"SWARMSTATION_URL": url, "SWARMSTATION_API_KEY": "ss_env"}
    )
    assert result.returncode == 0, result.stderr
    assert seen == [("/v1/admin/models", "Bearer ss_env")]


def test_an_unreachable_url_is_named_in_one_line() -> None:
    result = run_cli("tools", "list", "--url", "http://127.0.0.1:9", "--api-key", "ss_x")
    assert result.returncode == 1
    assert "http://127.0.0.1:9" in result.stderr and "Traceback" not in result.stderr
