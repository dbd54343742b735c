"""Pools over HTTP (admin): create, change, list, remove."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import func, inspect, select

from swarmstation.api.deps import DB, AdminUser, State
from swarmstation.api.schemas import Strict
from swarmstation.domain.errors import Conflict, InvalidInput
from swarmstation.domain.scaling import POOL_DEFAULTS
from swarmstation.domain.states import LIVE_INSTANCE_STATES, InstanceState, JobState
from swarmstation.domain.workflow import MODEL_FOLDERS, WorkflowError, normalise_model_name
from swarmstation.providers.bootstrap import compact_onstart, render_onstart
from swarmstation.store import queries
from swarmstation.store.models import Instance, Job, Pool, Tool

router = APIRouter(prefix="/v1/admin/pools", tags=["admin"])

PoolName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


class GpuFilters(Strict):
    gpu_names: list[Annotated[str, Field(min_length=1, max_length=60)]] = Field(
        default_factory=list, max_length=30
    )
    min_vram_gb: float = Field(0.0, ge=0, le=2000)
    max_price_per_hour: float | None = Field(None, gt=0, le=1000)
    min_reliability: float = Field(0.0, ge=0, le=1)
    verified_only: bool = True
    min_cuda: float | None = Field(None, ge=0, le=99)
    excluded_regions: list[Annotated[str, Field(min_length=1, max_length=60)]] = Field(default_factory=list)
    num_gpus: int = Field(1, ge=1, le=16)
    disk_gb: float = Field(40.0, ge=5, le=10_000)


class ModelRefIn(Strict):
    folder: str = Field(min_length=1, max_length=50)
    name: str = Field(min_length=1, max_length=255)


class PoolSettings(Strict):
    provider: Literal["local", "vastai", "none"] | None = None
    min_instances: int | None = Field(None, ge=0, le=1000)
    max_instances: int | None = Field(None, ge=0, le=1000)
    scale_up_queue_threshold: int | None = Field(None, ge=1, le=100_000)
    idle_minutes: float | None = Field(None, ge=0, le=10_000)
    slots_per_instance: int | None = Field(None, ge=1, le=64)
    gpu_filters: GpuFilters | None = None
    image: str | None = Field(None, max_length=300)
    startup_script: str | None = Field(None, max_length=20_000)
    preload_models: list[ModelRefIn] | None = Field(None, max_length=500)
    max_spend_per_hour: float | None = Field(None, gt=0, le=100_000)
    provisioning_timeout_seconds: float | None = Field(None, ge=30, le=86_400)
    max_lifetime_hours: float | None = Field(None, gt=0, le=10_000)
    target_wait_seconds: float | None = Field(None, ge=1, le=86_400)
    scale_cooldown_seconds: float | None = Field(None, ge=0, le=86_400)
    # null turns it off (idle instances are drained after idle_minutes only)
    target_utilisation: float | None = Field(None, gt=0, le=1)
    utilisation_grace_seconds: float | None = Field(None, ge=0, le=86_400)
    # idle instances leaving the pool are stopped with their disk, up to this many (0: destroyed)
    max_parked: int | None = Field(None, ge=0, le=100)
    park_max_hours: float | None = Field(None, gt=0, le=720)  # then a parked instance is destroyed
    # interruptible: bid rentals (about half the price), stopped when outbid; their jobs are requeued
    rental: Literal["on-demand", "interruptible"] | None = None
    bid_margin: float | None = Field(None, ge=1.0, le=3.0)  # the bid is the offer's min_bid times this

    @model_validator(mode="after")
    def _check(self) -> PoolSettings:
        if (
            self.min_instances is not None
            and self.max_instances is not None
            and self.min_instances > self.max_instances
        ):
            raise ValueError("min_instances must not exceed max_instances")
        for m in self.preload_models or []:
            if m.folder not in MODEL_FOLDERS:
                raise ValueError(f"preload_models: unknown folder {m.folder!r}")
            try:
                normalise_model_name(m.name)
            except WorkflowError as exc:
                raise ValueError(f"preload_models: {exc}") from exc
        return self


class PoolCreate(PoolSettings):
    name: PoolName


class PoolDetail(BaseModel):
    name: str
    provider: str
    min_instances: int
    max_instances: int
    scale_up_queue_threshold: int
    idle_minutes: float
    slots_per_instance: int
    gpu_filters: dict[str, Any]
    image: str
    startup_script: str
    preload_models: list[dict[str, Any]]
    max_spend_per_hour: float | None
    provisioning_timeout_seconds: float | None
    max_lifetime_hours: float | None
    target_wait_seconds: float
    scale_cooldown_seconds: float
    target_utilisation: float | None
    utilisation_grace_seconds: float
    max_parked: int
    park_max_hours: float
    rental: str
    bid_margin: float
    last_scale_up_at: datetime | None
    created_at: datetime
    instances: dict[str, int]
    parked: int  # instances stopped with their disk, ready to be resumed
    queued: int


def pool_detail(s: DB, pool: Pool) -> PoolDetail:
    counts = dict(
        s.execute(
            select(Instance.state, func.count()).where(Instance.pool == pool.name).group_by(Instance.state)
        ).all()
    )
    queued = s.scalar(
        select(func.count()).select_from(Job).where(Job.pool == pool.name, Job.state == JobState.QUEUED)
    )
    return PoolDetail(
        **{
            k: getattr(pool, k) for k in PoolDetail.model_fields if k not in ("instances", "parked", "queued")
        },
        instances=counts,
        parked=counts.get(InstanceState.STOPPED, 0),
        queued=queued or 0,
    )


def _apply(pool: Pool, body: PoolSettings) -> None:
    for key, value in body.model_dump(exclude_unset=True, exclude={"name"}).items():
        if key == "gpu_filters":
            value = GpuFilters.model_validate(value).model_dump() if value is not None else {}
        if key == "preload_models" and value is None:
            value = []
        # null means "off" only where the column allows it (e.g. target_utilisation); elsewhere it
        # would fail at the database as a 500
        if value is None and not inspect(Pool).columns[key].nullable:
            raise InvalidInput(f"{key}: must not be null")
        setattr(pool, key, value)
    if pool.min_instances > pool.max_instances:
        raise InvalidInput("min_instances must not exceed max_instances")
    if pool.provider == "vastai" and not pool.image:
        raise InvalidInput("image: a vastai pool needs the image its instances run")
    try:
        compact_onstart(render_onstart(startup_script=pool.startup_script))
    except ValueError as exc:
        raise InvalidInput(f"startup_script: {exc}") from exc


@router.get("", response_model=list[PoolDetail])
def list_pools(s: DB, _: AdminUser) -> list[PoolDetail]:
    return [pool_detail(s, p) for p in s.scalars(select(Pool).order_by(Pool.name))]


@router.get("/{name}", response_model=PoolDetail)
def get_pool(name: str, s: DB, _: AdminUser) -> PoolDetail:
    pool = queries.pool_by_name(s, name)
    return pool_detail(s, pool)


@router.post("", response_model=PoolDetail, status_code=201)
def create_pool(body: PoolCreate, s: DB, _: AdminUser, state: State) -> PoolDetail:
    if s.get(Pool, body.name) is not None:
        raise Conflict(f"pool '{body.name}' exists")
    pool = Pool(
        name=body.name,
        provider=body.provider or "none",
        created_at=state.clock(),
        gpu_filters={},
        image="",
        startup_script="",
        preload_models=[],
        **asdict(POOL_DEFAULTS),
    )
    _apply(pool, body)
    s.add(pool)
    s.flush()
    return pool_detail(s, pool)


@router.patch("/{name}", response_model=PoolDetail)
def update_pool(name: str, body: PoolSettings, s: DB, _: AdminUser) -> PoolDetail:
    pool = queries.pool_by_name(s, name)
    _apply(pool, body)
    return pool_detail(s, pool)


@router.delete("/{name}", status_code=204)
def delete_pool(name: str, s: DB, _: AdminUser) -> None:
    pool = queries.pool_by_name(s, name)
    if name == "default":
        raise Conflict("the default pool cannot be removed")
    # parked instances still exist at the provider (and cost storage): they count too
    remaining = LIVE_INSTANCE_STATES | {InstanceState.DRAINING, InstanceState.STOPPED}
    live = s.scalar(
        select(func.count())
        .select_from(Instance)
        .where(Instance.pool == name, Instance.state.in_([st.value for st in remaining]))
    )
    if live:
        raise Conflict(
            f"pool '{name}' still has {live} instances; set max_instances and max_parked to 0 and wait"
        )
    tools = list(s.scalars(select(Tool.slug).where(Tool.pool == name)))
    if tools:
        raise Conflict(f"tools still use pool '{name}': {', '.join(tools)}")
    s.delete(pool)
