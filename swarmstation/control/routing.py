"""Snapshots for the routing policy (domain/routing.py), read from the database.

A job's models come with their sizes when the catalog or registry knows them; otherwise a typical
size for the folder stands in, so that a missing checkpoint still weighs like one. An instance's
cache is the inventory its last heartbeat reported (after a control-plane restart the view is
rebuilt from the next heartbeats); its download rate is measured from the jobs it ran.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from swarmstation.config import Settings
from swarmstation.domain.routing import ModelNeed, RoutableInstance, RoutableJob, RoutingConfig
from swarmstation.store.models import Instance, Job

_TYPICAL_SIZE = {
    "checkpoints": 6_500_000_000,
    "diffusion_models": 12_000_000_000,
    "text_encoders": 5_000_000_000,
    "vae": 330_000_000,
    "loras": 150_000_000,
    "upscale_models": 65_000_000,
    "controlnet": 1_400_000_000,
}
_CHECKPOINT_FOLDERS = ("checkpoints", "diffusion_models")


def routing_config(settings: Settings) -> RoutingConfig:
    return RoutingConfig(
        max_delay_seconds=settings.routing_max_delay_seconds, aging_seconds=settings.routing_aging_seconds
    )


def routable_job(job: Job, expected_run_seconds: float) -> RoutableJob:
    needs = tuple(
        ModelNeed(
            f"{m['folder']}/{m['name']}", int(m.get("size") or _TYPICAL_SIZE.get(m["folder"], 500_000_000))
        )
        for m in job.required_models
    )
    checkpoint = next((n.key for n in needs if n.key.split("/", 1)[0] in _CHECKPOINT_FOLDERS), None)
    return RoutableJob(
        job_id=job.id,
        pool=job.pool,
        queued_at=job.queued_at.timestamp(),
        required=needs,
        checkpoint=checkpoint,
        expected_run_seconds=expected_run_seconds,
    )


def routable_instance(
    inst: Instance,
    *,
    capacity: int,
    running: Iterable[Job],
    expected_run_seconds: float,
    settings: Settings,
) -> RoutableInstance:
    active = list(running)
    ends = [(j.started_at or j.assigned_at or j.queued_at).timestamp() + expected_run_seconds for j in active]
    info: Mapping[str, Any] = inst.info or {}
    models = info.get("models") or []
    return RoutableInstance(
        instance_id=inst.id,
        pool=inst.pool,
        free_slots=max(0, capacity - len(active)),
        busy_until=max(ends) if ends else None,
        cached=frozenset(str(m) for m in models),
        loaded_checkpoint=info.get("loaded_checkpoint"),
        download_bytes_per_second=float(info.get("download_bps") or 0.0),
        checkpoint_load_seconds=settings.checkpoint_load_seconds,
    )


def measured_rate(previous: float | None, bytes_downloaded: float, seconds: float) -> float | None:
    """An instance's download rate, smoothed over the jobs that downloaded something."""
    if bytes_downloaded <= 0 or seconds <= 0:
        return previous
    rate = bytes_downloaded / seconds
    return rate if not previous else 0.7 * previous + 0.3 * rate


def now_seconds(now: datetime) -> float:
    return now.timestamp()
