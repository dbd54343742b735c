"""`swarmstation pipelines` as a person uses it, over HTTP: save, list and show against a real
control plane; run against a server that speaks the runs API (POST /v1/runs, the run's SSE events,
GET /v1/runs/{id}), so the progress display, the summary, the exit status and the reconnection are
checked on the wire; bad files and refusals end in one line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from swarmstation.api.app import build
from swarmstation.config import Settings
from tests.e2e.conftest import BIN, free_port

PIPELINE: dict[str, Any] = {
    "inputs": {"idea": {"type": "string", "label": "Idea"}, "style": {"type": "string", "required": False}},
    "steps": {"gen": {"tool": "sd15-txt2img", "inputs": {"prompt": {"input": "idea"}, "seed": 7}}},
}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real control plane on a free port, and its admin key."""
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


def cli(where: tuple[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSTATION_")}
    env = {**clean, "COLUMNS": "200", "SWARMSTATION_URL": where[0], "SWARMSTATION_API_KEY": where[1]}
    return subprocess.run(
        [str(BIN), *args], env=env, capture_output=True, text=True, timeout=60, cwd=str(cwd or "/")
    )


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "portrait.json"
    path.write_text(json.dumps(PIPELINE))
    return path


def test_save_list_and_show(served: tuple[str, str], spec: Path) -> None:
    done = cli(
        served,
        "pipelines",
        "save",
        str(spec),
        "--name",
        "Storm portrait",
        "--description",
        "an idea, generated",
        "--expose",
        "idea:Your idea",
        "--visibility",
        "public",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    saved = json.loads(done.stdout)
    assert saved["version"] == 1 and saved["visibility"] == "public"
    assert saved["exposed"] == [{"name": "idea", "label": "Your idea", "default": None, "description": ""}]
    listed = cli(served, "pipelines", "list", "--q", "STORM")
    assert listed.returncode == 0, listed.stderr
    assert (
        saved["id"] in listed.stdout and "Storm portrait" in listed.stdout and "1 pipelines" in listed.stdout
    )
    assert json.loads(cli(served, "pipelines", "list", "--mine", "--json").stdout)["total"] == 1
    assert (
        json.loads(cli(served, "pipelines", "list", "--q", "nothing like it", "--json").stdout)["total"] == 0
    )
    shown = cli(served, "pipelines", "show", saved["id"])
    assert shown.returncode == 0, shown.stderr
    for text in ("Storm portrait", "version 1 of 1", "sd15-txt2img", "prompt ← input idea", "Your idea"):
        assert text in shown.stdout, (text, shown.stdout)
    # a new version from the same file, then each version shown
    again = cli(served, "pipelines", "save", str(spec), "--name", "ignored", "--id", saved["id"])
    assert again.returncode == 0 and "version 2" in again.stdout, again.stderr
    assert (
        json.loads(cli(served, "pipelines", "show", saved["id"], "--version", "1", "--json").stdout)[
            "version"
        ]
        == 1
    )
    gone = cli(served, "pipelines", "show", saved["id"], "--version", "9")
    assert gone.returncode == 1 and "has no version 9" in gone.stderr and "Traceback" not in gone.stderr


def test_bad_files_and_refusals_are_one_line(served: tuple[str, str], tmp_path: Path, spec: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"steps": {')
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    cases = [
        (("pipelines", "save", str(tmp_path / "absent.json"), "--name", "x"), "no such file"),
        (("pipelines", "save", str(tmp_path), "--name", "x"), "is a folder"),
        (("pipelines", "save", str(broken), "--name", "x"), "is not valid JSON"),
        (("pipelines", "run", str(listed)), "must hold a JSON object"),
        (("pipelines", "save", str(spec), "--name", "x", "--expose", "nope"), "exposed[0].name"),
        (("pipelines", "save", str(spec), "--name", "x", "--visibility", "secret"), "--visibility is one of"),
        (("pipelines", "run"), "give a pipeline file or --id"),
        (("pipelines", "run", str(spec), "--id", "x"), "give a pipeline file or --id"),
        (("pipelines", "run", str(spec), "--version", "2"), "--version goes with --id"),
        (("pipelines", "show", "00000000-0000-0000-0000-000000000000"), "unknown pipeline"),
    ]
    for args, message in cases:
        done = cli(served, *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


# -- run, against a server that speaks the runs API --------------------------------------------------
def _sse(events: list[tuple[int, str, dict[str, Any]]]) -> bytes:
    return "".join(f"id: {i}\nevent: {t}\ndata: {json.dumps(d)}\n\n" for i, t, d in events).encode()


class RunsServer(BaseHTTPRequestHandler):
    """POST /v1/runs answers a run; its events stream drops after the first event on the first
    connection (the client must resume from Last-Event-ID); GET /v1/runs/{id} answers the run
    RUNNING until then, and as it ended after. `final` is the run's end state; `seen` records requests."""

    final = "COMPLETED"
    seen: list[dict[str, Any]] = []

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _run(self, state: str) -> dict[str, Any]:
        failed = self.final != "COMPLETED"
        return {
            "id": "run-1",
            "state": state,
            "quote": 12,
            "captured": 9 if not failed else 4,
            "error": "step 'big' failed: the worker vanished" if failed else None,
            "outputs": {"big": {"image": "output:o2"}, "enhance": {"prompt": "a detailed storm"}}
            if not failed
            else {},
            "steps": [
                {
                    "id": "enhance",
                    "tool": "prompt-enhance",
                    "state": "COMPLETED",
                    "items": 1,
                    "cost": 1,
                    "seconds": 0.4,
                    "jobs": [{"id": "j1", "state": "COMPLETED", "outputs": [], "result": {"prompt": "x"}}],
                },
                {
                    "id": "big",
                    "tool": "upscale-4x",
                    "state": "FAILED" if failed else "COMPLETED",
                    "items": 1,
                    "cost": 3 if failed else 8,
                    "seconds": 2.0,
                    "jobs": [
                        {
                            "id": "j2",
                            "state": "FAILED" if failed else "COMPLETED",
                            "outputs": [{"id": "o2", "url": "/v1/outputs/o2", "content_type": "image/png"}],
                        }
                    ],
                },
            ],
        }

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.seen.append({"path": self.path, "body": json.loads(self.rfile.read(length))})
        self._json(201, {**self._run("PENDING"), "captured": 0})

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, "last_event_id": self.headers.get("Last-Event-ID")})
        if self.path == "/v1/runs/run-1":
            # still running until the stream has been resumed and read to its end
            resumed = any(r.get("last_event_id") for r in self.seen if r["path"].endswith("/events"))
            self._json(200, self._run(self.final if resumed else "RUNNING"))
            return
        if self.path != "/v1/runs/run-1/events":
            self._json(404, {"detail": "no such thing", "code": "not_found"})
            return
        end = self.final
        events: list[tuple[int, str, dict[str, Any]]] = [
            (1, "state", {"state": "RUNNING"}),
            (2, "step", {"step": "enhance", "state": "RUNNING"}),
            (3, "job", {"step": "enhance", "job_id": "j1", "state": "RUNNING", "progress": 0.5}),
            (4, "step", {"step": "enhance", "state": "COMPLETED", "cost": 1}),
            (5, "step", {"step": "big", "state": "RUNNING"}),
            (6, "job", {"step": "big", "job_id": "j2", "state": "RUNNING", "progress": 0.3}),
            (7, "step", {"step": "big", "state": "COMPLETED" if end == "COMPLETED" else "FAILED"}),
            (8, "state", {"state": end}),
        ]
        last = self.headers.get("Last-Event-ID")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if last is None:  # the first connection drops after one event, mid-stream
            self.wfile.write(_sse(events[:1]))
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(_sse([e for e in events if e[0] > int(last)]))

    def log_message(self, format: str, *args: object) -> None:
        pass


def _runs_server(final: str) -> tuple[ThreadingHTTPServer, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    handler = type("Handler", (RunsServer,), {"seen": seen, "final": final})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def test_run_follows_the_steps_and_prints_the_outputs(spec: Path) -> None:
    server, seen = _runs_server("COMPLETED")
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        done = cli((url, "sk-test"), "pipelines", "run", str(spec), "--input", "idea=a storm", "-i", "n=3")
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stdout + done.stderr
    assert seen[0] == {
        "path": "/v1/runs",
        "body": {"inputs": {"idea": "a storm", "n": 3}, "pipeline": PIPELINE},
    }
    # resumed after the drop from the last event it had
    assert [r.get("last_event_id") for r in seen if r["path"].endswith("/events")] == [None, "1"]
    assert "run run-1 started (quote 12 credits)" in done.stderr
    assert "enhance (prompt-enhance)" in done.stderr and "big (upscale-4x)" in done.stderr  # the rows
    assert "run run-1: COMPLETED" in done.stdout
    assert f"big.image: {url}/v1/outputs/o2" in done.stdout
    assert "enhance.prompt: a detailed storm" in done.stdout
    assert "captured 9 of a quote of 12 credits" in done.stdout


def test_a_failed_run_exits_1_with_its_reason_and_json_prints_the_run(spec: Path) -> None:
    server, seen = _runs_server("FAILED")
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        failed = cli((url, "sk-test"), "pipelines", "run", "--id", "p-1", "--version", "2", "-i", "idea=x")
        as_json = cli((url, "sk-test"), "pipelines", "run", "--id", "p-1", "--json")
        no_wait = cli((url, "sk-test"), "pipelines", "run", "--id", "p-1", "--no-wait")
    finally:
        server.shutdown()
    assert failed.returncode == 1
    assert "run run-1 FAILED: step 'big' failed: the worker vanished" in failed.stderr
    assert "Traceback" not in failed.stderr and "run run-1: FAILED" in failed.stdout
    assert seen[0]["body"] == {"inputs": {"idea": "x"}, "pipeline_id": "p-1", "version": 2}
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["state"] == "FAILED"
    assert no_wait.returncode == 0 and no_wait.stdout.strip() == "run-1"
