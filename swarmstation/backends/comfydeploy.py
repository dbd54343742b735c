"""A thin synchronous client for the ComfyUI Deploy API, and pure helpers for its webhooks.

Where each shape comes from (keep this list honest when a shape is changed):

- Base URL `https://api.comfydeploy.com`, Bearer auth from `COMFY_DEPLOY_API_KEY`, the endpoint paths
  `/api/run/deployment/queue` (submit), `/api/run/{id}` (status), `/api/run/{id}/cancel`,
  `/api/deployments`, `/api/machines`: prior-system reference §4 (the earlier platform's `config.js`).
- Queue body `{deployment_id, inputs, machine_id?, webhook, webhook_intermediate_status: true}` answered
  with `{run_id}`: prior-system reference §4 (`runManager.js`); seed roadmap §2 shows the same body.
- Webhook body fields `run_id, status, progress, live_status, outputs, event_type`, and the statuses
  queued/started/running/uploading/success/failed: prior-system reference §4 (`webhookProcessor.js`).
- Run object `{id, status, progress, live_status, outputs: [{data: {images|files|gifs: [{url, filename,
  type}]}}]}`, outputs as a list of `{data: ...}` entries, and the statuses `not-started`, `cancelled`,
  `timeout`: public ComfyUI Deploy SDK / docs found by search (the `comfydeploy` JS client's zod schema
  has `outputs: [{data}]` and statuses success/failed/running/uploading; the prior system's
  `ResponsePayloadNormalizer` handles `[{data:{images|files|text}}]`). NOT verified against the live
  service: `progress` is taken as a fraction 0..1 (values above 1 are read as percent), and
  deployment/machine fields beyond `id`/`name` are read tolerantly.

Nothing here logs, reprs or raises the API key: exceptions carry the method, the path, the status and
a short redacted body excerpt only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import mimetypes
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode, urlparse

import httpx

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.comfydeploy.com"
API_KEY_ENV = "COMFY_DEPLOY_API_KEY"

RunStatus = Literal["queued", "running", "success", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"success", "failed", "cancelled"})
_RANK: dict[str, int] = {"queued": 0, "running": 1, "success": 2, "failed": 2, "cancelled": 2}

# ComfyUI Deploy's statuses (and a few spellings seen elsewhere) → ours.
STATUS_MAP: dict[str, RunStatus] = {
    "not-started": "queued",
    "not_started": "queued",
    "queued": "queued",
    "pending": "queued",
    "started": "running",
    "running": "running",
    "executing": "running",
    "uploading": "running",
    "success": "success",
    "succeeded": "success",
    "completed": "success",
    "failed": "failed",
    "error": "failed",
    "timeout": "failed",
    "cancelled": "cancelled",
    "canceled": "cancelled",
}

# Output list keys inside `data` → our output type.
_OUTPUT_KEYS: dict[str, str] = {
    "images": "image",
    "gifs": "video",
    "videos": "video",
    "files": "file",
    "audio": "audio",
    "model_file": "file",
}


class ComfyDeployError(Exception):
    """An API call failed. `status_code` is None for connection errors; `retryable` says whether
    the failure was of a kind that retries were (or would have been) tried for."""

    def __init__(self, message: str, *, status_code: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable


class WebhookError(ValueError):
    """A webhook body that cannot be read as a run update."""


@dataclass(frozen=True)
class RunOutput:
    url: str
    name: str
    type: str  # image / video / audio / file
    content_type: str | None = None


@dataclass(frozen=True)
class RunUpdate:
    run_id: str
    status: RunStatus
    progress: float | None = None  # 0..1
    live_status: str | None = None
    outputs: tuple[RunOutput, ...] = ()
    error: str | None = None
    raw_status: str = ""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class Deployment:
    id: str
    name: str
    machine_id: str | None = None
    workflow_id: str | None = None
    environment: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Machine:
    id: str
    name: str
    gpu: str | None = None
    status: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


# ---------------------------------------------------------------------------------------------- pure


def normalise_status(raw: str) -> RunStatus:
    status = STATUS_MAP.get(str(raw).strip().lower())
    if status is None:
        raise WebhookError(f"unknown run status {raw!r}")
    return status


def _progress(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        p = float(value)
    except (TypeError, ValueError):
        return None
    if p != p:  # NaN
        return None
    if p > 1.0:
        p = p / 100.0
    return min(1.0, max(0.0, p))


def parse_outputs(outputs: Any) -> tuple[RunOutput, ...]:
    """Reads `[{data: {images: [{url, filename, type}], files: [...], ...}}]`, a bare `{data: ...}`,
    a bare `{images: [...]}`, or a list of `{url, filename}` items; ignores anything without a URL."""
    found: list[RunOutput] = []

    def item(entry: Any, kind: str) -> None:
        if isinstance(entry, str):
            entry = {"url": entry}
        if not isinstance(entry, Mapping):
            return
        url = entry.get("url")
        if not isinstance(url, str) or not url:
            return
        name = entry.get("filename") or entry.get("name") or urlparse(url).path.rsplit("/", 1)[-1]
        content_type = mimetypes.guess_type(str(name))[0]
        if kind == "file" and content_type:
            kind = content_type.split("/", 1)[0] if content_type.split("/", 1)[0] in _KINDS else "file"
        found.append(RunOutput(url=url, name=str(name), type=kind, content_type=content_type))

    def block(data: Any) -> None:
        if not isinstance(data, Mapping):
            return
        for key, kind in _OUTPUT_KEYS.items():
            values = data.get(key)
            if isinstance(values, list):
                for v in values:
                    item(v, kind)
        if "url" in data:
            item(data, "file")

    if isinstance(outputs, Mapping):
        outputs = [outputs]
    if not isinstance(outputs, list):
        return ()
    for entry in outputs:
        if isinstance(entry, Mapping) and "data" in entry:
            block(entry["data"])
        else:
            block(entry)
    return tuple(found)


_KINDS = {"image", "video", "audio"}


def _error_text(body: Mapping[str, Any]) -> str | None:
    for key in ("error", "error_message", "message"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, Mapping):
            msg = value.get("message") or value.get("error")
            if msg:
                return str(msg)
    return None


def run_update_from(body: Mapping[str, Any]) -> RunUpdate:
    """A RunUpdate from a run object (GET /api/run/{id}) or a webhook body: both share the fields."""
    run_id = body.get("run_id") or body.get("id") or body.get("runId")
    if not run_id:
        raise WebhookError("no run_id")
    raw_status = body.get("status")
    if raw_status is None:
        raise WebhookError("no status")
    status = normalise_status(str(raw_status))
    live = body.get("live_status", body.get("liveStatus"))
    progress = _progress(body.get("progress"))
    if status == "success" and progress is None:
        progress = 1.0
    error = _error_text(body) if status == "failed" else None
    if status == "failed" and error is None and str(raw_status).lower() == "timeout":
        error = "timeout"
    return RunUpdate(
        run_id=str(run_id),
        status=status,
        progress=progress,
        live_status=str(live) if live not in (None, "") else None,
        outputs=parse_outputs(body.get("outputs")),
        error=error,
        raw_status=str(raw_status),
    )


def parse_webhook(body: bytes | str | Mapping[str, Any]) -> RunUpdate:
    """Reads a ComfyUI Deploy webhook body (raw JSON or already decoded). Tolerates `id`/`runId`
    for `run_id`, `liveStatus`, progress as a fraction or percent, and a `{"data": {...}}` or
    `{"run": {...}}` envelope. Raises WebhookError when it is not a run update."""
    if isinstance(body, bytes | str):
        try:
            decoded = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise WebhookError("webhook body is not JSON") from exc
    else:
        decoded = body
    if not isinstance(decoded, Mapping):
        raise WebhookError("webhook body is not an object")
    if "status" not in decoded:
        for envelope in ("data", "run"):
            inner = decoded.get(envelope)
            if isinstance(inner, Mapping) and "status" in inner:
                decoded = {**inner, "run_id": inner.get("run_id") or decoded.get("run_id")}
                break
    return run_update_from(decoded)


def newer(previous: RunUpdate | None, update: RunUpdate) -> bool:
    """Whether `update` should replace `previous` for the same run. Duplicated and out-of-order
    deliveries change nothing: a terminal status is final; the status never goes backwards in
    queued < running < terminal; within the same status only strictly greater progress counts
    (so a repeated update, or a live-status text at the same progress, is not applied)."""
    if previous is None:
        return True
    if previous.run_id != update.run_id:
        raise ValueError("updates for different runs")
    if previous.terminal:
        return False
    prev_rank, rank = _RANK[previous.status], _RANK[update.status]
    if rank != prev_rank:
        return rank > prev_rank
    if update.progress is None:
        return False
    return previous.progress is None or update.progress > previous.progress


def webhook_secret(job_id: str, key: bytes) -> str:
    """A per-run secret to put in the webhook URL: HMAC-SHA256 of the job id under our key."""
    return hmac.new(key, f"comfydeploy-webhook:{job_id}".encode(), hashlib.sha256).hexdigest()


def verify_webhook_secret(job_id: str, secret: str | None, key: bytes) -> bool:
    if not secret:
        return False
    return hmac.compare_digest(webhook_secret(job_id, key), secret)


def webhook_url(base: str, job_id: str, key: bytes) -> str:
    """`base` (our webhook endpoint) with `job` and `secret` query parameters appended."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}{urlencode({'job': job_id, 'secret': webhook_secret(job_id, key)})}"


