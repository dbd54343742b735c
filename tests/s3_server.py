"""A real S3-compatible server for tests (moto in server mode), and a recording proxy in front of
it that keeps every request's method, path and headers, so a test can prove what reached the
bucket (moto itself ignores presigned signatures and extra credentials)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
from moto import server as moto_server

from swarmstation.config import Settings

ACCESS_KEY = "AKIDTESTSWARMSTATION"
SECRET_KEY = "s3cr3t-Never-Show-This-0123456789abcdef"


@contextmanager
def moto_endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_settings(endpoint: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings of a control plane whose object store is a new bucket on `endpoint`, with loops
    that tests drive themselves."""
    bucket = f"ss-{uuid.uuid4().hex[:12]}"
    create_bucket(endpoint, bucket)
    values: dict[str, Any] = {
        "s3_bucket": bucket,
        "s3_endpoint_url": endpoint,
        "s3_region": "us-east-1",
        "s3_access_key_id": ACCESS_KEY,
        "s3_secret_access_key": SECRET_KEY,
        "s3_prefix": "swarm",
        "data_dir": data_dir,
        "provider": "none",
        "scheduler_interval_seconds": 60,
        "control_interval_seconds": 60,
    }
    return Settings(**{**values, **overrides})


def create_bucket(endpoint: str, name: str) -> None:
    # us-east-1: moto refuses CreateBucket from region "auto"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    ).create_bucket(Bucket=name)


@dataclass
class Seen:
    method: str
    path: str  # with its query
    headers: dict[str, str]


@dataclass
class RecordingProxy:
    url: str
    seen: list[Seen] = field(default_factory=list)

    def requests(self, method: str, path_contains: str) -> list[Seen]:
        return [r for r in list(self.seen) if r.method == method and path_contains in r.path]


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@contextmanager
def recording_proxy(upstream: str) -> Iterator[RecordingProxy]:
    """An HTTP server that forwards every request to `upstream` unchanged (Host included, so
    SigV4 signatures made for the proxy's address stay as they were) and records it."""
    http = httpx.Client(base_url=upstream, timeout=60)
    proxy = RecordingProxy(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _forward(self) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            with lock:
                proxy.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in headers.items()}))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            resp = http.request(self.command, self.path, headers=headers, content=body)
            data = resp.content
            self.send_response(resp.status_code)
            for k, v in resp.headers.items():
                if k.lower() not in _HOP_BY_HOP | {"content-length", "content-encoding"}:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        http.close()
