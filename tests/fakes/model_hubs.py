"""A fake Civitai and Hugging Face: a real HTTP server answering with the APIs' recorded shapes
(protocol reference §3.3), including Civitai's download redirect to signed storage and its error
bodies, and Hugging Face's `?blobs=true` siblings with LFS sha256 and its resolve redirect."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse


def lora_bytes(seed: str, size: int = 4096) -> bytes:
    """A small, valid .safetensors file (the emulator, like ComfyUI, checks the header on load): one
    U8 tensor of about ``size`` bytes that depend on ``seed``, and ``ss_output_name`` metadata."""
    body = hashlib.sha256(seed.encode()).digest() * (size // 32)
    tensor = {"dtype": "U8", "shape": [len(body)], "data_offsets": [0, len(body)]}
    header = json.dumps({"__metadata__": {"ss_output_name": seed}, "lora_unet": tensor}).encode()
    return len(header).to_bytes(8, "little") + header + body


@dataclass
class FakeHubs:
    files: dict[str, bytes] = field(default_factory=dict)  # storage name → bytes
    civitai_models: dict[int, dict[str, Any]] = field(default_factory=dict)
    civitai_versions: dict[int, dict[str, Any]] = field(default_factory=dict)
    hf_repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    # version id → where its download redirects instead of the signed storage (a hostile source)
    download_redirects: dict[int, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    authorizations: list[tuple[str, str | None]] = field(default_factory=list)  # (path, header)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    # -- fixtures ------------------------------------------------------------------------------
    def add_civitai_lora(
        self,
        model_id: int,
        version_id: int,
        *,
        name: str,
        trained_words: list[str],
        base_model: str = "SDXL 1.0",
        model_type: str = "LORA",
        content: bytes | None = None,
        declared_sha256: str | None = None,
        creator: str = "someone",
        tags: list[str] | None = None,
        download_url: str | None = None,
    ) -> bytes:
        content = content if content is not None else lora_bytes(f"{model_id}-{version_id}")
        storage = f"v{version_id}.safetensors"
        self.files[storage] = content
        sha = (declared_sha256 or hashlib.sha256(content).hexdigest()).upper()
        file = {
            "id": version_id * 10,
            "name": f"{name.replace(' ', '_')}.safetensors",
            "type": "Model",
            "sizeKB": len(content) / 1024,
            "metadata": {"format": "SafeTensor", "size": "full", "fp": "fp16"},
            "hashes": {"AutoV2": sha[:10], "SHA256": sha, "CRC32": "DEADBEEF"},
            "primary": True,
            "downloadUrl": download_url or f"{self.url}/api/download/models/{version_id}",
            "pickleScanResult": "Success",
            "virusScanResult": "Success",
        }
        version = {
            "id": version_id,
            "modelId": model_id,
            "name": "v1.0",
            "description": None,
            "baseModel": base_model,
            "baseModelType": "Standard",
            "air": f"urn:air:sdxl:lora:civitai:{model_id}@{version_id}",
            "status": "Published",
            "trainedWords": trained_words,
            "files": [file],
            "images": [
                {"url": f"{self.url}/img/{version_id}.jpeg", "nsfwLevel": 1, "width": 512, "height": 512}
            ],
            "downloadUrl": download_url or f"{self.url}/api/download/models/{version_id}",
            "stats": {"downloadCount": 10, "thumbsUpCount": 2},
            "model": {"name": name, "type": model_type, "nsfw": False, "poi": False, "mode": None},
        }
        self.civitai_versions[version_id] = version
        self.civitai_models[model_id] = {
            "id": model_id,
            "name": name,
            "description": f"<p>{name}</p>",
            "type": model_type,
            "nsfw": False,
            "poi": False,
            "mode": None,
            "creator": {"username": creator, "image": None},
            "tags": tags or ["style"],
            "modelVersions": [version],
        }
        return content

    def add_hf_lora(self, repo: str, *, filename: str, base_model: str, instance_prompt: str | None) -> bytes:
        content = lora_bytes(repo)
        self.files[f"hf/{repo}/{filename}"] = content
        card: dict[str, Any] = {"base_model": base_model, "license": "openrail++"}
        if instance_prompt is not None:
            card["instance_prompt"] = instance_prompt
        self.hf_repos[repo] = {
            "_id": "abc",
            "id": repo,
            "author": repo.split("/")[0],
            "sha": "0123abcd" * 5,
            "private": False,
            "tags": ["diffusers", "lora", f"base_model:adapter:{base_model}", "license:openrail++"],
            "cardData": card,
            "siblings": [
                {"rfilename": "README.md", "size": 120},
                {
                    "rfilename": filename,
                    "size": len(content),
                    "lfs": {
                        "sha256": hashlib.sha256(content).hexdigest(),
                        "size": len(content),
                        "pointerSize": 134,
                    },
                },
            ],
        }
        return content

    # -- serving -------------------------------------------------------------------------------
    def start(self) -> FakeHubs:
        hubs = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _bytes(self, data: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _redirect(self, location: str) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                path = urlparse(self.path).path
                hubs.requests.append(path)
                hubs.authorizations.append((path, self.headers.get("Authorization")))
                parts = [p for p in path.split("/") if p]
                if parts[:3] == ["api", "v1", "models"] and len(parts) == 4:
                    if not parts[3].isdigit():
                        return self._json(400, {"error": "Invalid id"})
                    model = hubs.civitai_models.get(int(parts[3]))
                    return (
                        self._json(200, model)
                        if model
                        else self._json(404, {"error": f"No model with id {parts[3]}"})
                    )
                if parts[:3] == ["api", "v1", "model-versions"] and len(parts) == 4 and parts[3].isdigit():
                    version = hubs.civitai_versions.get(int(parts[3]))
                    return (
                        self._json(200, version) if version else self._json(404, {"error": "Model not found"})
                    )
                if parts[:3] == ["api", "download", "models"] and len(parts) == 4:
                    name = f"v{parts[3]}.safetensors"
                    if parts[3].isdigit() and int(parts[3]) in hubs.download_redirects:
                        return self._redirect(hubs.download_redirects[int(parts[3])])
                    if name not in hubs.files:
                        return self._json(404, {"error": "Model not found"})
                    return self._redirect(f"{hubs.url}/storage/{name}?X-Amz-Signature=abc")
                if parts[:1] == ["storage"] and len(parts) == 2 and parts[1] in hubs.files:
                    return self._bytes(hubs.files[parts[1]])
                if parts[:2] == ["api", "models"] and len(parts) == 4:
                    repo = hubs.hf_repos.get(f"{parts[2]}/{parts[3]}")
                    return (
                        self._json(200, repo) if repo else self._json(401, {"error": "Repository not found"})
                    )
                if len(parts) >= 5 and parts[2] == "resolve":
                    key = f"hf/{parts[0]}/{parts[1]}/{'/'.join(parts[4:])}"
                    if key in hubs.files:
                        return self._redirect(f"{hubs.url}/cdn/{key}")
                    return self._json(404, {"error": "Entry not found"})
                if parts[:1] == ["cdn"] and "/".join(parts[1:]) in hubs.files:
                    return self._bytes(hubs.files["/".join(parts[1:])])
                return self._json(404, {"error": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class Recorded:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lower-case names


@dataclass
class RecordingHost:
    """A real HTTP server standing for any outside host (a model host, a CDN, a third party, a
    page that must never be fetched): it records every request with its headers and answers
    from ``routes`` (path without query → ``(status, headers, body)``); unknown paths are 404.
    With ``refuse_authorization``, a request carrying ``Authorization`` is answered 403 and
    kept in ``leaks``, so a test can fail on it."""

    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    refuse_authorization: bool = False
    requests: list[Recorded] = field(default_factory=list)
    leaks: list[Recorded] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)  # PUT path → body
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def hostport(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    def file(self, path: str, data: bytes) -> str:
        self.routes[path] = (200, {"Content-Type": "application/octet-stream"}, data)
        return f"{self.url}{path}"

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        self.routes[path] = (status, {"Location": location}, b"")
        return f"{self.url}{path}"

    def paths(self) -> list[str]:
        return [urlparse(r.path).path for r in self.requests]

    def start(self) -> RecordingHost:
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                host.requests.append(rec)
                if "authorization" in rec.headers and host.refuse_authorization:
                    host.leaks.append(rec)
                    status, headers, data = 403, {}, b"an Authorization header reached this host"
                elif self.command == "PUT":
                    host.uploads[urlparse(self.path).path] = body
                    status, headers, data = 200, {}, b""
                else:
                    status, headers, data = host.routes.get(urlparse(self.path).path, (404, {}, b"not found"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_HEAD = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
