"""Static instances: machines that swarmstation did not rent (a GPU under a desk, a long-term rented
server), attached by an operator and run by their own `swarmstation worker`.

Theory of operation. `attach_instance` writes an instance row of provider `static` with a fresh
worker token (only its hash is stored; the token is shown once) and the exact worker command to run
on that machine. From then on it is an instance like any other: the worker registers and
heartbeats, the scheduler routes jobs to it, the health checks apply, and it is billed at the
operator's `price_per_hour` (default 0). What differs:

- no provider acts on it: the pool loop never launches, destroys, parks or replaces it (it counts
  toward the pool's size, so a pool of min 1 static machine plus rented burst rents nothing while
  the machine is up);
- UNHEALTHY is not the end: it stays registered, out of routing, and returns to IDLE when its
  worker heartbeats healthy again (`recover_if_static`), or until it is detached;
- `detach_instance` drains it (a running job finishes) and then it is TERMINATED, after which its
  token gets 410; `rotate_token` replaces a leaked token, and the old one gets 401 at once.
"""

from __future__ import annotations

import shlex
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from swarmstation.auth import WORKER_TOKEN_PREFIX, hash_secret, new_secret
from swarmstation.control.instances import move_instance
from swarmstation.control.jobs import active_job_count
from swarmstation.domain.errors import Conflict
from swarmstation.domain.states import InstanceState, InstanceTrigger
from swarmstation.store.models import Instance, Pool

__all__ = [
    "STATIC_PROVIDER",
    "Attached",
    "NotStatic",
    "attach_instance",
    "detach_instance",
    "finish_detached",
    "is_static",
    "recover_if_static",
    "rotate_token",
    "worker_command",
]

STATIC_PROVIDER = "static"
DEFAULT_COMFYUI_URL = "http://127.0.0.1:8188"  # ComfyUI's default bind (`main.py --listen 127.0.0.1`)
DEFAULT_COMFY_DIR = "/path/to/ComfyUI"  # a placeholder the operator replaces: we cannot know it


class NotStatic(Conflict):
    """The instance was launched by a provider; only attached (static) instances can be detached
    or have their token rotated here."""

    code = "not_static"


@dataclass(frozen=True)
class Attached:
    """What `attach_instance` and `rotate_token` hand back once: the token is never stored."""

    instance: Instance
    token: str
    command: str


def is_static(inst: Instance) -> bool:
    return inst.provider == STATIC_PROVIDER


def worker_command(
    server_url: str, token: str, *, comfyui_url: str = DEFAULT_COMFYUI_URL, comfy_dir: str = DEFAULT_COMFY_DIR
) -> str:
    """The shell command that makes the attached machine a worker (every value shell-quoted)."""
    q = shlex.quote
    return (
        f"swarmstation worker --server {q(server_url)} --token {q(token)} "
        f"--comfyui {q(comfyui_url)} --comfy-dir {q(comfy_dir)}"
    )


def attach_instance(
    s: Session,
    *,
    pool: Pool,
    server_url: str,
    now: datetime,
    name: str | None = None,
    slots: int | None = None,
    price_per_hour: float = 0.0,
    comfyui_url: str = DEFAULT_COMFYUI_URL,
    comfy_dir: str = DEFAULT_COMFY_DIR,
) -> Attached:
    """Register a static instance in `pool`. It is PROVISIONING until its worker registers."""
    token = new_secret(WORKER_TOKEN_PREFIX)
    info: dict[str, object] = {"comfy_dir": comfy_dir, "attached_comfyui_url": comfyui_url}
    if name:
        info["name"] = name
    if slots is not None:
        info["slots"] = slots
    inst = Instance(
        id=str(uuid.uuid4()),
        pool=pool.name,
        provider=STATIC_PROVIDER,
        provider_instance_id=None,
        state=InstanceState.PROVISIONING,
        state_reason="attached; waiting for its worker",
        token_hash=hash_secret(token),
        created_at=now,
        state_changed_at=now,
        info=info,
        price_per_hour=price_per_hour,
    )
    s.add(inst)
    s.flush()
    command = worker_command(server_url, token, comfyui_url=comfyui_url, comfy_dir=comfy_dir)
    return Attached(inst, token, command)


def rotate_token(s: Session, inst: Instance, *, server_url: str) -> Attached:
    """A new token for a static instance; the old one stops working (the caller must also drop it
    from any identity cache). The worker must be restarted with the printed command."""
    if not is_static(inst):
        raise NotStatic(f"instance {inst.id} is not an attached (static) instance")
    if inst.state == InstanceState.TERMINATED:
        raise NotStatic(f"instance {inst.id} is detached")
    token = new_secret(WORKER_TOKEN_PREFIX)
    inst.token_hash = hash_secret(token)
    s.flush()
    command = worker_command(
        server_url,
        token,
        comfyui_url=str(inst.info.get("attached_comfyui_url") or DEFAULT_COMFYUI_URL),
        comfy_dir=str(inst.info.get("comfy_dir") or DEFAULT_COMFY_DIR),
    )
    return Attached(inst, token, command)


def detach_instance(s: Session, inst: Instance, now: datetime) -> InstanceState:
    """Take a static instance out of the pool: TERMINATED at once when it runs nothing, else
    DRAINING (its jobs finish; `finish_detached` then terminates it). Returns the new state."""
    if not is_static(inst):
        raise NotStatic(f"instance {inst.id} is not an attached (static) instance; drain it instead")
    state = inst.state
    if state == InstanceState.TERMINATED:
        return state
    if active_job_count(s, inst.id) == 0 or state in (InstanceState.UNHEALTHY, InstanceState.STOPPED):
        move_instance(s, inst, InstanceTrigger.DETACH, "detached", now)
    elif state != InstanceState.DRAINING:
        move_instance(s, inst, InstanceTrigger.DRAIN, "detaching: finishing its jobs", now)
    return inst.state


def finish_detached(s: Session, instances: list[Instance], now: datetime) -> None:
    """Static instances that were draining and have finished their jobs are detached (no provider
    destroys them, as the pool loop does for rented ones)."""
    for inst in instances:
        if is_static(inst) and inst.state == InstanceState.DRAINING and active_job_count(s, inst.id) == 0:
            move_instance(s, inst, InstanceTrigger.DETACH, "drained, detached", now)


def recover_if_static(s: Session, inst: Instance, now: datetime, reason: str) -> bool:
    """An UNHEALTHY static instance whose worker reports a healthy ComfyUI is back in routing
    (IDLE). Rented instances are replaced instead, so they never come back. True when it recovered."""
    if not is_static(inst) or inst.state != InstanceState.UNHEALTHY:
        return False
    return move_instance(s, inst, InstanceTrigger.RECOVER, reason, now)
