"""A small synchronous client of the public API, used by the CLI."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from swarmstation.config import ClientSettings
from swarmstation.domain.errors import SwarmError

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientError(SwarmError):
    """Something the person at the terminal should read; the CLI prints it without a traceback."""

    code = "client_error"


def find_api_key(explicit: str | None = None, data_dir: Path | None = None) -> str | None:
    if explicit:
        return explicit
    settings = ClientSettings()
    if settings.api_key is not None and settings.api_key.get_secret_value():
        return settings.api_key.get_secret_value()
    folder = data_dir or settings.data_dir
    key_file = folder / "admin.key"
    try:
        return key_file.read_text().strip() or None
    except OSError:
        return None


@dataclass
class SseEvent:
    """One event of a job's stream, its data decoded from JSON."""

    id: str | None
    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event as the SSE wire format defines it (data still text)."""

    type: str
    data: str
    id: str | None  #: the last event ID *buffer*: it carries over to later events without an id


class SseParser:
    """The client side of the event-stream format (WHATWG HTML, "Server-sent events", §9.2.6),
    fed text as it arrives, with no I/O of its own.

    Lines end at CRLF, LF or CR (only those: not the other characters `str.splitlines` breaks at);
    a line starting with a colon is a comment; `data:` lines of one event are joined with LF; an
    event is dispatched at a blank line, and only if it has data; `id:` with a NUL is ignored and
    an id persists into the events after it; `retry:` takes ASCII digits only; unknown fields are
    ignored; an event the stream ended before its blank line is dropped."""

    _LINE_BREAK = re.compile(r"\r\n|\r|\n")

    def __init__(self) -> None:
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None  #: the reconnection time the server asked for
        self._pending = ""  # text after the last line break
        self._after_cr = False  # the last chunk ended in CR: an LF opening the next belongs to it
        self._started = False
        self._data: list[str] = []
        self._type = ""

    def feed(self, text: str) -> list[ServerSentEvent]:
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")  # one byte-order mark may open the stream
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        if text:
            self._after_cr = text.endswith("\r")
        *lines, self._pending = self._LINE_BREAK.split(self._pending + text)
        events: list[ServerSentEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, type_ = self._data, self._type
        self._data, self._type = [], ""
        if not data:
            return None
        return ServerSentEvent(type=type_ or "message", data="\n".join(data), id=self.last_event_id)


class Client:
    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.url = (url or ClientSettings().url or DEFAULT_URL).rstrip("/")
        key = find_api_key(api_key)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # Redirects are followed: with S3/R2 an output answers 307 to a presigned URL. httpx drops
        # the Authorization header when a redirect leaves our origin, so the API key never reaches
        # the bucket (and S3 refuses a presigned URL that also carries one).
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, follow_redirects=True)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, resp: httpx.Response) -> httpx.Response:
        if resp.status_code >= 400:
            detail = error_detail(resp)
            if resp.status_code == 401 and self._is_ours(resp):
                detail = (
                    f"{detail} (set SWARMSTATION_API_KEY, or run where `swarmstation up` wrote admin.key)"
                )
            raise ClientError(f"HTTP {resp.status_code}: {detail}")
        return resp

    def _is_ours(self, resp: httpx.Response) -> bool:
        return resp.url.netloc == httpx.URL(self.url).netloc

    def _transport_error(self, exc: httpx.TransportError) -> ClientError:
        if isinstance(exc, httpx.ConnectError):
            return ClientError(f"cannot reach the control plane at {self.url}: is `swarmstation up` running?")
        if isinstance(exc, httpx.TimeoutException):
            return ClientError(f"the control plane at {self.url} did not answer in time")
        return ClientError(f"the connection to {self.url} failed: {type(exc).__name__}: {exc}")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._check(self.http.request(method, path, **kwargs))
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, **kwargs: Any) -> Any:
        resp = self.request("POST", path, **kwargs)
        return resp.json() if resp.content else None

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def stream_events(self, path: str, last_event_id: str | None = None) -> Iterator[SseEvent]:
        """Read one server-sent event stream (a job's, a run's, a conversation's) until it ends,
        each event's data parsed as JSON (data that is not JSON, such as a keep-alive, is skipped).
        Transport errors reach the caller, which may reconnect with the last event id."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with self.http.stream("GET", path, headers=headers, timeout=httpx.Timeout(30.0, read=60.0)) as resp:
            if resp.status_code >= 400:
                resp.read()
                self._check(resp)
            parser = SseParser()
            for text in resp.iter_text():
                for event in parser.feed(text):
                    try:
                        data = json.loads(event.data)
                    except ValueError:
                        continue
                    yield SseEvent(event.id, event.type, data)

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[SseEvent]:
        """Follow a job's server-sent events until the stream ends."""
        try:
            yield from self.stream_events(f"/v1/jobs/{job_id}/events", last_event_id)
        except httpx.ConnectError as exc:
            raise ClientError(f"cannot reach the control plane at {self.url}") from exc

    def download(self, path: str, target: Path) -> int:
        """Stream an object (following the store's redirect) into `target`; returns its size.

        The bytes go to a temporary file beside `target` that replaces it only once the whole
        body has arrived with a success status, so an error never leaves an empty or partial file."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                try:
                    with self.http.stream("GET", path) as resp:
                        if resp.status_code >= 400:
                            resp.read()
                            self._check(resp)
                        for chunk in resp.iter_bytes():
                            fh.write(chunk)
                        size = resp.num_bytes_downloaded
                        declared = resp.headers.get("content-length")
                except httpx.TransportError as exc:
                    raise self._transport_error(exc) from exc
            if declared is not None and declared.isdigit() and int(declared) != size:
                raise ClientError(f"download of {path} stopped at {size} of {declared} bytes")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return size


def error_detail(resp: httpx.Response) -> str:
    """The server's message in an error answer: its JSON `detail`, else the start of its text."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str) and detail:
        return detail
    if detail:
        return json.dumps(detail)
    text = resp.text.strip()
    return text[:500] if text else resp.reason_phrase
