"""Snapshots for the routing policy (domain/routing.py), read from the database.

A job's models come with their sizes when the catalog or registry knows them; otherwise a typical
size for the folder stands in, so that a missing checkpoint still weighs like one. An instance's
cache is the inventory its last heartbeat reported (after a control-plane restart the view is
rebuilt from the next heartbeats); its download rate is measured from the jobs it ran.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from swarmstation.config import Settings
from swarmstation.domain import estimates
from swarmstation.domain.estimates import InstanceObservation
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


class JobColumns(Protocol):
    """What routing reads of a job: a Job row, or just these columns (the scheduler's queue)."""

    @property
    def id(self) -> str: ...
    @property
    def pool(self) -> str: ...
    @property
    def queued_at(self) -> datetime: ...
    @property
    def required_models(self) -> list[dict[str, Any]]: ...


def routable_job(job: JobColumns, expected_run_seconds: float) -> RoutableJob:
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


def observe_instance(inst: Instance, *, capacity: int, running: Iterable[Job]) -> InstanceObservation:
    """What the control plane knows of an instance: its row, its leased jobs, its last heartbeat."""
    info: Mapping[str, Any] = inst.info or {}
    return InstanceObservation(
        instance_id=inst.id,
        pool=inst.pool,
        capacity=capacity,
        running_started_at=tuple((j.started_at or j.assigned_at or j.queued_at).timestamp() for j in running),
        reported_models=frozenset(str(m) for m in info.get("models") or []),
        loaded_checkpoint=info.get("loaded_checkpoint"),
        download_bytes_per_second=float(info.get("download_bps") or 0.0),
    )


def routable_instance(
    inst: Instance,
    *,
    capacity: int,
    running: Iterable[Job],
    expected_run_seconds: float,
    settings: Settings,
) -> RoutableInstance:
    return estimates.routable_instance(
        observe_instance(inst, capacity=capacity, running=running),
        expected_run_seconds=expected_run_seconds,
        checkpoint_load_seconds=settings.checkpoint_load_seconds,
    )


measured_rate = estimates.measured_rate  # an instance's download rate (domain/estimates.py)


def now_seconds(now: datetime) -> float:
    return now.timestamp()