# -------------------------------------------------------------------------------------------- client


class ComfyDeployClient:
    """Synchronous client. Retries 429, 5xx and connection errors with exponential backoff and
    jitter (`sleep` and `rand` are injectable); never retries other 4xx. Queueing a run is not
    idempotent, so it is retried only where the run surely was not created: 429, 503 and failures
    to connect."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not key:
            raise ComfyDeployError(f"no ComfyUI Deploy API key ({API_KEY_ENV} is not set)")
        self._key = key
        self.base_url = (base_url or os.environ.get("COMFY_DEPLOY_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._rand = rand
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        return f"ComfyDeployClient(base_url={self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ComfyDeployClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        base: float = min(self.max_backoff, self.backoff * (2.0**attempt))
        delay: float = base * (0.5 + 0.5 * self._rand())
        if retry_after:
            try:
                delay = max(delay, min(self.max_backoff, float(retry_after)))
            except ValueError:
                pass
        return delay

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        idempotent: bool = True,
        absolute: bool = False,
    ) -> httpx.Response:
        # Only send the key to the API's own host (output URLs are usually pre-signed elsewhere).
        headers: dict[str, str] = {}
        if not absolute or urlparse(path).netloc == urlparse(self.base_url).netloc:
            headers["Authorization"] = f"Bearer {self._key}"
        shown = urlparse(path).path if absolute else path
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, json=json_body, headers=headers)
            except httpx.TransportError as exc:
                connect = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                retryable = idempotent or connect
                if retryable and attempt < self.retries:
                    delay = self._delay(attempt, None)
                    log.warning(
                        "comfydeploy %s %s: %s; retry in %.2fs", method, shown, type(exc).__name__, delay
                    )
                    self._sleep(delay)
                    attempt += 1
                    continue
                raise ComfyDeployError(
                    f"{method} {shown}: {type(exc).__name__}", retryable=retryable
                ) from None
            code = response.status_code
            if code < 400:
                log.debug("comfydeploy %s %s -> %d", method, shown, code)
                return response
            retryable = code == 429 or code >= 500
            if not idempotent:
                retryable = code in (429, 503)
            if retryable and attempt < self.retries:
                delay = self._delay(attempt, response.headers.get("retry-after"))
                log.warning("comfydeploy %s %s -> %d; retry in %.2fs", method, shown, code, delay)
                self._sleep(delay)
                attempt += 1
                continue
            excerpt = self._redact(response.text[:200])
            raise ComfyDeployError(
                f"{method} {shown} -> {code}: {excerpt}", status_code=code, retryable=retryable
            )

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ComfyDeployError(
                f"{response.request.method} {response.request.url.path}: response is not JSON",
                status_code=response.status_code,
            ) from None

    # -- API

    def queue_run(
        self,
        deployment_id: str,
        inputs: Mapping[str, Any],
        webhook_url: str | None = None,
        *,
        machine_id: str | None = None,
        intermediate_status: bool = True,
    ) -> str:
        body: dict[str, Any] = {"deployment_id": deployment_id, "inputs": dict(inputs)}
        if machine_id:
            body["machine_id"] = machine_id
        if webhook_url:
            body["webhook"] = webhook_url
            body["webhook_intermediate_status"] = intermediate_status
        data = self._json(
            self._request("POST", "/api/run/deployment/queue", json_body=body, idempotent=False)
        )
        run_id = data.get("run_id") if isinstance(data, Mapping) else None
        if not run_id:
            raise ComfyDeployError("POST /api/run/deployment/queue: no run_id in the answer")
        log.info("comfydeploy queued run %s for deployment %s", run_id, deployment_id)
        return str(run_id)

    def get_run(self, run_id: str) -> RunUpdate:
        data = self._json(self._request("GET", f"/api/run/{run_id}"))
        if not isinstance(data, Mapping):
            raise ComfyDeployError(f"GET /api/run/{run_id}: not an object")
        try:
            return run_update_from({**data, "run_id": data.get("id") or data.get("run_id") or run_id})
        except WebhookError as exc:
            raise ComfyDeployError(f"GET /api/run/{run_id}: {exc}") from None

    def cancel_run(self, run_id: str) -> None:
        self._request("POST", f"/api/run/{run_id}/cancel")

    def outputs(self, run_id: str) -> list[RunOutput]:
        return list(self.get_run(run_id).outputs)

    def download(self, output: RunOutput | str) -> bytes:
        url = output.url if isinstance(output, RunOutput) else output
        return self._request("GET", url, absolute=True).content

    def deployments(self) -> list[Deployment]:
        result = []
        for d in _listing(self._json(self._request("GET", "/api/deployments")), "deployments"):
            result.append(
                Deployment(
                    id=str(d["id"]),
                    name=str(d.get("name") or d["id"]),
                    machine_id=_opt(d.get("machine_id")),
                    workflow_id=_opt(d.get("workflow_id")),
                    environment=_opt(d.get("environment")),
                    raw=d,
                )
            )
        return result

    def machines(self) -> list[Machine]:
        result = []
        for m in _listing(self._json(self._request("GET", "/api/machines")), "machines"):
            result.append(
                Machine(
                    id=str(m["id"]),
                    name=str(m.get("name") or m["id"]),
                    gpu=_opt(m.get("gpu")),
                    status=_opt(m.get("status")),
                    raw=m,
                )
            )
        return result


def _opt(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _listing(data: Any, key: str) -> list[Mapping[str, Any]]:
    if isinstance(data, Mapping):
        data = data.get(key) or data.get("data") or []
    if not isinstance(data, list):
        return []
    return [d for d in data if isinstance(d, Mapping) and d.get("id")]
