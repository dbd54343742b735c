"""A real local HTTP file server for the worker's download tests: honours (or ignores) Range,
cuts connections, corrupts bodies, and logs every request."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KiB = 1024


class FileServer:
    """Serves ``files`` at ``/<name>`` with ``Accept-Ranges: bytes``; knobs for the failure cases."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.log: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.cut_after: int | None = None  # close the connection after this many body bytes
        self.cuts_left = 0  # ... for this many more responses
        self.ignore_range = False
        self.corrupt = False
        self.delay = 0.0  # seconds per block
        self.block = 8 * KiB
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def add(self, name: str, data: bytes) -> dict[str, Any]:
        self.files[name] = data
        return {"url": self.url(name), "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def gets(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.log if e["path"] == "/" + name]

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        entry: dict[str, Any] = {"path": h.path, "range": h.headers.get("Range"), "status": 0, "sent": 0}
        with self.lock:
            self.log.append(entry)
        data = self.files.get(h.path.lstrip("/"))
        if data is None:
            entry["status"] = 404
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if self.corrupt:
            data = bytes(b ^ 0x5A for b in data[:64]) + data[64:]
        total = len(data)
        rng = entry["range"]
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if m and not self.ignore_range:
            start = int(m.group(1))
            end = min(int(m.group(2)), total - 1) if m.group(2) else total - 1
            if start >= total:
                entry["status"] = 416
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{total}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            body = data[start : end + 1]
            entry["status"] = 206
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        else:
            body = data
            entry["status"] = 200
            h.send_response(200)
        h.send_header("Accept-Ranges", "none" if self.ignore_range else "bytes")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        limit = len(body)
        with self.lock:
            if self.cut_after is not None and self.cuts_left > 0 and self.cut_after < len(body):
                self.cuts_left -= 1
                limit = self.cut_after
        try:
            pos = 0
            while pos < limit:
                piece = body[pos : min(limit, pos + self.block)]
                h.wfile.write(piece)
                h.wfile.flush()
                pos += len(piece)
                entry["sent"] = pos
                if self.delay:
                    time.sleep(self.delay)
            if limit < len(body):  # simulate a dying peer: close mid-body
                h.close_connection = True
                h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
