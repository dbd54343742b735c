"""What a worker's heartbeat says about its ComfyUI: since when it has been down, and whether
that is long enough to take the instance out of routing; the digests that let a heartbeat that
changed nothing skip rewriting (and the worker skip sending) the model inventory."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
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


def inventory_digest(models: Sequence[str]) -> str:
    """A digest of a worker's model inventory, in the order it lists it. The worker sends it
    instead of the inventory when the control plane's answer says it holds the same one."""
    return hashlib.sha256("\n".join(models).encode()).hexdigest()[:32]


def report_digest(
    inventory: str, disk_free_bytes: int | None, loaded_checkpoint: str | None, cache: Mapping[str, float]
) -> str:
    """A digest of everything a heartbeat reports about the machine: a heartbeat whose digest is
    the one the instance's row was written with changes nothing but the time of the last one."""
    body = json.dumps(
        [inventory, disk_free_bytes, loaded_checkpoint, sorted(cache.items())], separators=(",", ":")
    )
    return hashlib.sha256(body.encode()).hexdigest()[:32]
