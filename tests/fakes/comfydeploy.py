"""A fake ComfyUI Deploy: a real HTTP server on 127.0.0.1 speaking the API shapes that
`swarmstation.integrations.comfydeploy.client` uses (see that module's docstring for where each comes from),
that advances runs on real (short) timers, serves real PNG outputs and POSTs webhooks.

Endpoints (all but `/files/...` need `Authorization: Bearer <api_key>`, else 401):

- `POST /api/run/deployment/queue` `{deployment_id, inputs, machine_id?, webhook?,
  webhook_intermediate_status?}` → `{"run_id"}`; 404 for an unknown deployment, 400 without inputs.
- `GET /api/run/{id}` → `{id, status, progress, live_status, outputs, error?, deployment_id, ...}`.
- `POST /api/run/{id}/cancel` → `{"status": "cancelled"}`; a finished run is left as it is.
- `GET /api/deployments` → `[{id, name, machine_id, workflow_id, environment}]`.
- `GET /api/machines` → `[{id, name, gpu, status, type}]`.
- `GET /files/{run_id}/{name}` → the PNG bytes (like a pre-signed URL: no auth).

A run is "not-started" for `queue_delay`, then "running" with progress 1/steps … steps/steps
(`step_delay` apart; live_status "executing node i/n"), then "uploading" and "success" with one PNG
per `outputs_per_run` — or "failed" with `fail_message` when that is set when the run is queued.

Webhooks go (POST JSON `{run_id, status, progress, live_status, outputs, event_type}`) to the run's
webhook URL on every change when `webhook_intermediate_status`, else only at the end. Faults:
`lose_statuses` (raw statuses whose webhooks are dropped), `duplicate` (each webhook sent that many
times), `shuffle` (a run's webhooks are held and sent, in a random order from `seed`, once it has
finished), `fail(endpoint, code, times)` (429/500/... on "queue", "status", "cancel", "deployments",
"machines", "files"). `sent_webhooks` records what was delivered, `requests` every request.

    with FakeComfyDeploy() as fake:
        client = ComfyDeployClient(fake.api_key, base_url=fake.url)
"""

from __future__ import annotations

import io
import json
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

ENDPOINTS = ("queue", "status", "cancel", "deployments", "machines", "files")
TERMINAL = {"success", "failed", "cancelled"}


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class FakeRun:
    id: str
    deployment_id: str
    inputs: dict[str, Any]
    webhook: str | None
    intermediate: bool
    fail_message: str | None
    status: str = "not-started"
    progress: float = 0.0
    live_status: str | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    held: list[dict[str, Any]] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)


