"""A small synchronous client of the public API, used by the CLI."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientError(Exception):
    """Something the person at the terminal should read; the CLI prints it without a traceback."""


def find_api_key(explicit: str | None = None, data_dir: Path | None = None) -> str | None:
    if explicit:
        return explicit
    if os.environ.get("SWARMSTATION_API_KEY"):
        return os.environ["SWARMSTATION_API_KEY"]
    folder = data_dir or Path(os.environ.get("SWARMSTATION_DATA_DIR", ".swarmstation"))
    key_file = folder / "admin.key"
    try:
        return key_file.read_text().strip() or None
    except OSError:
        return None


@dataclass
class SseEvent:
    id: str | None
    type: str
    data: dict[str, Any]


class Client:
    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.url = (url or os.environ.get("SWARMSTATION_URL") or DEFAULT_URL).rstrip("/")
        key = find_api_key(api_key)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, resp: httpx.Response) -> httpx.Response:
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            if resp.status_code == 401:
                detail = (
                    f"{detail} (set SWARMSTATION_API_KEY, or run where `swarmstation up` wrote admin.key)"
                )
            raise ClientError(f"HTTP {resp.status_code}: {detail}")
        return resp

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._check(self.http.request(method, path, **kwargs))
        except httpx.ConnectError as exc:
            raise ClientError(
                f"cannot reach the control plane at {self.url}: is `swarmstation up` running?"
            ) from exc
        except httpx.TimeoutException as exc:
            raise ClientError(f"the control plane at {self.url} did not answer in time") from exc

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, **kwargs: Any) -> Any:
        resp = self.request("POST", path, **kwargs)
        return resp.json() if resp.content else None

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[SseEvent]:
        """Follow a job's server-sent events until the stream ends."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        try:
            with self.http.stream(
                "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=httpx.Timeout(30.0, read=60.0)
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._check(resp)
                event: dict[str, str] = {}
                for line in resp.iter_lines():
                    if not line:
                        if "data" in event:
                            yield SseEvent(
                                event.get("id"), event.get("event", "message"), json.loads(event["data"])
                            )
                        event = {}
                    elif line.startswith(":"):
                        continue
                    else:
                        name, _, value = line.partition(":")
                        event[name] = value.removeprefix(" ")
        except httpx.ConnectError as exc:
            raise ClientError(f"cannot reach the control plane at {self.url}") from exc

    def download(self, path: str) -> bytes:
        return self.request("GET", path).content
