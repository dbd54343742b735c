"""A fake OpenAI-compatible endpoint for tests: a real HTTP server on a free port, in a thread,
speaking `POST /v1/chat/completions` as OpenAI does (JSON, or SSE chunks with `stream: true` and
a usage chunk when `stream_options.include_usage` asks for one), so the real `openai` SDK talks
to it unchanged.

It checks `Authorization: Bearer <api_key>` (401 with an OpenAI-shaped error body otherwise),
accepts image content parts (data URLs are decoded and recorded), returns `usage`, records every
request, and can be told to fail (`fail(500)`, `fail(429)`), to be slow (`slow(2.0)`) or to omit
usage. Its answers are deterministic: `answer("...")` queues exact texts; otherwise the answer is
derived from the request (an image's content type and size, or the last user text), so a test
can tell what reached the server from what came back.

    with fake_openai_server() as fake:
        settings = Settings(..., llm_base_url=fake.base_url, llm_api_key=fake.api_key)

or `fake = FakeOpenAI(api_key="sk-...").start()` ... `fake.stop()` where a context manager is awkward
(a subprocess's settings take `fake.base_url`, or `fake.url + "/v1"`).

Function calling (the chat agent's LLM mode): `script(...)` queues whole answers in order, each a
text or a `ToolCalls` (see `call`), answered as OpenAI does (`message.tool_calls` with
`finish_reason: "tool_calls"`, or with `stream: true` as tool-call deltas: the id and name
first, the arguments in pieces). `answer` and `script` share one queue; `respond` may return
either kind. A recorded request tells which functions it offered (`tool_names`) and what the
client answered to earlier calls (`tool_results`):

    fake.script(call("search_tools", {"query": "fox"}), call("propose_plan", {...}), "Here it is.")
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "API_KEY",
    "FakeOpenAI",
    "ImagePart",
    "RecordedRequest",
    "ScriptedCall",
    "ToolCalls",
    "call",
    "fake_openai_server",
]

API_KEY = "sk-fake-Never-Show-This-0123456789"


@dataclass(frozen=True)
class ImagePart:
    """An `image_url` content part the server received: the data URL decoded (or a plain URL)."""

    url: str
    content_type: str | None
    data: bytes | None
    detail: str | None


@dataclass(frozen=True)
class ScriptedCall:
    """One tool call the fake answers: the function's name and its arguments (an object sent as
    JSON, or a string sent as it is, e.g. to test arguments that are not JSON)."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str = ""

    def arguments_text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(frozen=True)
class ToolCalls:
    """An answer that calls functions (and may say something alongside)."""

    calls: tuple[ScriptedCall, ...]
    text: str = ""


def call(name: str, arguments: dict[str, Any] | str | None = None, *more: ScriptedCall) -> ToolCalls:
    """An answer calling `name` with `arguments` (and then the `more` calls, in the same answer)."""
    return ToolCalls((ScriptedCall(name, {} if arguments is None else arguments), *more))


Turn = str | ToolCalls


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    images: list[ImagePart]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    def text_of(self, role: str) -> str:
        """The text parts of the messages with this role, joined by newlines."""
        parts: list[str] = []
        for message in self.messages:
            if message.get("role") != role:
                continue
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(str(p.get("text", "")) for p in content if p.get("type") == "text")
        return "\n".join(parts)

    @property
    def tool_names(self) -> list[str]:
        """The functions the request offered the model."""
        return [str((t.get("function") or {}).get("name")) for t in self.body.get("tools") or []]

    def tool_results(self) -> list[dict[str, Any]]:
        """The `tool` messages of the request, in order: {tool_call_id, content}, the content
        parsed when it is JSON."""
        out = []
        for message in self.messages:
            if message.get("role") != "tool":
                continue
            content = message.get("content")
            try:
                content = json.loads(content) if isinstance(content, str) else content
            except ValueError:
                pass
            out.append({"tool_call_id": message.get("tool_call_id"), "content": content})
        return out


@dataclass
class _Failure:
    status: int
    times: int
    message: str