class FakeComfyDeploy:
    def __init__(
        self,
        *,
        api_key: str = "cd-test-key-0123456789",
        queue_delay: float = 0.03,
        step_delay: float = 0.03,
        steps: int = 3,
        outputs_per_run: int = 1,
        deployments: list[dict[str, Any]] | None = None,
        machines: list[dict[str, Any]] | None = None,
        seed: int = 0,
    ) -> None:
        self.api_key = api_key
        self.queue_delay = queue_delay
        self.step_delay = step_delay
        self.steps = steps
        self.outputs_per_run = outputs_per_run
        self.machines = machines or [
            {
                "id": "m-a10g",
                "name": "a10g-prod",
                "gpu": "A10G",
                "status": "ready",
                "type": "comfy-deploy-serverless",
            }
        ]
        self.deployments = deployments or [
            {
                "id": "dep-flux",
                "name": "flux-prod-01",
                "machine_id": "m-a10g",
                "workflow_id": "wf-flux",
                "environment": "production",
            }
        ]
        self.fail_message: str | None = None
        self.lose_statuses: set[str] = set()
        self.duplicate = 1
        self.shuffle = False
        self.rng = random.Random(seed)
        self.runs: dict[str, FakeRun] = {}
        self.files: dict[str, bytes] = {}
        self.sent_webhooks: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self._faults: dict[str, list[int]] = {}
        self._lock = threading.RLock()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeComfyDeploy:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        t = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in list(self._threads):
            t.join(timeout=2)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeComfyDeploy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- fault injection and waiting

    def fail(self, endpoint: str, code: int, times: int = 1) -> None:
        assert endpoint in ENDPOINTS, endpoint
        with self._lock:
            self._faults.setdefault(endpoint, []).extend([code] * times)

    def wait_finished(self, run_id: str, timeout: float = 5.0) -> FakeRun:
        """Waits until the run is terminal and all its webhooks have gone out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                run = self.runs[run_id]
                done = run.status in TERMINAL and not any(
                    t.name == f"run-{run_id}" and t.is_alive() for t in self._threads
                )
            if done:
                return run
            time.sleep(0.01)
        raise TimeoutError(f"run {run_id} did not finish")

    # -- HTTP

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = h.path.split("?", 1)[0]
        with self._lock:
            self.requests.append((method, path))
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        parts = [p for p in path.split("/") if p]
        endpoint = self._endpoint(method, parts)
        if endpoint is None:
            return self._send(h, 404, {"error": "Not found"})
        if endpoint != "files" and h.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._send(h, 401, {"error": "Unauthorized"})
        with self._lock:
            queue = self._faults.get(endpoint)
            code = queue.pop(0) if queue else None
        if code is not None:
            headers = {"Retry-After": "0"} if code == 429 else {}
            return self._send(h, code, {"error": f"injected {code}"}, headers)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return self._send(h, 400, {"error": "Invalid JSON"})
        if endpoint == "queue":
            return self._queue(h, body)
        if endpoint == "deployments":
            return self._send(h, 200, self.deployments)
        if endpoint == "machines":
            return self._send(h, 200, self.machines)
        if endpoint == "files":
            data = self.files.get("/".join(parts[1:]))
            if data is None:
                return self._send(h, 404, {"error": "Not found"})
            return self._send_bytes(h, 200, data, "image/png")
        with self._lock:
            run = self.runs.get(parts[2])
            if run is None:
                return self._send(h, 404, {"error": "Run not found"})
            if endpoint == "status":
                return self._send(h, 200, self._run_json(run))
            if run.status not in TERMINAL:
                self._set(run, "cancelled", live_status="cancelled")
            return self._send(h, 200, {"status": run.status})

    @staticmethod
    def _endpoint(method: str, parts: list[str]) -> str | None:
        if method == "POST" and parts == ["api", "run", "deployment", "queue"]:
            return "queue"
        if method == "GET" and len(parts) == 3 and parts[:2] == ["api", "run"]:
            return "status"
        if method == "POST" and len(parts) == 4 and parts[:2] == ["api", "run"] and parts[3] == "cancel":
            return "cancel"
        if method == "GET" and parts == ["api", "deployments"]:
            return "deployments"
        if method == "GET" and parts == ["api", "machines"]:
            return "machines"
        if method == "GET" and len(parts) == 3 and parts[0] == "files":
            return "files"
        return None

    def _send(
        self, h: BaseHTTPRequestHandler, code: int, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self._send_bytes(h, code, data, "application/json", headers)

    @staticmethod
    def _send_bytes(
        h: BaseHTTPRequestHandler, code: int, data: bytes, ctype: str, headers: dict[str, str] | None = None
    ) -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _queue(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        dep = body.get("deployment_id")
        if not any(d["id"] == dep for d in self.deployments):
            return self._send(h, 404, {"error": "Deployment not found"})
        if not isinstance(body.get("inputs"), dict):
            return self._send(h, 400, {"error": "inputs required"})
        run = FakeRun(
            id=str(uuid.uuid4()),
            deployment_id=str(dep),
            inputs=body["inputs"],
            webhook=body.get("webhook"),
            intermediate=bool(body.get("webhook_intermediate_status")),
            fail_message=self.fail_message,
        )
        with self._lock:
            self.runs[run.id] = run
            t = threading.Thread(target=self._advance, args=(run,), name=f"run-{run.id}", daemon=True)
            self._threads.append(t)
        self._send(h, 200, {"run_id": run.id})
        t.start()

    # -- runs

    def _run_json(self, run: FakeRun) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": run.id,
            "status": run.status,
            "progress": run.progress,
            "live_status": run.live_status,
            "outputs": run.outputs,
            "deployment_id": run.deployment_id,
            "created_at": run.created_at,
        }
        if run.error is not None:
            out["error"] = run.error
        return out

    def _set(self, run: FakeRun, status: str, **changes: Any) -> None:
        """Changes a run (under the lock) and sends or holds its webhook."""
        with self._lock:
            if run.status in TERMINAL:
                return
            run.status = status
            for k, v in changes.items():
                setattr(run, k, v)
            if not run.webhook or (not run.intermediate and status not in TERMINAL):
                return
            payload = {**self._run_json(run), "run_id": run.id, "event_type": "run.updated"}
            del payload["id"]
        if status in self.lose_statuses:
            return
        if self.shuffle:
            run.held.append(payload)
            if status in TERMINAL:
                held = list(run.held)
                self.rng.shuffle(held)
                for p in held:
                    self._deliver(run.webhook, p)
            return
        self._deliver(run.webhook, payload)

    def _deliver(self, url: str, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        for _ in range(self.duplicate):
            req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=2) as resp:
                    code = resp.status
            except urllib.error.HTTPError as exc:
                code = exc.code
            except OSError:
                code = 0
            with self._lock:
                self.sent_webhooks.append({**payload, "_url": url, "_code": code})

    def _advance(self, run: FakeRun) -> None:
        def wait(seconds: float) -> bool:
            return not self._stop.wait(seconds) and run.status not in TERMINAL

        self._set(run, "queued")  # webhook for the queued state (the API shows "not-started" first)
        if not wait(self.queue_delay):
            return
        for i in range(1, self.steps + 1):
            self._set(run, "running", progress=i / self.steps, live_status=f"executing node {i}/{self.steps}")
            if not wait(self.step_delay):
                return
        if run.fail_message:
            self._set(run, "failed", error=run.fail_message, live_status=None)
            return
        outputs = []
        for n in range(self.outputs_per_run):
            name = f"ComfyUI_{n:05d}_.png"
            self.files[f"{run.id}/{name}"] = png_bytes((40 * n % 256, 120, 200))
            outputs.append({"url": f"{self.url}/files/{run.id}/{name}", "filename": name, "type": "output"})
        self._set(run, "uploading", live_status="uploading outputs")
        self._set(
            run,
            "success",
            progress=1.0,
            live_status=None,
            outputs=[{"node_meta": {"node_class": "SaveImage"}, "data": {"images": outputs}}],
        )
