"""First start of a database: the default pool, the bundled tools, the local tools (and their
default prices) and a first admin key."""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from swarmstation.auth import API_KEY_PREFIX, display_prefix, hash_secret, new_secret
from swarmstation.catalog import bundled_tools
from swarmstation.config import Settings
from swarmstation.control import ledger
from swarmstation.domain.prices import PriceKind
from swarmstation.domain.tools import ToolSpec, tool_to_dict
from swarmstation.localtools.base import LocalTool
from swarmstation.localtools.registry import local_tools
from swarmstation.store.models import ApiKey, Meta, Pool, Tool, ToolPrice, User

DEFAULT_POOL = "default"


def tool_row(spec: ToolSpec, *, builtin: bool, now: datetime) -> Tool:
    return Tool(
        slug=spec.slug,
        name=spec.name,
        category=spec.category,
        base_model=spec.base_model,
        pool=spec.pool,
        spec=tool_to_dict(spec),
        builtin=builtin,
        created_at=now,
        updated_at=now,
    )


def ensure_default_pool(s: Session, settings: Settings, now: datetime) -> None:
    pool = s.get(Pool, DEFAULT_POOL)
    if pool is None:
        s.add(
            Pool(
                name=DEFAULT_POOL,
                provider=settings.provider,
                min_instances=settings.pool_min_instances,
                max_instances=settings.pool_max_instances,
                scale_up_queue_threshold=settings.pool_scale_up_queue_threshold,
                idle_minutes=settings.pool_idle_minutes,
                slots_per_instance=1,
                created_at=now,
            )
        )
    else:
        # The settings describe the default pool; a restart with other settings applies them.
        pool.provider = settings.provider
        pool.min_instances = settings.pool_min_instances
        pool.max_instances = settings.pool_max_instances
        pool.scale_up_queue_threshold = settings.pool_scale_up_queue_threshold
        pool.idle_minutes = settings.pool_idle_minutes


def seed_tools(s: Session, now: datetime, settings: Settings | None = None) -> None:
    """The bundled catalog goes in once; tools an admin removed later stay removed. The local
    tools (localtools/registry.py) are seeded the same way, each once, and after that kept as
    their code says (they are code, not data). With `settings`, each local tool without a price
    gets its default one (`default_local_price`)."""
    if s.get(Meta, "bundled_tools_seeded") is None:
        for spec in bundled_tools():
            if s.get(Tool, spec.slug) is None:
                s.add(tool_row(spec, builtin=True, now=now))
        s.add(Meta(key="bundled_tools_seeded", value=now.isoformat()))
    for tool in local_tools().values():
        seed_local_tool(s, tool, now)
    if settings is not None:
        s.flush()
        for tool in local_tools().values():
            seed_local_price(s, tool, settings, now)


def seed_local_tool(s: Session, tool: LocalTool, now: datetime) -> None:
    """A local tool's row: added the first time this database sees the tool (a per-slug marker,
    so a tool added in a later release is seeded too, and one an admin removed is not brought
    back); refreshed from the code when the code changed it."""
    spec = tool.spec
    marker = f"local_tool_seeded:{spec.slug}"
    row = s.get(Tool, spec.slug)
    if s.get(Meta, marker) is None:
        if row is None:
            s.add(tool_row(spec, builtin=True, now=now))
        s.add(Meta(key=marker, value=now.isoformat()))
        return
    if row is None:
        return
    fresh = tool_to_dict(spec)
    if (row.spec, row.name, row.category, row.base_model, row.pool) != (
        fresh,
        spec.name,
        spec.category,
        spec.base_model,
        spec.pool,
    ):
        row.spec, row.name, row.category = fresh, spec.name, spec.category
        row.base_model, row.pool, row.builtin = spec.base_model, spec.pool, True
        row.updated_at = now


def default_local_price(tool: LocalTool, settings: Settings) -> tuple[PriceKind, int]:
    """An LLM tool (it has a token bound) costs `llm_credits_per_1k_tokens` per 1000 tokens; an
    image utility `image_tool_credits` per run. A local tool has no GPU time to derive a price
    from, so it always has a price row."""
    if tool.max_tokens(settings) > 0:
        return PriceKind.PER_1K_TOKENS, settings.llm_credits_per_1k_tokens
    return PriceKind.PER_RUN, settings.image_tool_credits


def seed_local_price(s: Session, tool: LocalTool, settings: Settings, now: datetime) -> None:
    """The default price of a local tool that has no price; a default seeded earlier (no
    `updated_by`) follows the settings, as the default pool does; a price an admin set stays."""
    slug = tool.spec.slug
    if s.get(Tool, slug) is None:
        return
    kind, credits = default_local_price(tool, settings)
    row = s.get(ToolPrice, slug)
    if row is None:
        s.add(ToolPrice(tool_slug=slug, model=kind.value, credits=credits, cap=None, updated_at=now))
    elif row.updated_by is None and (row.model, row.credits, row.cap) != (kind.value, credits, None):
        row.model, row.credits, row.cap, row.updated_at = kind.value, credits, None, now


def create_user_with_key(
    s: Session, name: str, role: str, now: datetime, *, welcome_credits: int = 0
) -> tuple[User, str]:
    """A new user and its first API key; `welcome_credits` (SWARMSTATION_WELCOME_CREDITS) are
    granted as a ledger entry."""
    user = User(id=str(uuid.uuid4()), name=name, role=role, created_at=now)
    s.add(user)
    s.flush()
    ledger.welcome(s, user_id=user.id, amount=welcome_credits, now=now)
    return user, add_key(s, user, now)


def add_key(s: Session, user: User, now: datetime) -> str:
    key = new_secret(API_KEY_PREFIX)
    s.add(
        ApiKey(
            id=str(uuid.uuid4()),
            user_id=user.id,
            prefix=display_prefix(key),
            key_hash=hash_secret(key),
            created_at=now,
        )
    )
    return key


def write_secret_file(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    os.chmod(path, 0o600)


def ensure_admin(s: Session, settings: Settings, now: datetime) -> str | None:
    """Create the first admin and write its key to <data_dir>/admin.key. Returns the new key,
    or None when an admin already exists."""
    if s.scalar(select(User).where(User.role == "admin").limit(1)) is not None:
        return None
    _, key = create_user_with_key(s, "admin", "admin", now)
    write_secret_file(settings.data_dir / "admin.key", key)
    return key
