"""What a worker's heartbeat says about its ComfyUI: since when it has been down, and whether
that is long enough to take the instance out of routing."""

from __future__ import annotations

from datetime import datetime


def comfyui_down_since(previous: str | None, comfyui_ok: bool, now: datetime) -> str | None:
    """When ComfyUI went down (ISO 8601, as kept in the instance's info), or None while it answers.
    The first heartbeat that reports it down starts the clock; later ones keep that start."""
    if comfyui_ok:
        return None
    return previous if previous is not None else now.isoformat()


def comfyui_down_too_long(down_since: str | None, now: datetime, timeout_seconds: float) -> bool:
    """ComfyUI has been down for `timeout_seconds` or more (the heartbeat timeout: a worker whose
    ComfyUI stays down that long is as good as a worker that stopped heartbeating)."""
    if down_since is None:
        return False
    return (now - datetime.fromisoformat(down_since)).total_seconds() >= timeout_seconds
