"""Bodies are bounded and authenticated before they are read, and the local store's PUT streams to
disk (issue 11, item 10).

The first half runs `swarmstation serve` as a real process and talks to it over raw sockets, so a
test can send a request's headers and only the start of its body and see whether the server
answers without waiting for the rest; the server's peak memory is read from /proc. The second half
checks the counted limits of each route in process."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane
from swarmstation.objectstore.local import LocalObjectStore

BIN = Path(sys.executable).parent / "swarmstation"
SECRET = "body-limits-test-secret"
MiB = 1024 * 1024

PLANE_SETTINGS = {
    "max_json_body_bytes": 4096,
    "max_object_bytes": 10_000,
    "max_upload_bytes": 50_000,
    "max_model_bytes": 20_000,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    def status_kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.proc.pid}/status")

    def reset_peak(self) -> int:
        """Reset the peak resident size (VmHWM) to the current one; returns it in bytes."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        return self.status_kib("VmRSS") * 1024

    def peak(self) -> int:
        return self.status_kib("VmHWM") * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("body-limits")
    data_dir = folder / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWARMSTATION_", "VASTAI_", "COMFY_"))}
    env.update(
        SWARMSTATION_SECRET_KEY=SECRET,
        SWARMSTATION_MAX_OBJECT_BYTES=str(300 * MiB),
        SWARMSTATION_SKIP_POSTGRES="1",
    )
    log = (folder / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN), "serve", "--port", str(port), "--data-dir", str(data_dir), "--provider", "none"],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    srv = Server(proc, port, data_dir)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError((folder / "serve.log").read_text())
            try:
                if httpx.get(f"{srv.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def send_head(server: Server, method: str, path: str, headers: dict[str, str]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def read_status(sock: socket.socket, timeout: float) -> tuple[int, bytes]:
    """The status code and whatever of the response arrived; TimeoutError if none did."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    if not data:
        raise AssertionError("the server closed the connection without an answer")
    # The head and the body may arrive in separate segments: read the body it declares too.
    head, _, body = data.partition(b"\r\n\r\n")
    declared = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    while declared is not None and len(body) < int(declared.group(1)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
        data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_a_200_mb_post_without_a_key_is_refused_before_it_is_read(server: Server) -> None:
    base = server.reset_peak()
    started = time.monotonic()
    sock = send_head(
        server, "POST", "/v1/jobs", {"Content-Type": "application/json", "Content-Length": str(200 * MiB)}
    )
    with sock:
        sock.sendall(b"\x00" * MiB)  # a small part of the body, then wait for the answer
        status, data = read_status(sock, timeout=5)
    assert status == 413, data
    assert b"payload_too_large" in data
    assert time.monotonic() - started < 3
    assert server.peak() - base < 30 * MiB


@pytest.mark.parametrize(
    "auth", [{}, {"Authorization": "Bearer ss_not-a-real-key"}, {"X-Api-Key": "ss_not-a-real-key"}]
)
def test_a_chunked_body_without_a_valid_key_is_401_unread(server: Server, auth: dict[str, str]) -> None:
    sock = send_head(
        server,
        "POST",
        "/v1/jobs",
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked", **auth},
    )
    with sock:
        # One chunk of a body that never ends: an answer can only come from not reading it.
        sock.sendall(b"10000\r\n" + b"\x00" * 0x10000 + b"\r\n")
        status, data = read_status(sock, timeout=5)
    assert status == 401, data


def test_a_worker_call_without_a_valid_token_is_401_unread(server: Server) -> None:
    sock = send_head(
        server,
        "POST",
        "/worker/v1/heartbeat",
        {"Content-Type": "application/json", "Content-Length": "100000", "Authorization": "Bearer sst_x"},
    )
    with sock:
        sock.sendall(b"{" + b" " * 1000)
        status, data = read_status(sock, timeout=5)
    assert status == 401, data


def test_a_chunked_json_body_past_the_limit_is_413(server: Server) -> None:
    base = server.reset_peak()
    sock = send_head(
        server,
        "POST",
        "/v1/jobs",
        {
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
            "Authorization": f"Bearer {server.admin_key}",
        },
    )
    with sock:
        chunk = b"40000\r\n" + b" " * 0x40000 + b"\r\n"  # 256 KiB each, 16 MiB in all
        try:
            for _ in range(64):
                sock.sendall(chunk)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server may stop listening once it has answered
        status, data = read_status(sock, timeout=10)
    assert status == 413, data
    assert server.peak() - base < 30 * MiB


def test_a_200_mb_put_streams_to_disk(server: Server) -> None:
    store = LocalObjectStore(server.data_dir / "objects", base_url=server.url, secret=SECRET.encode())
    url = store.presign_put("outputs/big/large.bin", 600)
    block = b"\x5a" * MiB

    def body() -> Iterator[bytes]:
        for _ in range(200):
            yield block

    base = server.reset_peak()
    r = httpx.put(url, content=body(), headers={"Content-Length": str(200 * MiB)}, timeout=120)
    assert r.status_code == 204, r.text
    grown = server.peak() - base
    target = server.data_dir / "objects" / "outputs" / "big" / "large.bin"
    try:
        assert target.stat().st_size == 200 * MiB
        assert grown < 60 * MiB, f"the server grew by {grown / MiB:.0f} MiB for a 200 MiB PUT"
        assert not list((server.data_dir / "objects").glob(".put-*"))
    finally:
        target.unlink(missing_ok=True)


def test_a_put_declared_over_the_limit_is_413_unread(server: Server) -> None:
    store = LocalObjectStore(server.data_dir / "objects", base_url=server.url, secret=SECRET.encode())
    url = httpx.URL(store.presign_put("outputs/big/too-large.bin", 600))
    target = f"{url.raw_path.decode()}"
    sock = send_head(server, "PUT", target, {"Content-Length": str(301 * MiB)})
    with sock:
        sock.sendall(b"\x00" * 4096)
        status, data = read_status(sock, timeout=5)
    assert status == 413, data
    assert not (server.data_dir / "objects" / "outputs" / "big" / "too-large.bin").exists()


# -- counted limits, route by route, in process ----------------------------------------------------
def chunks(total: int, size: int = 1024) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield b" " * min(size, total - start)


def test_json_bodies_are_limited(api: TestClient, admin: dict[str, str]) -> None:
    declared = api.post(
        "/v1/jobs", headers={**admin, "Content-Type": "application/json"}, content=b" " * 5000
    )
    assert declared.status_code == 413 and "4096" in declared.json()["detail"]
    counted = api.post(
        "/v1/jobs", headers={**admin, "Content-Type": "application/json"}, content=chunks(5000)
    )
    assert counted.status_code == 413 and counted.json()["code"] == "payload_too_large"
    small = api.post("/v1/jobs", headers=admin, json={"tool": "sd15-txt2img", "inputs": {"prompt": "a fox"}})
    assert small.status_code == 201, small.text


def test_object_puts_are_limited(plane: ControlPlane, api: TestClient) -> None:
    store = plane.state.store
    assert isinstance(store, LocalObjectStore)
    url = httpx.URL(store.presign_put("outputs/j/o/x.bin", 600))
    path = url.raw_path.decode()
    assert api.put(path, content=b"x" * 10_001).status_code == 413
    assert api.put(path, content=chunks(10_001)).status_code == 413
    assert not store.exists("outputs/j/o/x.bin")
    assert not list(store.root.glob(".put-*"))  # no temporary file left behind
    assert api.put(path, content=chunks(10_000)).status_code == 204
    assert store.get_bytes("outputs/j/o/x.bin") == b" " * 10_000


def test_model_uploads_are_limited(plane: ControlPlane, api: TestClient, admin: dict[str, str]) -> None:
    path = "/v1/admin/models/upload/checkpoints/m.safetensors"
    assert api.put(path, headers=admin, content=b"x" * 20_001).status_code == 413
    r = api.put(path, headers=admin, content=chunks(20_001))
    assert r.status_code == 413 and "20000" in r.json()["detail"]
    assert api.get("/v1/admin/models", headers=admin).json() == []
    assert api.put(path, headers=admin, content=chunks(20_000)).status_code == 201


def test_image_uploads_are_limited(api: TestClient, admin: dict[str, str]) -> None:
    r = api.post("/v1/uploads", headers=admin, files={"file": ("x.png", b"\x00" * 200_000, "image/png")})
    assert r.status_code == 413, r.text


def test_routes_without_auth_still_read_their_bodies(api: TestClient) -> None:
    # The ComfyDeploy webhook authenticates by signature, not by key: the edge must not 401 it.
    r = api.post("/v1/webhooks/comfydeploy", content=b'{"run_id": "x"}')
    assert "API key" not in r.text
