"""Saved pipelines: save, version, list, search and share them (control/saved_pipelines.py).

Running one is `POST /v1/runs` with `pipeline_id` (api/runs.py); here it is saved, described and
shared. A private pipeline of someone else answers 404, as a missing one does."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from swarmstation.api.deps import DB, CurrentUser, State
from swarmstation.api.schemas import INT64_MAX, Strict
from swarmstation.control import saved_pipelines as saved
from swarmstation.store.models import PipelineVersion, SavedPipeline, User

router = APIRouter(prefix="/v1", tags=["pipelines"])

Visibility = Literal["private", "unlisted", "public"]


# -- what the API receives -----------------------------------------------------------------------
class ExposedIn(Strict):
    name: str = Field(min_length=1, max_length=64, description="A pipeline input others may give")
    label: str | None = Field(
        default=None, max_length=saved.MAX_LABEL_CHARS, description="Its label in a form"
    )
    default: Any = Field(default=None, description="The value used when the runner gives none")
    description: str = Field(default="", max_length=saved.MAX_DESCRIPTION_CHARS)


class PipelineCreate(Strict):
    name: str = Field(min_length=1, max_length=saved.MAX_NAME_CHARS)
    description: str = Field(default="", max_length=saved.MAX_DESCRIPTION_CHARS)
    pipeline: dict[str, Any] = Field(description="The graph, in the wire form POST /v1/runs takes")
    exposed: list[ExposedIn] = Field(
        default_factory=list,
        max_length=saved.MAX_EXPOSED,
        description="The only inputs another user may give when running it",
    )
    visibility: Visibility = Field(
        default="private", description="private: yours only; unlisted: anyone with the id; public: listed"
    )


class VersionCreate(Strict):
    pipeline: dict[str, Any]
    exposed: list[ExposedIn] | None = Field(
        default=None, max_length=saved.MAX_EXPOSED, description="Absent: the latest version's"
    )


class PipelineUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=saved.MAX_NAME_CHARS)
    description: str | None = Field(default=None, max_length=saved.MAX_DESCRIPTION_CHARS)
    visibility: Visibility | None = None


# -- what it returns -----------------------------------------------------------------------------
class OwnerOut(BaseModel):
    id: str
    name: str


class ExposedInputOut(BaseModel):
    name: str
    type: str
    required: bool = Field(description="Whether a run must give it (no default anywhere)")
    label: str
    default: Any
    description: str


class SavedPipelineOut(BaseModel):
    id: str
    name: str
    description: str
    visibility: str
    owner: OwnerOut
    version: int = Field(description="The version shown")
    versions: list[int] = Field(description="Every version, oldest first (each is immutable)")
    latest_version: int
    pipeline: dict[str, Any] = Field(description="The version's graph")
    exposed: list[dict[str, Any]] = Field(description="The version's exposed inputs as saved")
    inputs: list[ExposedInputOut] = Field(description="The exposed inputs' schema, for a form")
    run_count: int
    created_at: datetime
    updated_at: datetime


class SavedPipelineList(BaseModel):
    pipelines: list[SavedPipelineOut]
    total: int


def _out(
    s: Session, row: SavedPipeline, version: PipelineVersion, owner: User | None = None
) -> SavedPipelineOut:
    owner = owner or s.get(User, row.owner_id)
    return SavedPipelineOut(
        id=row.id,
        name=row.name,
        description=row.description,
        visibility=row.visibility,
        owner=OwnerOut(id=row.owner_id, name=owner.name if owner is not None else ""),
        version=version.version,
        versions=saved.versions_of(s, row.id),
        latest_version=row.latest_version,
        pipeline=version.definition,
        exposed=list(version.exposed),
        inputs=[ExposedInputOut(**i) for i in saved.exposed_inputs(version.definition, version.exposed)],
        run_count=row.run_count,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _exposed(items: list[ExposedIn]) -> list[dict[str, Any]]:
    return [i.model_dump() for i in items]


# -- the routes ----------------------------------------------------------------------------------
@router.post("/pipelines", response_model=SavedPipelineOut, status_code=201)
def save_pipeline(body: PipelineCreate, s: DB, user: CurrentUser, state: State) -> SavedPipelineOut:
    """Save a pipeline as version 1. The graph is checked as a run would check it (a 422 names the
    step and the port); each exposed input must be a pipeline input, its default a valid value."""
    row, version = saved.save(
        s,
        owner=user,
        name=body.name,
        description=body.description,
        definition=body.pipeline,
        exposed=_exposed(body.exposed),
        visibility=body.visibility,
        settings=state.settings,
        now=state.clock(),
    )
    return _out(s, row, version, user)


@router.get("/pipelines", response_model=SavedPipelineList)
def list_pipelines(
    s: DB,
    user: CurrentUser,
    q: Annotated[str | None, Query(max_length=200, description="Text in the name or description")] = None,
    mine: Annotated[bool, Query(description="Only your own")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> SavedPipelineList:
    """Your own pipelines and everyone's public ones, most recently changed first (unlisted ones of
    others only by id), each at its latest version."""
    rows, total = saved.search(s, user=user, q=q, mine=mine, limit=limit, offset=offset)
    owners = {u.id: u for u in s.scalars(select(User).where(User.id.in_({r.owner_id for r in rows})))}
    return SavedPipelineList(
        pipelines=[_out(s, r, saved.version_of(s, r, None), owners.get(r.owner_id)) for r in rows],
        total=total,
    )


@router.get("/pipelines/{pipeline_id}", response_model=SavedPipelineOut)
def get_pipeline(
    pipeline_id: str,
    s: DB,
    user: CurrentUser,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="Absent: the latest")] = None,
) -> SavedPipelineOut:
    row = saved.visible_to(s, user, pipeline_id)
    return _out(s, row, saved.version_of(s, row, version))


@router.post("/pipelines/{pipeline_id}/versions", response_model=SavedPipelineOut, status_code=201)
def add_version(
    pipeline_id: str, body: VersionCreate, s: DB, user: CurrentUser, state: State
) -> SavedPipelineOut:
    """The owner's new immutable version, which becomes the latest; runs of earlier versions (and
    runs that name one) keep their graph."""
    row, version = saved.new_version(
        s,
        user=user,
        pipeline_id=pipeline_id,
        definition=body.pipeline,
        exposed=None if body.exposed is None else _exposed(body.exposed),
        settings=state.settings,
        now=state.clock(),
    )
    return _out(s, row, version)


@router.patch("/pipelines/{pipeline_id}", response_model=SavedPipelineOut)
def update_pipeline(
    pipeline_id: str, body: PipelineUpdate, s: DB, user: CurrentUser, state: State
) -> SavedPipelineOut:
    """The owner changes the name, description or visibility (the graph changes by a new version)."""
    row = saved.update_pipeline(
        s,
        user=user,
        pipeline_id=pipeline_id,
        name=body.name,
        description=body.description,
        visibility=body.visibility,
        now=state.clock(),
    )
    return _out(s, row, saved.version_of(s, row, None))


@router.delete("/pipelines/{pipeline_id}", status_code=204)
def delete_pipeline(pipeline_id: str, s: DB, user: CurrentUser) -> None:
    """The owner (or an admin) deletes it with its versions; runs of it keep their graph."""
    saved.delete(s, user=user, pipeline_id=pipeline_id)
