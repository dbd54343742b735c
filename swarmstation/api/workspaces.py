"""The web studio's canvases, autosaved per user: `PUT /v1/workspaces/{name}` stores the graph the
studio keeps (nodes, wires, viewport), `GET` returns it. The server does not interpret the graph;
running it is `POST /v1/runs` with the pipeline the studio derives from it."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field
from sqlalchemy import select

from swarmstation.api.deps import DB, CurrentUser, State
from swarmstation.api.schemas import Strict
from swarmstation.domain.errors import NotFound, TooLarge
from swarmstation.store.models import Workspace

router = APIRouter(prefix="/v1/workspaces", tags=["studio"])

MAX_GRAPH_BYTES = 1_000_000  # a canvas of a few hundred nodes is well under 200 kB
MAX_WORKSPACES = 100

Name = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")]


class WorkspaceIn(Strict):
    graph: dict[str, Any] = Field(description="The canvas as the studio keeps it (opaque here)")


class WorkspaceOut(BaseModel):
    name: str
    graph: dict[str, Any]
    updated_at: datetime


class WorkspaceSummary(BaseModel):
    name: str
    updated_at: datetime


class WorkspaceList(BaseModel):
    workspaces: list[WorkspaceSummary]


def _out(row: Workspace) -> WorkspaceOut:
    return WorkspaceOut(name=row.name, graph=row.graph, updated_at=row.updated_at)


@router.get("", response_model=WorkspaceList)
def list_workspaces(user: CurrentUser, s: DB) -> WorkspaceList:
    rows = s.scalars(
        select(Workspace).where(Workspace.user_id == user.id).order_by(Workspace.updated_at.desc())
    )
    return WorkspaceList(workspaces=[WorkspaceSummary(name=r.name, updated_at=r.updated_at) for r in rows])


@router.get("/{name}", response_model=WorkspaceOut)
def get_workspace(name: Name, user: CurrentUser, s: DB) -> WorkspaceOut:
    row = s.get(Workspace, (user.id, name))
    if row is None:
        raise NotFound(f"no workspace named {name!r}")
    return _out(row)


@router.put("/{name}", response_model=WorkspaceOut)
def put_workspace(name: Name, body: WorkspaceIn, user: CurrentUser, s: DB, state: State) -> WorkspaceOut:
    size = len(json.dumps(body.graph, separators=(",", ":")))
    if size > MAX_GRAPH_BYTES:
        raise TooLarge(f"the workspace is {size} bytes; at most {MAX_GRAPH_BYTES} are kept")
    now = state.clock()
    row = s.get(Workspace, (user.id, name))
    if row is None:
        count = len(s.scalars(select(Workspace.name).where(Workspace.user_id == user.id)).all())
        if count >= MAX_WORKSPACES:
            raise TooLarge(f"at most {MAX_WORKSPACES} workspaces per user; delete one first")
        row = Workspace(user_id=user.id, name=name, graph=body.graph, updated_at=now)
        s.add(row)
    else:
        row.graph = body.graph
        row.updated_at = now
    s.flush()
    return _out(row)


@router.delete("/{name}", status_code=204)
def delete_workspace(name: Name, user: CurrentUser, s: DB) -> None:
    row = s.get(Workspace, (user.id, name))
    if row is None:
        raise NotFound(f"no workspace named {name!r}")
    s.delete(row)
