"""ComfyUI Deploy's run updates, pure: reading webhook and run bodies, ordering updates, and the
per-job webhook secret.

The shapes and where they come from are listed in `swarmstation.integrations.comfydeploy.client`.
A webhook may arrive twice or out of order; `newer` decides whether an update replaces the last one,
so a duplicated or late delivery changes nothing. No I/O here: the dispatcher and the webhook
router apply what these functions decide.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlparse

from swarmstation.domain.errors import BadRequest

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


class WebhookError(BadRequest, ValueError):
    """A webhook body that cannot be read as a run update."""

    code = "invalid_webhook"


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
