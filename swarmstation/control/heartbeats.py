"""A worker's heartbeat: record what it reports about its machine, take the instance out when its
ComfyUI has been down too long, and tell the worker which of its running jobs to cancel, which it
no longer holds (stale) and which go on (their leases renewed).

`record_heartbeat` works in the caller's transaction and does not commit; the worker API (and
the simulator) call it. A non-static instance that must stop is answered with `gone`: the caller
commits the change (the instance is UNHEALTHY) and then refuses the worker (410).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from swarmstation.control import jobs as jobs_ops
from swarmstation.control.instances import move_instance
from swarmstation.domain.errors import Gone, NotFound, StaleLease
from swarmstation.domain.heartbeats import comfyui_down_since, comfyui_down_too_long
from swarmstation.domain.states import InstanceState, InstanceTrigger, JobState
from swarmstation.providers.static import is_static, recover_if_static
from swarmstation.store.models import Instance, Job

UNHEALTHY_REPLACED = "this instance was declared unhealthy and is being replaced"


@dataclass(frozen=True)
class RunningJob:
    """A job the worker says it is running, with the lease token it holds."""

    job_id: str
    lease_token: int


@dataclass(frozen=True)
class Heartbeat:
    """What a worker reports about its machine."""

    running: Sequence[RunningJob] = ()
    comfyui_ok: bool = True
    disk_free_bytes: int | None = None
    models: Sequence[str] = ()
    loaded_checkpoint: str | None = None
    cache: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HeartbeatSettings:
    """From `Settings`: heartbeat_timeout_seconds, lease_seconds, max_infra_requeues."""

    heartbeat_timeout_seconds: float
    lease_seconds: float
    max_infra_requeues: int


@dataclass
class HeartbeatAnswer:
    """What to tell the worker. `gone`: stop (the reason); `requeued`: jobs handed back to the
    queue (their watchers should be woken)."""

    drain: bool = False
    cancel: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    prefetch: list[tuple[str, str]] = field(default_factory=list)  # (folder, name)
    requeued: list[str] = field(default_factory=list)
    gone: str | None = None


def record_heartbeat(
    s: Session, inst: Instance, beat: Heartbeat, *, settings: HeartbeatSettings, now: datetime
) -> HeartbeatAnswer:
    """Apply one heartbeat of `inst`. Raises Gone for a rented instance already declared
    unhealthy (it is being replaced)."""
    if inst.state == InstanceState.UNHEALTHY and not is_static(inst):
        raise Gone(UNHEALTHY_REPLACED)
    inst.last_heartbeat_at = now
    if beat.comfyui_ok:  # an attached machine that was unhealthy is back in routing
        recover_if_static(s, inst, now, "healthy again: its worker heartbeats with ComfyUI up")
    down_since = comfyui_down_since(inst.info.get("comfyui_down_since"), beat.comfyui_ok, now)
    info: dict[str, Any] = {
        **inst.info,
        "disk_free_bytes": beat.disk_free_bytes,
        "models": list(beat.models),
        "loaded_checkpoint": beat.loaded_checkpoint,
        "comfyui_down_since": down_since,
        "cache": beat.cache,
    }
    inst.info = info
    answer = HeartbeatAnswer()
    if comfyui_down_too_long(down_since, now, settings.heartbeat_timeout_seconds):
        reason = f"ComfyUI has not answered for {settings.heartbeat_timeout_seconds:g}s"
        move_instance(s, inst, InstanceTrigger.COMFY_DOWN, reason, now)
        if not is_static(inst):  # an attached machine keeps heartbeating until its ComfyUI is back
            answer.gone = reason
            return answer
    if not beat.comfyui_ok:
        answer.requeued = _hand_back_unstarted(s, inst, {r.job_id for r in beat.running}, settings, now)
    for ref in beat.running:
        job = s.get(Job, ref.job_id)
        if job is not None and job.state == JobState.CANCELLED and job.instance_id == inst.id:
            answer.cancel.append(ref.job_id)
            continue
        try:
            held = jobs_ops.leased_job(s, ref.job_id, inst.id, ref.lease_token)
        except (StaleLease, NotFound):
            answer.stale.append(ref.job_id)
            continue
        jobs_ops.renew_lease(held, lease_seconds=settings.lease_seconds, now=now)
    answer.prefetch = [
        (folder, name)
        for folder, sep, name in (str(k).partition("/") for k in inst.info.get("prefetch") or [])
        if sep
    ]
    # A parked (STOPPED) instance whose container still runs (the stop call is on its way, or was
    # lost and reconcile sends it again) takes no work meanwhile.
    answer.drain = inst.state in (InstanceState.DRAINING, InstanceState.STOPPED)
    return answer


def _hand_back_unstarted(
    s: Session, inst: Instance, running: set[str], settings: HeartbeatSettings, now: datetime
) -> list[str]:
    """A worker whose ComfyUI is down takes no jobs (and the scheduler routes none to it while
    it says so): what was assigned to it but not taken goes back to the queue at once, without
    spending an attempt, instead of waiting for its lease to run out."""
    requeued: list[str] = []
    for job in jobs_ops.leased_jobs_on(s, inst.id):
        if job.id in running or job.state != JobState.ASSIGNED:
            continue
        jobs_ops.requeue_for_infrastructure(
            s,
            job,
            reason="its instance's ComfyUI is not answering",
            max_infra_requeues=settings.max_infra_requeues,
            now=now,
        )
        requeued.append(job.id)
    return requeued
