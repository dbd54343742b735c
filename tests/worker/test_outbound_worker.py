"""The worker's token goes to the control plane only; model hosts and presigned object-store URLs
are fetched bare, redirects followed with every hop checked.

Real parts: the worker agent, the ComfyUI emulator, a control plane stand-in (a real HTTP server
speaking the /worker/v1 calls the worker makes), model hosts that fail on any Authorization
header, and the moto S3 server behind a gateway that applies S3's rule that a presigned request
must not also carry an Authorization header ("Only one auth mechanism allowed").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from PIL import Image

from swarmstation.comfy.emulator import EmulatorConfig, running_emulator
from swarmstation.net.policy import HostRule
from swarmstation.objectstore.s3 import S3ObjectStore
from swarmstation.worker.agent import Worker, WorkerConfig, outbound_policy
from tests.fakes.model_hubs import RecordingHost, lora_bytes

TOKEN = "sw_worker_token_must_stay_home"
S3_KEYS = {"access_key_id": "AKIDWORKERTEST", "secret_access_key": "worker-test-secret"}


# -- S3: moto, behind a gateway that refuses two auth mechanisms at once -------------------------
class S3Gateway:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.presigned: list[tuple[str, str, str | None]] = []  # (method, path, authorization)
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                auth = self.headers.get("Authorization")
                if "X-Amz-Signature=" in (urlsplit(self.path).query or ""):
                    gateway.presigned.append((self.command, urlsplit(self.path).path, auth))
                    if auth is not None:
                        error = (
                            b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism "
                            b"allowed</Message></Error>"
                        )
                        self.send_response(400)
                        self.send_header("Content-Length", str(len(error)))
                        self.end_headers()
                        self.wfile.write(error)
                        return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                }
                resp = httpx.request(
                    self.command, f"{gateway.upstream}{self.path}", headers=headers, content=body, timeout=30
                )
                self.send_response(resp.status_code)
                for name, value in resp.headers.items():
                    if name.lower() not in (
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "server",
                        "date",
                    ):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(resp.content)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def moto_endpoint(s3_endpoint: str) -> str:
    return s3_endpoint


@pytest.fixture
def s3(moto_endpoint: str) -> Iterator[tuple[S3Gateway, S3ObjectStore]]:
    bucket = f"w-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        **{
            "aws_access_key_id": S3_KEYS["access_key_id"],
            "aws_secret_access_key": S3_KEYS["secret_access_key"],
        },
    ).create_bucket(Bucket=bucket)
    gateway = S3Gateway(moto_endpoint)
    store = S3ObjectStore(bucket, endpoint_url=gateway.url, region="us-east-1", **S3_KEYS)
    yield gateway, store
    gateway.stop()


# -- the control plane stand-in ------------------------------------------------------------------
@dataclass
class FakeControlPlane:
    assignment: dict[str, Any]
    uploads: list[dict[str, str]]
    authorizations: list[tuple[str, str | None]] = field(default_factory=list)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)  # complete / fail → body
    handed_out: bool = False
    requested: list[str] = field(default_factory=list)  # every path with its query

    def start(self) -> FakeControlPlane:
        cp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null") if length else None
                path = urlsplit(self.path).path
                cp.authorizations.append((path, self.headers.get("Authorization")))
                cp.requested.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._json(401, {"detail": "invalid worker token"})
                if path == "/worker/v1/register":
                    return self._json(
                        200, {"instance_id": "i-1", "heartbeat_seconds": 5, "lease_seconds": 60}
                    )
                if path == "/worker/v1/heartbeat":
                    return self._json(200, {"drain": False, "prefetch": [], "cancel": [], "stale": []})
                if path == "/worker/v1/preload":
                    return self._json(200, [])
                if path == "/worker/v1/jobs/next":
                    if not cp.handed_out:
                        cp.handed_out = True
                        return self._json(200, cp.assignment)
                    time.sleep(0.2)
                    return self._json(204)
                if path.endswith("/outputs"):
                    return self._json(200, {"uploads": cp.uploads[: len(body["files"])]})
                for action in ("complete", "fail"):
                    if path.endswith(f"/{action}"):
                        cp.reports[action] = body
                return self._json(204)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *args: None  # type: ignore[method-assign]  # a cancelled long-poll
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def model_host() -> Iterator[RecordingHost]:
    host = RecordingHost(refuse_authorization=True).start()
    yield host
    host.stop()


@pytest.fixture
def cdn() -> Iterator[RecordingHost]:
    host = RecordingHost(refuse_authorization=True).start()
    yield host
    host.stop()


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "out"}},
}


def model(folder: str, name: str, url: str, data: bytes) -> dict[str, Any]:
    return {
        "folder": folder,
        "name": name,
        "url": url,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


def run_one_job(cp: FakeControlPlane, config: WorkerConfig, comfy_dir: Path, timeout: float = 60) -> None:
    async def go() -> None:
        async with running_emulator(EmulatorConfig(base_dir=comfy_dir)) as comfy_url:
            config.comfyui_url = comfy_url
            task = asyncio.create_task(Worker(config).run())
            deadline = time.monotonic() + timeout
            while not cp.reports and time.monotonic() < deadline and not task.done():
                await asyncio.sleep(0.05)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(go())


def test_models_and_presigned_urls_get_no_token(
    tmp_path: Path, model_host: RecordingHost, cdn: RecordingHost, s3: tuple[S3Gateway, S3ObjectStore]
) -> None:
    gateway, store = s3
    ckpt, lora = lora_bytes("checkpoint", 64 * 1024), lora_bytes("lora", 16 * 1024)
    # a Civitai-like download that redirects to signed storage on the same host, and a Hugging
    # Face-like resolve URL that redirects to another host (its CDN)
    model_host.file("/storage/ckpt.safetensors", ckpt)
    ckpt_url = model_host.redirect(
        "/api/download/models/1", f"{model_host.url}/storage/ckpt.safetensors?sig=x"
    )
    lora_url = model_host.redirect("/a/b/resolve/main/l.safetensors", cdn.file("/cdn/l.safetensors", lora))
    store.put_bytes("inputs/in.png", png_bytes(), "image/png")
    cp = FakeControlPlane(
        assignment={
            "job_id": "j-1",
            "lease_token": 1,
            "attempt": 1,
            "workflow": WORKFLOW,
            "required_models": [
                model("checkpoints", "ckpt.safetensors", ckpt_url, ckpt),
                model("loras", "l.safetensors", lora_url, lora),
            ],
            "input_images": [
                {
                    "node_id": "1",
                    "input_name": "image",
                    "filename": "in.png",
                    "url": store.presign_get("inputs/in.png", 600),
                }
            ],
            "lease_seconds": 60,
        },
        uploads=[{"output_id": "o-1", "upload_url": store.presign_put("outputs/o-1.png", 600)}],
    ).start()
    comfy_dir = tmp_path / "comfy"
    allow = (model_host.hostport, cdn.hostport, urlsplit(gateway.url).netloc)
    config = WorkerConfig(
        server_url=cp.url,
        token=TOKEN,
        comfyui_url="",
        comfy_dir=comfy_dir,
        poll_wait=1,
        outbound_allow_hosts=allow,
    )
    try:
        run_one_job(cp, config, comfy_dir)
    finally:
        cp.stop()
    assert model_host.leaks == [] and cdn.leaks == []
    assert "complete" in cp.reports, cp.reports
    assert cp.reports["complete"]["outputs"] == ["o-1"]
    assert model_host.paths() == [
        "/api/download/models/1",
        "/storage/ckpt.safetensors",
        "/a/b/resolve/main/l.safetensors",
    ]
    assert cdn.paths() == ["/cdn/l.safetensors"]
    assert (comfy_dir / "models" / "checkpoints" / "ckpt.safetensors").read_bytes() == ckpt
    assert (comfy_dir / "models" / "loras" / "l.safetensors").read_bytes() == lora
    # the presigned GET and PUT went to the bucket bare, and the output is there
    assert [(m, a) for m, _, a in gateway.presigned] == [("GET", None), ("PUT", None)]
    assert store.get_bytes("outputs/o-1.png").startswith(b"\x89PNG")
    # and every call to the control plane carried the token
    assert cp.authorizations and all(a == f"Bearer {TOKEN}" for _, a in cp.authorizations)


def test_a_model_redirect_to_metadata_or_an_unlisted_host_fails_the_fetch(
    tmp_path: Path, model_host: RecordingHost, cdn: RecordingHost
) -> None:
    data = lora_bytes("m")
    to_metadata = model_host.redirect("/m1", "http://169.254.169.254/latest/meta-data/")
    to_unlisted = model_host.redirect("/m2", cdn.file("/cdn/m2.safetensors", data))  # cdn is not allowed
    for name, url in (("a.safetensors", to_metadata), ("b.safetensors", to_unlisted)):
        cp = FakeControlPlane(
            assignment={
                "job_id": "j-1",
                "lease_token": 1,
                "attempt": 1,
                "workflow": WORKFLOW,
                "required_models": [model("checkpoints", name, url, data)],
                "input_images": [],
                "lease_seconds": 60,
            },
            uploads=[],
        ).start()
        comfy_dir = tmp_path / name
        config = WorkerConfig(
            server_url=cp.url,
            token=TOKEN,
            comfyui_url="",
            comfy_dir=comfy_dir,
            poll_wait=1,
            outbound_allow_hosts=(model_host.hostport,),
        )
        try:
            run_one_job(cp, config, comfy_dir)
        finally:
            cp.stop()
        assert "fail" in cp.reports, cp.reports
        assert "refused" in cp.reports["fail"]["error"], cp.reports["fail"]
        assert not (comfy_dir / "models" / "checkpoints" / name).exists()
    assert cdn.requests == [] and model_host.leaks == []


def test_the_policy_trusts_the_control_plane_and_the_configured_object_store() -> None:
    config = WorkerConfig(server_url="http://10.0.0.2:8000", token=TOKEN, comfyui_url="")
    env = {
        "SWARMSTATION_S3_ENDPOINT_URL": "http://minio.lan:9000",
        "SWARMSTATION_OUTBOUND_ALLOW_HOSTS": "mirror.lan",
    }
    policy = outbound_policy(config, env)
    assert set(policy.allow) == {
        HostRule("10.0.0.2", 8000),
        HostRule("minio.lan", 9000),
        HostRule("mirror.lan"),
    }
    assert outbound_policy(config, {}).allow == (HostRule("10.0.0.2", 8000),)


@pytest.mark.parametrize("started", [True, False])
def test_the_worker_polls_with_start_and_calls_started_only_for_an_older_control_plane(
    tmp_path: Path, model_host: RecordingHost, started: bool
) -> None:
    """The poll asks for the answer to count as the start (start=true, holding what it runs); an
    answer that says `started` needs no /started call, one from an older control plane (no
    `started`) gets it."""
    data = lora_bytes("m")
    url = model_host.redirect("/m1", "http://169.254.169.254/latest/meta-data/")  # fails: quick
    assignment: dict[str, Any] = {
        "job_id": "j-1",
        "lease_token": 1,
        "attempt": 1,
        "workflow": WORKFLOW,
        "required_models": [model("checkpoints", "a.safetensors", url, data)],
        "input_images": [],
        "lease_seconds": 60,
    }
    if started:
        assignment["started"] = True
    cp = FakeControlPlane(assignment=assignment, uploads=[]).start()
    comfy_dir = tmp_path / "comfy"
    config = WorkerConfig(
        server_url=cp.url,
        token=TOKEN,
        comfyui_url="",
        comfy_dir=comfy_dir,
        poll_wait=1,
        outbound_allow_hosts=(model_host.hostport,),
    )
    try:
        run_one_job(cp, config, comfy_dir)
    finally:
        cp.stop()
    assert "fail" in cp.reports, cp.reports
    polls = [p for p in cp.requested if p.startswith("/worker/v1/jobs/next")]
    assert polls and all("start=true" in p for p in polls), polls
    called_started = "/worker/v1/jobs/j-1/started" in cp.requested
    assert called_started is not started
