"""The admin API under /v1/admin: tools, users and keys, pools and instances."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from swarmstation.api.deps import DB, AdminUser, State
from swarmstation.api.schemas import (
    InstanceOut,
    KeyCreated,
    PoolOut,
    QueueOut,
    StatusOut,
    ToolDetail,
    TransitionOut,
    UserCreate,
    UserCreated,
    UserOut,
)
from swarmstation.api.views import hit_rates, tool_detail
from swarmstation.auth import display_prefix
from swarmstation.control.bootstrap import add_key, create_user_with_key, tool_row
from swarmstation.control.costs import cost_report
from swarmstation.control.instances import transitions
from swarmstation.control.jobs import active_job_count
from swarmstation.domain.errors import Conflict, InvalidInput, NotFound
from swarmstation.domain.states import InstanceState, JobState
from swarmstation.domain.tools import ToolDefinitionError, tool_from_dict, validate_tool
from swarmstation.providers.static import attach_instance, detach_instance, is_static, rotate_token
from swarmstation.store import queries
from swarmstation.store.models import Instance, Job, Pool, Tool, User

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post("/tools", response_model=ToolDetail, status_code=201)
def add_tool(
    s: DB,
    _: AdminUser,
    state: State,
    body: Annotated[dict[str, Any], Body(description="A tool: metadata, API-format workflow, inputs")],
    replace: bool = False,
) -> ToolDetail:
    spec = tool_from_dict(body)
    if spec.kind != "comfyui":
        # A local tool is code (swarmstation/localtools), seeded at start-up; a definition alone
        # would be a tool nothing can run.
        raise ToolDefinitionError("kind", f"{spec.kind} tools are built in; an admin adds ComfyUI tools only")
    validate_tool(spec)
    existing = s.get(Tool, spec.slug)
    if existing is not None and existing.spec.get("kind", "comfyui") != "comfyui":
        raise ToolDefinitionError("slug", f"'{spec.slug}' is a built-in {existing.spec['kind']} tool")
    if s.get(Pool, spec.pool) is None:
        raise ToolDefinitionError("pool", f"unknown pool '{spec.pool}'")
    now = state.clock()
    if existing is not None:
        if not replace:
            raise Conflict(f"tool '{spec.slug}' exists; pass replace=true to update it")
        row = tool_row(spec, builtin=existing.builtin, now=now)
        row.created_at = existing.created_at
        s.merge(row)
    else:
        s.add(tool_row(spec, builtin=False, now=now))
    s.flush()
    tool = s.get(Tool, spec.slug)
    assert tool is not None
    return tool_detail(tool, settings=state.settings)


@router.delete("/tools/{slug}", status_code=204)
def remove_tool(slug: str, s: DB, _: AdminUser) -> None:
    s.delete(queries.tool_by_slug(s, slug))


@router.post("/users", response_model=UserCreated, status_code=201)
def create_user(body: UserCreate, s: DB, _: AdminUser, state: State) -> UserCreated:
    if s.scalar(select(User).where(User.name == body.name)) is not None:
        raise Conflict(f"user '{body.name}' exists")
    try:
        user, key = create_user_with_key(
            s, body.name, body.role, state.clock(), welcome_credits=state.settings.welcome_credits
        )
        s.flush()
    except IntegrityError as exc:
        raise Conflict(f"user '{body.name}' exists") from exc
    return UserCreated(id=user.id, name=user.name, role=user.role, created_at=user.created_at, api_key=key)


@router.get("/users", response_model=list[UserOut])
def list_users(s: DB, _: AdminUser) -> list[UserOut]:
    return [
        UserOut(id=u.id, name=u.name, role=u.role, created_at=u.created_at)
        for u in s.scalars(select(User).order_by(User.created_at))
    ]


@router.post("/users/{user_id}/keys", response_model=KeyCreated, status_code=201)
def create_key(user_id: str, s: DB, _: AdminUser, state: State) -> KeyCreated:
    user = s.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    key = add_key(s, user, state.clock())
    return KeyCreated(user_id=user.id, api_key=key, prefix=display_prefix(key))


def instance_out(s: DB, inst: Instance, *, with_transitions: bool = False) -> InstanceOut:
    rate, byte_rate = hit_rates(inst.info)
    return InstanceOut(
        cache_hit_rate=rate,
        cache_byte_hit_rate=byte_rate,
        id=inst.id,
        pool=inst.pool,
        provider=inst.provider,
        provider_instance_id=inst.provider_instance_id,
        state=inst.state,
        state_reason=inst.state_reason,
        comfyui_url=inst.comfyui_url,
        created_at=inst.created_at,
        ready_at=inst.ready_at,
        last_heartbeat_at=inst.last_heartbeat_at,
        terminated_at=inst.terminated_at,
        parked_at=inst.parked_at,
        active_jobs=active_job_count(s, inst.id),
        info=inst.info,
        transitions=[
            TransitionOut(from_state=t.from_state, to_state=t.to_state, reason=t.reason, at=t.at)
            for t in transitions(s, inst.id)
        ]
        if with_transitions
        else None,
    )


@router.get("/instances", response_model=list[InstanceOut])
def list_instances(s: DB, _: AdminUser, include_terminated: bool = False) -> list[InstanceOut]:
    q = select(Instance).order_by(Instance.created_at)
    if not include_terminated:
        q = q.where(Instance.state != InstanceState.TERMINATED)
    return [instance_out(s, i) for i in s.scalars(q)]


@router.get("/instances/{instance_id}", response_model=InstanceOut)
def get_instance(instance_id: str, s: DB, _: AdminUser) -> InstanceOut:
    inst = queries.instance_by_id(s, instance_id)
    return instance_out(s, inst, with_transitions=True)


class InstanceAttach(BaseModel):
    """Attach a machine that swarmstation did not rent (provider `static`)."""

    pool: str = Field(min_length=1, max_length=63)
    name: str | None = Field(None, min_length=1, max_length=100, description="A label for the machine")
    slots: int | None = Field(None, ge=1, le=64, description="Jobs at once; default the pool's slots")
    price_per_hour: float = Field(0.0, ge=0, le=10_000, description="What it costs per hour, for billing")
    server_url: str | None = Field(
        None,
        max_length=300,
        pattern=r"^https?://\S+$",
        description="The control plane's URL as that machine reaches it; default the public URL",
    )
    comfyui_url: str = Field("http://127.0.0.1:8188", max_length=300, pattern=r"^https?://\S+$")
    comfy_dir: str = Field("/path/to/ComfyUI", min_length=1, max_length=500, pattern=r"^[^\n\r]+$")


class InstanceAttached(BaseModel):
    """Shown once: the token is never shown again (rotate it if it is lost)."""

    instance_id: str
    token: str
    command: str = Field(description="What to run on the attached machine")


def _server_url(request: Request, state: State, given: str | None) -> str:
    return (given or state.settings.public_url or str(request.base_url)).rstrip("/")


@router.post("/instances", response_model=InstanceAttached, status_code=201)
def attach(body: InstanceAttach, request: Request, s: DB, _: AdminUser, state: State) -> InstanceAttached:
    """Register an attached (static) instance and its worker token; prints the worker command."""
    pool = queries.pool_by_name(s, body.pool)
    attached = attach_instance(
        s,
        pool=pool,
        server_url=_server_url(request, state, body.server_url),
        now=state.clock(),
        name=body.name,
        slots=body.slots,
        price_per_hour=body.price_per_hour,
        comfyui_url=body.comfyui_url,
        comfy_dir=body.comfy_dir,
    )
    s.commit()
    return InstanceAttached(instance_id=attached.instance.id, token=attached.token, command=attached.command)


def _static_instance(s: DB, instance_id: str) -> Instance:
    inst = queries.instance_by_id(s, instance_id)
    if not is_static(inst):
        raise Conflict(f"instance {instance_id} was launched by {inst.provider}, not attached")
    return inst


@router.post("/instances/{instance_id}/detach", response_model=InstanceOut)
def detach(instance_id: str, s: DB, _: AdminUser, state: State) -> InstanceOut:
    """Detach an attached instance: drained first when it runs a job, then TERMINATED (its token
    then gets 410)."""
    inst = _static_instance(s, instance_id)
    old_hash = inst.token_hash
    detach_instance(s, inst, state.clock())
    out = instance_out(s, inst)
    s.commit()
    state.instance_cache.discard(old_hash)
    return out


@router.post("/instances/{instance_id}/rotate-token", response_model=InstanceAttached)
def rotate(instance_id: str, request: Request, s: DB, _: AdminUser, state: State) -> InstanceAttached:
    """A new token for an attached instance; the old one gets 401 at once. Restart its worker
    with the printed command."""
    inst = _static_instance(s, instance_id)
    if inst.state == InstanceState.TERMINATED:
        raise Conflict(f"instance {instance_id} is detached")
    old_hash = inst.token_hash
    attached = rotate_token(s, inst, server_url=_server_url(request, state, None))
    s.commit()
    state.instance_cache.discard(old_hash)
    return InstanceAttached(instance_id=inst.id, token=attached.token, command=attached.command)


def _pools(s: DB) -> list[PoolOut]:
    counts: dict[str, dict[str, int]] = {}
    for pool, state, n in s.execute(
        select(Instance.pool, Instance.state, func.count()).group_by(Instance.pool, Instance.state)
    ):
        counts.setdefault(pool, {})[state] = n
    return [
        PoolOut(
            name=p.name,
            provider=p.provider,
            min_instances=p.min_instances,
            max_instances=p.max_instances,
            scale_up_queue_threshold=p.scale_up_queue_threshold,
            idle_minutes=p.idle_minutes,
            slots_per_instance=p.slots_per_instance,
            instances=counts.get(p.name, {}),
        )
        for p in s.scalars(select(Pool).order_by(Pool.name))
    ]


def queue_counts(s: DB) -> QueueOut:
    by_state = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
    return QueueOut(**{st.value.lower(): by_state.get(st, 0) for st in JobState})


@router.get("/status", response_model=StatusOut)
def status(s: DB, _: AdminUser, include_terminated: Annotated[bool, Query()] = False) -> StatusOut:
    return StatusOut(
        pools=_pools(s),
        instances=list_instances(s, _, include_terminated),
        queue=queue_counts(s),
    )


class CostRowOut(BaseModel):
    key: str
    cost: float
    gpu_seconds: float
    jobs: int


class CostsOut(BaseModel):
    group_by: str
    currency: str = "USD"
    billed: float = Field(description="What the providers charge for these instances")
    attributed: float = Field(description="The part carried by jobs (GPU time plus their share of idle time)")
    unattributed: float = Field(description="Instances that ran no job")
    instances: int
    jobs: int
    rows: list[CostRowOut]
    notes: list[str]


@router.get("/costs", response_model=CostsOut)
def costs(
    s: DB,
    _: AdminUser,
    state: State,
    group_by: Annotated[Literal["pool", "instance", "user", "day", "tool", "backend"], Query()] = "pool",
    since: datetime | None = None,
) -> CostsOut:
    """Costs by pool, instance, user, day or tool. Job costs add up to the instance bills."""
    if since is not None and since.tzinfo is None:
        raise InvalidInput("since: give a time zone, e.g. 2026-11-01T00:00:00Z")
    report = cost_report(s, group_by=group_by, now=state.clock(), since=since)
    return CostsOut(
        group_by=report.group_by,
        billed=round(report.billed, 6),
        attributed=round(report.attributed, 6),
        unattributed=round(report.unattributed, 6),
        instances=report.instances,
        jobs=report.jobs,
        rows=[
            CostRowOut(key=r.key, cost=round(r.cost, 6), gpu_seconds=round(r.gpu_seconds, 3), jobs=r.jobs)
            for r in report.rows
        ],
        notes=report.notes,
    )
