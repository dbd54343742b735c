"""Async client for a ComfyUI server (real or emulated), written from the protocol reference.

Theory of operation for :meth:`ComfyClient.run`:

1. open ``/api/ws?clientId=<id>`` first, so no event of the new prompt can be missed;
2. ``POST /api/prompt`` with the same ``client_id`` (without it ComfyUI sends no per-prompt events);
3. follow the socket, keeping only messages whose ``prompt_id`` is ours, until
   ``executing {node: null}``; ``execution_error`` / ``execution_interrupted`` raise at once;
4. read ``/api/history/{id}``, which ComfyUI writes *before* that final message.

If the socket cannot be opened or drops, or stays silent for ``history_poll_interval`` seconds,
the client polls ``/api/history/{id}`` instead: the entry appears exactly when the prompt ends.

Errors::

    ComfyError                     anything this client raises on purpose (an UpstreamError)
    ├── ComfyUnavailable           connection refused, transport timeouts, HTTP 5xx
    ├── ComfyValidationError       POST /prompt answered 400 (error + node_errors)
    ├── ComfyExecutionError        execution_error or execution_interrupted
    └── ComfyTimeout               run(timeout=...) ran out; also a TimeoutError

All of them belong to the tree of `swarmstation.domain.errors`; ComfyUnavailable is also an
`Unavailable` (503 comfy_unavailable).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mimetypes
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from swarmstation.domain.errors import Unavailable, UpstreamError

__all__ = [
    "ComfyClient",
    "ComfyError",
    "ComfyExecutionError",
    "ComfyTimeout",
    "ComfyUnavailable",
    "ComfyValidationError",
    "OutputFile",
    "ProgressEvent",
    "RunResult",
]

log = logging.getLogger(__name__)

ProgressCallback = Callable[["ProgressEvent"], Awaitable[None]]


class ComfyError(UpstreamError):
    """Base class of everything this client raises on purpose."""

    code = "comfy_error"


class ComfyUnavailable(ComfyError, Unavailable):
    """The server could not be reached, timed out, or answered 5xx."""

    # Set here, not inherited: along the MRO ComfyError (an UpstreamError, 502) comes first.
    code = "comfy_unavailable"
    status_hint = 503
    what = "ComfyUI server"


class ComfyValidationError(ComfyError):
    """``POST /prompt`` rejected the workflow (HTTP 400)."""

    code = "comfy_validation_error"

    def __init__(self, error: dict[str, Any], node_errors: dict[str, Any]) -> None:
        self.error = error
        self.node_errors = node_errors
        super().__init__(_validation_summary(error, node_errors))


class ComfyExecutionError(ComfyError):
    """The prompt failed while running (``execution_error``) or was interrupted."""

    code = "comfy_execution_error"

    def __init__(
        self,
        message: str,
        *,
        node_id: str | None = None,
        node_type: str | None = None,
        exception_type: str | None = None,
        interrupted: bool = False,
    ) -> None:
        self.message = message
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.interrupted = interrupted
        where = f"node {node_id} ({node_type})" if node_id is not None else "prompt"
        if interrupted:
            text = f"{where} was interrupted"
        else:
            text = f"{where} failed: {exception_type + ': ' if exception_type else ''}{message}"
        super().__init__(text)

    @classmethod
    def from_message(cls, event: str, data: dict[str, Any]) -> ComfyExecutionError:
        """Build from an ``execution_error`` / ``execution_interrupted`` WS or history message."""
        node_id = data.get("node_id")
        return cls(
            str(
                data.get("exception_message", "interrupted" if event == "execution_interrupted" else "")
            ).strip(),
            node_id=str(node_id) if node_id is not None else None,
            node_type=data.get("node_type"),
            exception_type=data.get("exception_type"),
            interrupted=event == "execution_interrupted",
        )


class ComfyTimeout(ComfyError, TimeoutError):
    """``run`` did not finish in time; the prompt may still be queued or running."""

    code = "comfy_timeout"

    def __init__(self, prompt_id: str, timeout: float) -> None:
        self.prompt_id = prompt_id
        super().__init__(f"prompt {prompt_id} did not finish within {timeout:g}s")


@dataclass(frozen=True)
class OutputFile:
    """One file a node reported in its UI output (``/view`` coordinates)."""

    node_id: str
    filename: str
    subfolder: str
    type: str  #: "output" | "temp" | "input"


@dataclass(frozen=True)
class ProgressEvent:
    """What ``run`` reports while a prompt executes.

    ``started`` (node None) once; ``cached`` once per node served from ComfyUI's cache;
    ``executing`` when a node starts; ``progress`` for sampler steps (value of max).
    """

    kind: str
    node: str | None
    value: int = 0
    max: int = 0


@dataclass(frozen=True)
class RunResult:
    prompt_id: str
    outputs: list[OutputFile]  #: files of type "output" only
    history: dict[str, Any]  #: the whole history entry (prompt, outputs, status, meta, ...)


def _validation_summary(error: dict[str, Any], node_errors: dict[str, Any]) -> str:
    parts = []
    for node_id, entry in node_errors.items():
        entry = entry if isinstance(entry, dict) else {}
        for err in entry.get("errors") or [{}]:
            text = f"{err.get('message', 'invalid')}: {err.get('details', '')}".rstrip(": ")
            parts.append(f"node {node_id} ({entry.get('class_type', '?')}): {text}")
    if not parts:
        parts.append(f"{error.get('message', 'invalid prompt')}: {error.get('details', '')}".rstrip(": "))
    return "; ".join(parts).replace("\n", "; ")


def _output_files(entry: dict[str, Any]) -> list[OutputFile]:
    """Files of type "output" from every list-of-file-dicts in the history outputs."""
    files = []
    for node_id, ui in (entry.get("outputs") or {}).items():
        if not isinstance(ui, dict):
            continue
        for items in ui.values():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and "filename" in item and item.get("type", "output") == "output":
                    files.append(
                        OutputFile(str(node_id), item["filename"], item.get("subfolder", ""), "output")
                    )
    return files


def _history_failure(entry: dict[str, Any]) -> ComfyExecutionError | None:
    """The error a finished history entry records, if it did not succeed."""
    status = entry.get("status") or {}
    if status.get("status_str", "success") == "success":
        return None
    for event, data in reversed(status.get("messages") or []):
        if event in ("execution_error", "execution_interrupted"):
            return ComfyExecutionError.from_message(event, data)
    return ComfyExecutionError(f"prompt ended with status {status.get('status_str')!r}")


class ComfyClient:
    """One ComfyUI server. Use as ``async with ComfyClient(url) as comfy: ...``.

    ``timeout`` bounds each HTTP request and the WebSocket handshake, not a whole run.
    """

    #: seconds between ``/history`` polls when the socket is gone or silent.
    history_poll_interval: float = 5.0
    #: seconds between polls after the socket dropped.
    fallback_poll_interval: float = 0.5

    def __init__(self, base_url: str, *, timeout: float = 30.0, client_id: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)
        self._active_runs = 0

    async def __aenter__(self) -> ComfyClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---------------------------------------------------------------- plain endpoints

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ComfyUnavailable(f"{method} {self.base_url}{path}: {exc!r}") from exc
        if response.status_code >= 500:
            raise ComfyUnavailable(f"{method} {path}: HTTP {response.status_code}: {response.text[:200]}")
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, **kwargs)
        if response.status_code != 200:
            raise ComfyError(f"{method} {path}: HTTP {response.status_code}: {response.text[:200]}")
        try:
            return response.json()
        except json.JSONDecodeError as exc:
            raise ComfyError(f"{method} {path}: invalid JSON: {response.text[:200]!r}") from exc

    async def system_stats(self) -> dict[str, Any]:
        stats = await self._json("GET", "/api/system_stats")
        if not isinstance(stats, dict):
            raise ComfyError(f"unexpected /system_stats body: {stats!r}")
        return stats

    async def wait_until_ready(self, timeout: float) -> None:
        """Poll ``/system_stats`` until it answers; ComfyUnavailable after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    await self.system_stats()
                return
            except (ComfyError, TimeoutError) as exc:
                if time.monotonic() >= deadline:
                    raise ComfyUnavailable(f"{self.base_url} not ready after {timeout:g}s: {exc}") from exc
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    async def list_models(self, folder: str) -> list[str]:
        """Relative file names in a model folder ("checkpoints", "loras", ...)."""
        response = await self._request("GET", f"/api/models/{folder}")
        if response.status_code == 404:
            raise ComfyError(f"unknown model folder {folder!r}")
        if response.status_code != 200:
            raise ComfyError(f"GET /api/models/{folder}: HTTP {response.status_code}")
        return [str(name) for name in response.json()]

    async def upload_image(
        self, name: str, data: bytes, *, subfolder: str = "", overwrite: bool = True
    ) -> str:
        """Upload into input/; returns the value for ``LoadImage.image`` (the server may rename)."""
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        form = {"type": "input", "subfolder": subfolder, "overwrite": "true" if overwrite else "false"}
        body = await self._json(
            "POST", "/api/upload/image", files={"image": (name, data, content_type)}, data=form
        )
        stored, folder = body["name"], body.get("subfolder") or ""
        return f"{folder}/{stored}" if folder else stored

    async def download(self, f: OutputFile) -> bytes:
        params = {"filename": f.filename, "subfolder": f.subfolder, "type": f.type}
        response = await self._request("GET", "/api/view", params=params)
        if response.status_code != 200:
            raise ComfyError(f"GET /api/view {params}: HTTP {response.status_code}")
        return response.content

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop ``prompt_id`` (drop it if pending, interrupt it if running), or whatever runs now."""
        if prompt_id is None:
            await self._request("POST", "/api/interrupt", json={})
            return
        await self._request("POST", "/api/queue", json={"delete": [prompt_id]})
        queue = await self._json("GET", "/api/queue")
        running = queue.get("queue_running", []) if isinstance(queue, dict) else []
        # Servers older than 2025-09 ignore the id and interrupt globally, so only ask when it runs.
        if any(isinstance(item, list) and len(item) > 1 and item[1] == prompt_id for item in running):
            await self._request("POST", "/api/interrupt", json={"prompt_id": prompt_id})

    # ---------------------------------------------------------------- run

    async def run(
        self,
        workflow: dict[str, Any],
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
        prompt_id: str | None = None,
    ) -> RunResult:
        """Queue an API-format workflow, wait for it and return its outputs.

        Raises ComfyValidationError (400), ComfyExecutionError (failed or interrupted),
        ComfyUnavailable (connection problems) and ComfyTimeout (``timeout`` seconds passed; the
        prompt is left as it is, call :meth:`interrupt` to stop it). Exceptions raised by
        ``on_progress`` abort the wait and propagate.
        """
        prompt_id = prompt_id or str(uuid.uuid4())
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation when the
        # inner await finishes at the same moment (a busy socket makes that likely).
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                return await self._run(workflow, on_progress, prompt_id)
        except TimeoutError as exc:
            if timeout is None or not deadline.expired():
                raise
            raise ComfyTimeout(prompt_id, timeout) from exc

    def _ws_url(self, client_id: str) -> str:
        url = httpx.URL(self.base_url)
        scheme = "wss" if url.scheme == "https" else "ws"
        return str(
            url.copy_with(
                scheme=scheme, path=url.path.rstrip("/") + "/api/ws", params={"clientId": client_id}
            )
        )

    async def _open_ws(self, client_id: str) -> ClientConnection | None:
        try:
            return await connect(self._ws_url(client_id), open_timeout=self.timeout, max_size=2**26)
        except (OSError, TimeoutError, WebSocketException) as exc:
            log.warning("ComfyUI WebSocket unavailable (%s); polling history instead", exc)
            return None

    async def _run(
        self, workflow: dict[str, Any], on_progress: ProgressCallback | None, prompt_id: str
    ) -> RunResult:
        # A second concurrent run must not reuse the socket id: the server keeps one socket per id.
        client_id = self.client_id if self._active_runs == 0 else f"{self.client_id}-{uuid.uuid4().hex[:8]}"
        self._active_runs += 1
        ws = await self._open_ws(client_id)
        try:
            prompt_id = await self._queue_prompt(workflow, client_id, prompt_id)
            entry = None
            if ws is not None:
                entry = await self._follow(ws, prompt_id, on_progress)
            if entry is None:
                entry = await self._poll_history(prompt_id, self.fallback_poll_interval)
        finally:
            self._active_runs -= 1
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close()
        failure = _history_failure(entry)
        if failure is not None:
            raise failure
        return RunResult(prompt_id, _output_files(entry), entry)

    async def _queue_prompt(self, workflow: dict[str, Any], client_id: str, prompt_id: str) -> str:
        body = {"prompt": workflow, "client_id": client_id, "prompt_id": prompt_id}
        response = await self._request("POST", "/api/prompt", json=body)
        try:
            reply = response.json()
        except json.JSONDecodeError:
            reply = None
        if response.status_code == 400:
            reply = reply if isinstance(reply, dict) else {}
            error, node_errors = reply.get("error"), reply.get("node_errors")
            if not isinstance(error, dict):
                error = {"type": "http_400", "message": response.text[:200], "details": ""}
            if not isinstance(node_errors, dict):  # some builds send [] when there are none
                node_errors = {}
            raise ComfyValidationError(error, node_errors)
        if response.status_code != 200 or not isinstance(reply, dict) or "prompt_id" not in reply:
            raise ComfyError(f"POST /api/prompt: HTTP {response.status_code}: {response.text[:200]}")
        if reply.get("node_errors"):
            log.warning("prompt %s queued with some outputs dropped: %s", reply["prompt_id"],
                        _validation_summary({}, reply["node_errors"]))  # fmt: skip
        # Servers older than 2025-07 ignore our prompt_id and pick their own.
        return str(reply["prompt_id"])

    async def _follow(
        self, ws: ClientConnection, prompt_id: str, on_progress: ProgressCallback | None
    ) -> dict[str, Any] | None:
        """Follow WS events to the end of the prompt; the history entry, or None if the socket died."""

        async def emit(event: ProgressEvent) -> None:
            if on_progress is not None:
                await on_progress(event)

        while True:
            try:
                async with asyncio.timeout(self.history_poll_interval):
                    raw = await ws.recv()
            except TimeoutError:
                entry = await self._history_entry(prompt_id)  # a silent socket is no proof of life
                if entry is not None:
                    return entry
                continue
            except ConnectionClosed:
                log.warning("ComfyUI WebSocket closed during prompt %s; polling history", prompt_id)
                return None
            if isinstance(raw, bytes):
                continue  # previews and text frames
            try:
                message = json.loads(raw)
                kind, data = message["type"], message["data"]
            except (ValueError, KeyError, TypeError):
                continue
            if not isinstance(data, dict) or data.get("prompt_id") != prompt_id:
                continue
            if kind == "execution_start":
                await emit(ProgressEvent("started", None))
            elif kind == "execution_cached":
                for node in data.get("nodes") or []:
                    await emit(ProgressEvent("cached", str(node)))
            elif kind == "executing" and data.get("node") is not None:
                await emit(ProgressEvent("executing", str(data["node"])))
            elif kind == "progress":
                node = data.get("node")
                value, total = int(data.get("value", 0)), int(data.get("max", 0))
                await emit(ProgressEvent("progress", str(node) if node is not None else None, value, total))
            elif kind in ("execution_error", "execution_interrupted"):
                raise ComfyExecutionError.from_message(kind, data)
            elif kind == "executing":
                # node is None: the history entry was written just before this message.
                return await self._poll_history(prompt_id, self.fallback_poll_interval)

    async def _history_entry(self, prompt_id: str) -> dict[str, Any] | None:
        body = await self._json("GET", f"/api/history/{prompt_id}")
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return entry if isinstance(entry, dict) else None

    async def _poll_history(self, prompt_id: str, interval: float) -> dict[str, Any]:
        while True:
            entry = await self._history_entry(prompt_id)
            if entry is not None:
                return entry
            await asyncio.sleep(interval)