@dataclass
class FakeOpenAI:
    """The server's state; tests change it between calls (all of it under one lock)."""

    base_url: str = ""
    api_key: str = API_KEY
    requests: list[RecordedRequest] = field(default_factory=list)
    send_usage: bool = True
    chunk_chars: int = 7
    respond: Callable[[RecordedRequest], Turn] | None = None
    _answers: list[Turn] = field(default_factory=list)
    _failures: list[_Failure] = field(default_factory=list)
    _delay: float = 0.0
    _delay_times: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> FakeOpenAI:
        """Serve on 127.0.0.1 on a free port (in a thread) until `stop`; `base_url` ends in `/v1`
        as OpenAI's does, `url` is the server's root."""
        server = _Server(("127.0.0.1", 0), _handler(self))
        self._server = server
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        self._thread = threading.Thread(target=server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def answer(self, *texts: str) -> None:
        """Queue exact answers for the next requests, in order."""
        with self._lock:
            self._answers.extend(texts)

    def script(self, *turns: Turn) -> None:
        """Queue whole answers for the next requests, in order: texts or `ToolCalls`."""
        with self._lock:
            self._answers.extend(turns)

    def fail(self, status: int, *, times: int = 1, message: str = "the fake server was told to fail") -> None:
        """Answer the next `times` requests with this HTTP status and an OpenAI-shaped error."""
        with self._lock:
            self._failures.append(_Failure(status, times, message))

    def slow(self, seconds: float, *, times: int = 1) -> None:
        """Wait `seconds` before answering the next `times` requests."""
        with self._lock:
            self._delay, self._delay_times = seconds, times

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._answers.clear()
            self._failures.clear()
            self._delay, self._delay_times = 0.0, 0
            self.send_usage, self.respond = True, None

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    # what the handler calls

    def _take_failure(self) -> _Failure | None:
        with self._lock:
            if not self._failures:
                return None
            failure = self._failures[0]
            failure.times -= 1
            if failure.times <= 0:
                self._failures.pop(0)
            return failure

    def _take_delay(self) -> float:
        with self._lock:
            if self._delay_times <= 0:
                return 0.0
            self._delay_times -= 1
            return self._delay

    def _answer_for(self, request: RecordedRequest) -> Turn:
        with self._lock:
            if self._answers:
                return self._answers.pop(0)
            respond = self.respond
        if respond is not None:
            return respond(request)
        if request.images:
            described = ", ".join(
                f"{image.content_type or 'a linked image'} of {len(image.data or b'')} bytes"
                for image in request.images
            )
            return f"An image ({described})."
        return f"A detailed picture of {request.text_of('user').strip()}"


def _decode_image(part: dict[str, Any]) -> ImagePart:
    image_url = part.get("image_url") or {}
    url = str(image_url.get("url", ""))
    detail = image_url.get("detail")
    if not url.startswith("data:"):
        return ImagePart(url, None, None, detail)
    head, _, payload = url.partition(",")
    content_type = head[len("data:") :].split(";")[0] or None
    try:
        data = base64.b64decode(payload, validate=True) if head.endswith(";base64") else payload.encode()
    except binascii.Error:
        data = None
    return ImagePart(url, content_type, data, detail)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def _prompt_tokens(body: dict[str, Any]) -> int:
    total = 0
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            total += _tokens(content) + 4
        elif isinstance(content, list):
            for part in content:
                total += _tokens(str(part.get("text", ""))) if part.get("type") == "text" else 85
            total += 4
    return total


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, kind: str, code: str | None = None) -> None:
            self._json(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
            else:
                self._error(404, f"no route {self.path}", "invalid_request_error")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._error(404, f"no route {self.path}", "invalid_request_error")
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._error(400, "the body is not JSON", "invalid_request_error")
                return
            images = [
                _decode_image(part)
                for message in body.get("messages", [])
                if isinstance(message.get("content"), list)
                for part in message["content"]
                if part.get("type") == "image_url"
            ]
            request = RecordedRequest(
                self.path, {k.lower(): v for k, v in self.headers.items()}, body, images
            )
            with fake._lock:
                fake.requests.append(request)
            delay = fake._take_delay()
            if delay:
                time.sleep(delay)
            given = self.headers.get("Authorization", "")
            if given != f"Bearer {fake.api_key}":
                # as OpenAI does, the message names the key it was given
                sent = given.removeprefix("Bearer ")
                self._error(
                    401, f"Incorrect API key provided: {sent}.", "invalid_request_error", "invalid_api_key"
                )
                return
            failure = fake._take_failure()
            if failure is not None:
                kind = "rate_limit_error" if failure.status == 429 else "server_error"
                self._error(failure.status, failure.message, kind)
                return
            if not body.get("model") or not body.get("messages"):
                self._error(400, "model and messages are required", "invalid_request_error")
                return
            turn = fake._answer_for(request)
            calls = turn.calls if isinstance(turn, ToolCalls) else ()
            text = turn.text if isinstance(turn, ToolCalls) else turn
            usage = {
                "prompt_tokens": _prompt_tokens(body),
                "completion_tokens": _tokens(text) + sum(_tokens(c.arguments_text()) for c in calls),
            }
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            ident = f"chatcmpl-{uuid.uuid4().hex[:20]}"
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                self._stream(
                    ident, body["model"], text, usage if include_usage and fake.send_usage else None, calls
                )
                return
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                message["content"] = text or None
                message["tool_calls"] = [
                    {
                        "id": _call_id(c, i),
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments_text()},
                    }
                    for i, c in enumerate(calls)
                ]
            answer: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if calls else "stop",
                    }
                ],
            }
            if fake.send_usage:
                answer["usage"] = usage
            self._json(200, answer)

        def _stream(
            self,
            ident: str,
            model: str,
            text: str,
            usage: dict[str, int] | None,
            calls: tuple[ScriptedCall, ...] = (),
        ) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

            def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                return {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }

            events = [chunk({"role": "assistant", "content": ""})]
            step = max(1, fake.chunk_chars)
            events += [chunk({"content": text[i : i + step]}) for i in range(0, len(text), step)]
            for index, scripted in enumerate(calls):
                head = {"index": index, "id": _call_id(scripted, index), "type": "function"}
                events.append(
                    chunk({"tool_calls": [{**head, "function": {"name": scripted.name, "arguments": ""}}]})
                )
                arguments = scripted.arguments_text()
                events += [
                    chunk(
                        {"tool_calls": [{"index": index, "function": {"arguments": arguments[i : i + step]}}]}
                    )
                    for i in range(0, len(arguments), step)
                ]
            events.append(chunk({}, "tool_calls" if calls else "stop"))
            if usage is not None:
                events.append({**chunk({}), "choices": [], "usage": usage})
            for event in events:
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


def _call_id(scripted: ScriptedCall, index: int) -> str:
    return scripted.id or f"call_{index}_{uuid.uuid4().hex[:12]}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that gave up (a timeout test) closes the socket mid-answer: not an error here
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def fake_openai_server(api_key: str = API_KEY) -> Iterator[FakeOpenAI]:
    """A started fake (see `FakeOpenAI.start`), stopped on the way out."""
    fake = FakeOpenAI(api_key=api_key).start()
    try:
        yield fake
    finally:
        fake.stop()
