"""Small helpers shared by tests."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from swarmstation.auth import WORKER_TOKEN_PREFIX, hash_secret, new_secret
from swarmstation.catalog import bundled_tools
from swarmstation.control import jobs as jobs_ops
from swarmstation.control.bootstrap import create_user_with_key
from swarmstation.domain.states import InstanceState
from swarmstation.domain.tools import bind_inputs
from swarmstation.store.models import Instance, Job, User


def add_instance(
    s: Session, now: datetime, *, state: InstanceState = InstanceState.IDLE, pool: str = "default"
) -> tuple[Instance, str]:
    token = new_secret(WORKER_TOKEN_PREFIX)
    inst = Instance(
        id=str(uuid.uuid4()),
        pool=pool,
        provider="test",
        provider_instance_id=None,
        state=state,
        state_reason="test",
        token_hash=hash_secret(token),
        created_at=now,
        state_changed_at=now,
        last_heartbeat_at=now,
        idle_since=now if state == InstanceState.IDLE else None,
        info={},
    )
    s.add(inst)
    s.flush()
    return inst, token


def add_user(s: Session, now: datetime, name: str | None = None, role: str = "user") -> tuple[User, str]:
    return create_user_with_key(s, name or f"u{uuid.uuid4().hex[:8]}", role, now)


def submit(s: Session, user: User, now: datetime, *, prompt: str = "a fox", max_attempts: int = 2) -> Job:
    spec = next(t for t in bundled_tools() if t.slug == "sd15-txt2img")
    bound = bind_inputs(spec, {"prompt": prompt}, random_seed=7)
    return jobs_ops.submit_job(
        s,
        user_id=user.id,
        tool_slug=spec.slug,
        pool="default",
        bound=bound,
        input_images={},
        max_attempts=max_attempts,
        now=now,
    )
