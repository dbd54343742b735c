"""The emulator's HTTP and WebSocket server: ComfyUI's ``server.py`` routes (``/prompt``,
``/queue``, ``/history``, ``/view``, ``/upload/image``, ``/ws``, ...) over one ``Executor``.

``POST /prompt`` bumps the counter, validates the graph with the same rules and error shapes as
``execution.validate_prompt`` (validate.py) and pushes ``[number, prompt_id, prompt, extra_data,
outputs]`` onto the executor's heap (execute.py), which runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import io
import ipaddress
import json
import logging
import mimetypes
import os
import socket
import sys
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image

from swarmstation.comfy.emulator.execute import EmulatorConfig, Executor, now_ms
from swarmstation.comfy.emulator.nodes import FOLDER_KEYS, NODE_CLASSES
from swarmstation.comfy.emulator.validate import Validator, error_dict

log = logging.getLogger(__name__)

#: The release the emulator follows; the bootstrap and deploy/worker.Dockerfile install the same tag
#: (tests/comfy/test_emulator_fidelity.py checks that the three agree).
COMFYUI_VERSION = "0.8.2"
MAX_UPLOAD_SIZE = 100 * 1024 * 1024  # --max-upload-size default, 100 MB
FEATURE_FLAGS = {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")


def create_emulator_app(config: EmulatorConfig) -> web.Application:
    """Build the aiohttp application; its worker task starts and stops with the app."""
    return _Server(config).app


def run_emulator(host: str, port: int, config: EmulatorConfig) -> None:
    """Serve the emulator until interrupted (blocking)."""
    web.run_app(create_emulator_app(config), host=host, port=port, access_log=None)


@contextlib.asynccontextmanager
async def running_emulator(
    config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve the emulator inside the current event loop; yields its base URL (port 0 = any free one)."""
    runner = web.AppRunner(create_emulator_app(config), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()


class _Server:
    """The routes, over the executor that holds the emulated ComfyUI's state."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.comfy = Executor(config)
        self.app = web.Application(client_max_size=MAX_UPLOAD_SIZE, middlewares=[_origin_only_middleware])
        self.app.cleanup_ctx.append(self._lifespan)
        self._add_routes()

    async def _lifespan(self, app: web.Application) -> AsyncIterator[None]:
        async with self.comfy.running():
            yield

    def _add_routes(self) -> None:
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/ws", self.websocket_handler),
            ("GET", "/embeddings", self.get_embeddings),
            ("GET", "/models", self.get_model_types),
            ("GET", "/models/{folder}", self.get_models),
            ("POST", "/upload/image", self.upload_image),
            ("GET", "/view", self.view_image),
            ("GET", "/system_stats", self.system_stats),
            ("GET", "/features", self.features),
            ("GET", "/prompt", self.get_prompt),
            ("GET", "/object_info", self.object_info),
            ("GET", "/object_info/{node_class}", self.object_info_node),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_prompt),
            ("GET", "/queue", self.get_queue),
            ("POST", "/prompt", self.post_prompt),
            ("POST", "/queue", self.post_queue),
            ("POST", "/interrupt", self.post_interrupt),
            ("POST", "/free", self.post_free),
            ("POST", "/history", self.post_history),
        ]
        for prefix in ("/api", ""):
            self.app.add_routes(
                [web.route(method, prefix + path, handler) for method, path, handler in routes]
            )
        self.app.add_routes([web.get("/", self.index)])

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html><body>ComfyUI emulator</body></html>", content_type="text/html")

    async def websocket_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "") or uuid.uuid4().hex
        self.comfy.sockets.pop(sid, None)  # a reconnect replaces the old socket
        self.comfy.sockets[sid] = ws
        self.comfy.sockets_metadata[sid] = {"feature_flags": {}}
        try:
            await self.comfy.send_now("status", {"status": self.comfy.queue_info(), "sid": sid}, sid)
            if self.comfy.client_id == sid and self.comfy.last_node_id is not None:
                await self.comfy.send_now("executing", {"node": self.comfy.last_node_id}, sid)
            first = True
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except json.JSONDecodeError:
                    log.warning("Invalid JSON received from client %s: %s", sid, msg.data)
                    continue
                if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                    self.comfy.sockets_metadata[sid]["feature_flags"] = data.get("data", {})
                    await self.comfy.send_now("feature_flags", dict(FEATURE_FLAGS), sid)
                first = False
        finally:
            # ComfyUI pops by sid unconditionally; we keep a newer socket that replaced this one.
            if self.comfy.sockets.get(sid) is ws:
                self.comfy.sockets.pop(sid, None)
                self.comfy.sockets_metadata.pop(sid, None)
        return ws

    async def get_embeddings(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            [os.path.splitext(name)[0] for name in self.comfy.dirs.list_models("embeddings")]
        )

    async def get_model_types(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(list(FOLDER_KEYS))

    async def get_models(self, request: web.Request) -> web.StreamResponse:
        folder = request.match_info["folder"]
        if folder not in FOLDER_KEYS:
            return web.Response(status=404)
        return web.json_response(self.comfy.dirs.list_models(folder))

    async def upload_image(self, request: web.Request) -> web.StreamResponse:
        post = await request.post()
        image = post.get("image")
        overwrite = post.get("overwrite")
        kind = post.get("type") or "input"
        upload_dir = self.comfy.dirs.by_type(str(kind))
        if upload_dir is None:
            raise ValueError(f"unknown upload type {kind!r}")  # ComfyUI fails with a 500 here too
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        filename = image.filename
        subfolder = str(post.get("subfolder", ""))
        folder = os.path.join(upload_dir, os.path.normpath(subfolder))
        filepath = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((upload_dir, filepath)) != upload_dir:
            return web.Response(status=400)
        os.makedirs(folder, exist_ok=True)
        data = image.file.read()
        duplicate = False
        if overwrite not in ("true", "1"):
            stem, ext = os.path.splitext(filename)
            i = 1
            while os.path.exists(filepath):
                with open(filepath, "rb") as f:
                    if hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest():
                        duplicate = True
                        break
                filename = f"{stem} ({i}){ext}"
                filepath = os.path.join(folder, filename)
                i += 1
        if not duplicate:
            with open(filepath, "wb") as f:
                f.write(data)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    async def view_image(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        filename, output_dir = query["filename"], None
        for suffix, kind in (("[output]", "output"), ("[input]", "input"), ("[temp]", "temp")):
            if filename.endswith(suffix):
                filename, output_dir = filename[: -len(suffix) - 1], self.comfy.dirs.by_type(kind)
                break
        if not filename:
            return web.Response(status=400)
        if filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        if output_dir is None:
            output_dir = self.comfy.dirs.by_type(query.get("type", "output"))
        if output_dir is None:
            return web.Response(status=400)
        if "subfolder" in query:
            full_dir = os.path.join(output_dir, query["subfolder"])
            if os.path.commonpath((os.path.abspath(full_dir), output_dir)) != output_dir:
                return web.Response(status=403)
            output_dir = full_dir
        filename = os.path.basename(filename)
        path = os.path.join(output_dir, filename)
        if not os.path.isfile(path):
            return web.Response(status=404)
        disposition = {"Content-Disposition": f'filename="{filename}"'}
        channel = query.get("channel", "rgba")
        if "preview" in query or channel in ("rgb", "a"):
            body, content_type = await asyncio.to_thread(_reencode, path, query.get("preview"), channel)
            return web.Response(body=body, content_type=content_type, headers=disposition)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in {
            "text/html",
            "text/html-sandboxed",
            "application/xhtml+xml",
            "text/javascript",
            "text/css",
        }:
            content_type = "application/octet-stream"
        return web.FileResponse(path, headers={**disposition, "Content-Type": content_type})

    async def system_stats(self, request: web.Request) -> web.StreamResponse:
        ram_total, ram_free = _memory()
        return web.json_response(
            {
                "system": {
                    "os": os.name,
                    "ram_total": ram_total,
                    "ram_free": ram_free,
                    "comfyui_version": COMFYUI_VERSION,
                    "required_frontend_version": "1.27.10",
                    "installed_templates_version": "0.1.95",
                    "required_templates_version": "0.1.95",
                    "python_version": sys.version,
                    "pytorch_version": "2.8.0+cpu",
                    "embedded_python": False,
                    "argv": ["main.py", "--cpu"],
                },
                "devices": [
                    {
                        "name": "cpu",
                        "type": "cpu",
                        "index": None,
                        "vram_total": ram_total,
                        "vram_free": ram_free,
                        "torch_vram_total": ram_total,
                        "torch_vram_free": ram_free,
                    }
                ],
            }
        )

    async def features(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(FEATURE_FLAGS)

    async def get_prompt(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.comfy.queue_info())

    def node_info(self, name: str) -> dict[str, Any]:
        cls = NODE_CLASSES[name]
        inputs = cls.input_types(self.comfy.dirs)
        info: dict[str, Any] = {
            "input": inputs,
            "input_order": {k: list(v) for k, v in inputs.items()},
            "output": list(cls.RETURN_TYPES),
            "output_is_list": [False] * len(cls.RETURN_TYPES),
            "output_name": list(cls.RETURN_NAMES or cls.RETURN_TYPES),
            "name": name,
            "display_name": cls.DISPLAY_NAME or name,
            "description": cls.DESCRIPTION,
            "python_module": cls.PYTHON_MODULE,
            "category": cls.CATEGORY,
            "output_node": cls.OUTPUT_NODE,
        }
        if cls.OUTPUT_TOOLTIPS:
            info["output_tooltips"] = list(cls.OUTPUT_TOOLTIPS)
        return info

    async def object_info(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({name: self.node_info(name) for name in NODE_CLASSES})

    async def object_info_node(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["node_class"]
        return web.json_response({name: self.node_info(name)} if name in NODE_CLASSES else {})

    async def get_history(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query["offset"]) if "offset" in query else -1
        if offset < 0 and max_items is not None:
            offset = len(self.comfy.history) - max_items
        out: dict[str, Any] = {}
        for i, (key, entry) in enumerate(self.comfy.history.items()):
            if i >= offset:
                out[key] = entry
                if max_items is not None and len(out) >= max_items:
                    break
        return web.json_response(out)

    async def get_history_prompt(self, request: web.Request) -> web.StreamResponse:
        prompt_id = request.match_info["prompt_id"]
        entry = self.comfy.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def get_queue(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "queue_running": list(self.comfy.currently_running.values()),
                "queue_pending": [entry[3] for entry in self.comfy.queue],
            }
        )

    async def post_prompt(self, request: web.Request) -> web.StreamResponse:
        json_data = await request.json()
        if "number" in json_data:
            number: Any = float(json_data["number"])
        else:
            number = self.comfy.number
            if json_data.get("front"):
                number = -number
            self.comfy.number += 1
        if "prompt" not in json_data:
            no_prompt = error_dict("no_prompt", "No prompt provided", "No prompt provided")
            return web.json_response({"error": no_prompt, "node_errors": {}}, status=400)
        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        partial = json_data.get("partial_execution_targets")
        valid, error, outputs, node_errors = Validator(self.comfy.dirs, prompt).validate_prompt(partial)
        extra_data = json_data.get("extra_data", {})
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not valid:
            log.warning("invalid prompt: %s", error)
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        # As 0.8's post_prompt: API keys leave extra_data before it is queued (ComfyUI keeps them in
        # a sixth, never-listed queue field; the emulator has no use for them), and the time the
        # prompt was queued is added, so /queue and /history entries carry create_time (ms).
        for key in SENSITIVE_EXTRA_DATA_KEYS:
            extra_data.pop(key, None)
        extra_data["create_time"] = now_ms()
        item = [number, prompt_id, prompt, extra_data, outputs]
        self.comfy.enqueue(item)
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    async def post_queue(self, request: web.Request) -> web.StreamResponse:
        json_data = await request.json()
        if json_data.get("clear"):
            self.comfy.queue.clear()
            self.comfy.queue_updated()
        for prompt_id in json_data.get("delete", []):
            for i, entry in enumerate(self.comfy.queue):
                if entry[1] == prompt_id:
                    self.comfy.queue.pop(i)
                    heapq.heapify(self.comfy.queue)
                    self.comfy.queue_updated()
                    break
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.StreamResponse:
        try:
            json_data = await request.json()
        except json.JSONDecodeError:
            json_data = {}
        prompt_id = json_data.get("prompt_id")
        if not prompt_id or any(item[1] == prompt_id for item in self.comfy.currently_running.values()):
            self.comfy.interrupted = True
        return web.Response(status=200)

    async def post_free(self, request: web.Request) -> web.StreamResponse:
        json_data = await request.json()
        for flag in ("unload_models", "free_memory"):
            if json_data.get(flag, False):
                self.comfy.flags[flag] = json_data[flag]
        self.comfy.wake()
        return web.Response(status=200)

    async def post_history(self, request: web.Request) -> web.StreamResponse:
        json_data = await request.json()
        if json_data.get("clear"):
            self.comfy.history.clear()
        for prompt_id in json_data.get("delete", []):
            self.comfy.history.pop(prompt_id, None)
        return web.Response(status=200)


def _reencode(path: str, preview: str | None, channel: str) -> tuple[bytes, str]:
    """``/view`` with ``preview=`` (webp/jpeg) or ``channel=rgb|a``."""
    buffer = io.BytesIO()
    with Image.open(path) as img:
        if preview is not None:
            parts = preview.split(";")
            fmt = parts[0] if parts[0] in ("webp", "jpeg") and "a" not in channel else "webp"
            quality = int(parts[-1]) if parts[-1].isdigit() else 90
            out = img.convert("RGB") if fmt == "jpeg" or channel == "rgb" else img
            out.save(buffer, format=fmt, quality=quality)
            return buffer.getvalue(), f"image/{fmt}"
        if channel == "rgb":
            img.convert("RGB").save(buffer, format="PNG")
        else:
            alpha = img.getchannel("A") if img.mode == "RGBA" else Image.new("L", img.size, 255)
            out = Image.new("RGBA", img.size)
            out.putalpha(alpha)
            out.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


def _memory() -> tuple[int, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0, 0


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    loopback = False
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            for *_, sockaddr in socket.getaddrinfo(host, None, family, socket.SOCK_STREAM):
                if not ipaddress.ip_address(sockaddr[0]).is_loopback:
                    return False
                loopback = True
        except socket.gaierror:
            pass
    return loopback


@web.middleware
async def _origin_only_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """ComfyUI's CSRF guard: 403 when a loopback Host and the Origin name different hosts."""
    if "Host" in request.headers and "Origin" in request.headers:
        host_domain: str | None = request.headers["Host"].lower()
        parsed = urllib.parse.urlparse(request.headers["Origin"])
        origin_domain: str | None = parsed.netloc.lower()
        host_parsed = urllib.parse.urlsplit("//" + (host_domain or ""))
        loopback = _is_loopback(host_parsed.hostname)
        if parsed.port is None:
            host_domain = host_parsed.hostname
        if host_parsed.port is None:
            origin_domain = parsed.hostname
        if loopback and host_domain and origin_domain and host_domain != origin_domain:
            log.warning(
                "request with non matching host and origin %s != %s, returning 403",
                host_domain,
                origin_domain,
            )
            return web.Response(status=403)
    if request.method == "OPTIONS":
        return web.Response()
    return await handler(request)
