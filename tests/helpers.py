"""Small helpers shared by tests."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from swarmstation.api.app import ControlPlane, build
from swarmstation.auth import WORKER_TOKEN_PREFIX, hash_secret, new_secret
from swarmstation.catalog import bundled_tools
from swarmstation.config import Settings
from swarmstation.control import jobs as jobs_ops
from swarmstation.control.bootstrap import create_user_with_key
from swarmstation.domain.states import InstanceState
from swarmstation.domain.tools import bind_inputs
from swarmstation.providers.base import ComputeProvider
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, Job, Pool, User


def async_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test function in its own event loop (the suite has no asyncio plugin)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


def txt2img(
    ckpt: str = "sd15.safetensors",
    *,
    seed: int = 42,
    steps: int = 3,
    width: int = 64,
    height: int = 48,
    batch: int = 1,
    prefix: str = "swarmstation",
    text: str = "a lighthouse at dusk",
    negative: str = "blurry, watermark",
    latent: list[Any] | None = None,
    denoise: float = 1.0,
) -> dict[str, Any]:
    """The stock SD1.5 API-format graph, as the ComfyUI frontend exports it (a fresh copy each
    call): checkpoint 4, prompts 6 and 7, latent 5, sampler 3, decode 8, save 9."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["4", 1]}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": width, "height": height, "batch_size": batch},
        },
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": denoise,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": latent or ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {
            "class_type": "SaveImage",
            "inputs": {"filename_prefix": prefix, "images": ["8", 0]},
            "_meta": {"title": "Save Image"},
        },
    }


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


def heartbeat_at(cp: ControlPlane, instance_id: str, at: datetime) -> None:
    """Record an instance's last heartbeat as `at`. Tests that jump the fake clock past the
    heartbeat timeout while the control plane's loops run write it for the time they jump to
    before the jump: a sweep between the jump and a heartbeat sent after it would (rightly)
    declare the instance unhealthy."""
    with transaction(cp.state.sessions) as s:
        inst = s.get(Instance, instance_id)
        assert inst is not None
        inst.last_heartbeat_at = at


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


def plane_with_pool(
    settings: Settings, providers: Mapping[str, ComputeProvider], clock: Callable[[], datetime], **pool: Any
) -> ControlPlane:
    """A control plane with one pool `gpu` on the first provider: small, quick to scale (no
    cooldown, 1 minute idle timeout); `pool` overrides any Pool column."""
    cp = build(settings, providers=dict(providers), clock=clock)
    fields: dict[str, Any] = {
        "name": "gpu",
        "provider": next(iter(providers)),
        "min_instances": 0,
        "max_instances": 1,
        "scale_up_queue_threshold": 1,
        "idle_minutes": 1,
        "slots_per_instance": 1,
        "created_at": clock(),
        "target_wait_seconds": 10,
        "scale_cooldown_seconds": 0,
    }
    with transaction(cp.state.sessions) as s:
        s.add(Pool(**{**fields, **pool}))
    return cp


def instance_by_provider_id(cp: ControlPlane, provider_id: str) -> Instance:
    with transaction(cp.state.sessions) as s:
        inst = s.scalar(select(Instance).where(Instance.provider_instance_id == provider_id))
        assert inst is not None
        return inst
