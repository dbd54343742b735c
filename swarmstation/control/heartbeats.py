"""A worker's heartbeat: record what it reports about its machine, take the instance out when its
ComfyUI has been down too long, and tell the worker which of its running jobs to cancel, which it
no longer holds (stale) and which go on (their leases renewed).

`record_heartbeat` works in the caller's transaction and does not commit; the worker API (and
the simulator) call it. A non-static instance that must stop is answered with `gone`: the caller
commits the change (the instance is UNHEALTHY) and then refuses the worker (410).

Most heartbeats change nothing: `quick_heartbeat` answers those with one read of a few columns
(the stored report's digest, not the inventory) and one UPDATE of the heartbeat's time; it
returns None when the report changed or the instance needs more (ComfyUI down, UNHEALTHY),
and the caller then calls `record_heartbeat`. A worker may send its inventory's digest instead
of the inventory (`models=None`) once the answer says the control plane holds that inventory
(`inventory_digest`, kept in the row: a restarted control plane still holds it); one whose row
does not hold that inventory (a new row, an edit by hand) answers `send_inventory`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from swarmstation.control import jobs as jobs_ops
from swarmstation.control.instances import move_instance
from swarmstation.domain.errors import Gone, NotFound, StaleLease
from swarmstation.domain.heartbeats import (
    comfyui_down_since,
    comfyui_down_too_long,
    inventory_digest,
    report_digest,
)
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
    #: None: not sent, `inventory` stands for it (an older worker that sends neither: no models)
    models: Sequence[str] | None = ()
    loaded_checkpoint: str | None = None
    cache: dict[str, float] = field(default_factory=dict)
    #: The digest of the inventory the worker holds (domain.heartbeats.inventory_digest)
    inventory: str | None = None

    def inventory_digest(self) -> str:
        if self.models is None:
            return self.inventory or inventory_digest(())
        return inventory_digest(self.models)

    def digest(self) -> str:
        return report_digest(
            self.inventory_digest(), self.disk_free_bytes, self.loaded_checkpoint, self.cache
        )


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
    #: The digest of the inventory the control plane now holds for the instance; `send_inventory`:
    #: the worker sent a digest that is not it, and should send the inventory itself.
    inventory_digest: str | None = None
    send_inventory: bool = False
    #: What routing sees of the instance changed (its state, its ComfyUI's health): the caller
    #: asks for a scheduler pass.
    changed: bool = False


# Built once (SQL Core, run on the session's connection): a statement's cache key is computed
# once per object, and the ORM's execution path costs more than these statements.
# Two values out of the JSON, not the JSON: the row's info holds the inventory (up to 10,000
# keys). The slow path clears the stored digest while ComfyUI is down, and a report's digest
# covers its inventory's, so a match says both.
_QUICK_READ = select(
    Instance.state,
    Instance.token_hash,
    Instance.info["report_digest"].as_string(),
    Instance.info["prefetch"],
).where(Instance.id == bindparam("instance_id"))
_QUICK_WRITE = (
    update(Instance)
    .where(Instance.id == bindparam("instance_id"))
    .values(last_heartbeat_at=bindparam("beat_at", type_=Instance.__table__.c.last_heartbeat_at.type))
)


def quick_heartbeat(
    s: Session,
    instance_id: str,
    token_hash: str,
    beat: Heartbeat,
    *,
    settings: HeartbeatSettings,
    now: datetime,
) -> HeartbeatAnswer | None:
    """A heartbeat that reports what the instance's row already holds: its time is written and
    its running jobs' leases renewed, nothing else is read or written. None: the slow path
    (`record_heartbeat`) must take it (the report changed, ComfyUI is or was down, the instance is
    unhealthy, terminated, unknown, or the token is not its own)."""
    if not beat.comfyui_ok:
        return None
    conn = s.connection()
    row = conn.execute(_QUICK_READ, {"instance_id": instance_id}).first()
    if row is None:
        return None
    state, stored_token, digest, prefetch = row
    if (
        state in (InstanceState.TERMINATED, InstanceState.UNHEALTHY)
        or (token_hash and stored_token != token_hash)
        or digest is None
        or digest != beat.digest()
    ):
        return None
    conn.execute(_QUICK_WRITE, {"instance_id": instance_id, "beat_at": now})
    answer = HeartbeatAnswer(inventory_digest=beat.inventory_digest())
    _renew_running(s, instance_id, beat, settings, now, answer)
    answer.prefetch = _prefetch_of(prefetch)
    answer.drain = state in (InstanceState.DRAINING, InstanceState.STOPPED)
    return answer


def _prefetch_of(keys: object) -> list[tuple[str, str]]:
    if not isinstance(keys, list):
        return []
    return [(folder, name) for folder, sep, name in (str(k).partition("/") for k in keys) if sep]


def _renew_running(
    s: Session,
    instance_id: str,
    beat: Heartbeat,
    settings: HeartbeatSettings,
    now: datetime,
    answer: HeartbeatAnswer,
) -> None:
    for ref in beat.running:
        job = s.get(Job, ref.job_id)
        if job is not None and job.state == JobState.CANCELLED and job.instance_id == instance_id:
            answer.cancel.append(ref.job_id)
            continue
        try:
            held = jobs_ops.leased_job(s, ref.job_id, instance_id, ref.lease_token)
        except (StaleLease, NotFound):
            answer.stale.append(ref.job_id)
            continue
        jobs_ops.renew_lease(held, lease_seconds=settings.lease_seconds, now=now)


def record_heartbeat(
    s: Session, inst: Instance, beat: Heartbeat, *, settings: HeartbeatSettings, now: datetime
) -> HeartbeatAnswer:
    """Apply one heartbeat of `inst`. Raises Gone for a rented instance already declared
    unhealthy (it is being replaced)."""
    if inst.state == InstanceState.UNHEALTHY and not is_static(inst):
        raise Gone(UNHEALTHY_REPLACED)
    inst.last_heartbeat_at = now
    state_before = inst.state
    if beat.comfyui_ok:  # an attached machine that was unhealthy is back in routing
        recover_if_static(s, inst, now, "healthy again: its worker heartbeats with ComfyUI up")
    previous_down = inst.info.get("comfyui_down_since")
    down_since = comfyui_down_since(previous_down, beat.comfyui_ok, now)
    answer = HeartbeatAnswer()
    held_inventory = inst.info.get("inventory_digest")
    if beat.models is None and beat.inventory != held_inventory:
        # a digest of an inventory this row does not hold: keep the last one, ask for it
        models = inst.info.get("models") or []
        answer.send_inventory = True
        digests: dict[str, Any] = {"report_digest": None}
    else:
        models = list(beat.models) if beat.models is not None else inst.info.get("models") or []
        held_inventory = beat.inventory_digest()
        digests = {"inventory_digest": held_inventory, "report_digest": beat.digest()}
    answer.inventory_digest = None if answer.send_inventory else held_inventory
    info: dict[str, Any] = {
        **inst.info,
        "disk_free_bytes": beat.disk_free_bytes,
        "models": models,
        "loaded_checkpoint": beat.loaded_checkpoint,
        "comfyui_down_since": down_since,
        "cache": beat.cache,
        # a ComfyUI that is down is looked at by every heartbeat (see quick_heartbeat)
        **(digests if down_since is None else {"report_digest": None}),
    }
    inst.info = info
    if comfyui_down_too_long(down_since, now, settings.heartbeat_timeout_seconds):
        reason = f"ComfyUI has not answered for {settings.heartbeat_timeout_seconds:g}s"
        move_instance(s, inst, InstanceTrigger.COMFY_DOWN, reason, now)
        answer.changed = True
        if not is_static(inst):  # an attached machine keeps heartbeating until its ComfyUI is back
            answer.gone = reason
            return answer
    answer.changed = (
        answer.changed or inst.state != state_before or (previous_down is None) != (down_since is None)
    )
    if not beat.comfyui_ok:
        answer.requeued = _hand_back_unstarted(s, inst, {r.job_id for r in beat.running}, settings, now)
    _renew_running(s, inst.id, beat, settings, now, answer)
    answer.prefetch = _prefetch_of(inst.info.get("prefetch") or [])
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
