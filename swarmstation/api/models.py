"""The model catalog over HTTP (admin): list, upload, register by URL, remove."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from swarmstation.api.deps import DB, AdminUser, State
from swarmstation.api.schemas import INT64_MAX, Strict
from swarmstation.domain.errors import Conflict, InvalidInput, NotFound, TooLarge
from swarmstation.domain.names import BadName, normalise_path
from swarmstation.domain.workflow import MODEL_FOLDERS, WorkflowError, normalise_model_name
from swarmstation.objectstore.base import scratch_dir
from swarmstation.store.models import Model

router = APIRouter(prefix="/v1/admin/models", tags=["admin"])

KINDS = (
    "checkpoint",
    "lora",
    "vae",
    "unet",
    "clip",
    "upscale",
    "controlnet",
    "embedding",
    "clip_vision",
    "other",
)
Folder = Annotated[str, Field(min_length=1, max_length=50)]
MAX_MODEL_FILE_CHARS = 200


class ModelOut(BaseModel):
    id: str
    kind: str
    folder: str
    name: str
    size: int | None
    sha256: str | None
    source_kind: str
    url: str | None
    base_model: str
    created_at: datetime


class ModelRegister(Strict):
    folder: Folder
    name: str = Field(min_length=1, max_length=255)
    kind: str = Field("other", max_length=30)
    url: str = Field(min_length=8, max_length=2000)
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    size: int | None = Field(None, ge=1, le=INT64_MAX)
    base_model: str = Field("other", max_length=40)


def out(m: Model) -> ModelOut:
    return ModelOut(**{k: getattr(m, k) for k in ModelOut.model_fields})


def _check_place(folder: str, name: str, kind: str) -> str:
    if folder not in MODEL_FOLDERS:
        raise InvalidInput(
            f"folder: unknown ComfyUI folder {folder!r}; one of {', '.join(sorted(MODEL_FOLDERS))}"
        )
    if kind not in KINDS:
        raise InvalidInput(f"kind: one of {', '.join(KINDS)}")
    try:
        # ComfyUI's path rule, then the file-name rule that object keys also use, so that a name
        # accepted here is never refused by the store after the body has streamed.
        rel = normalise_path(normalise_model_name(name), what="model name")
    except (WorkflowError, BadName) as exc:
        raise InvalidInput(f"name: {exc}") from exc
    # The catalog's columns: the name (255) and the object key models/<folder>/<sha256>/<file> (300).
    if len(rel) > 255 or len(rel.rsplit("/", 1)[-1]) > MAX_MODEL_FILE_CHARS:
        raise InvalidInput(
            f"name: at most 255 characters, and {MAX_MODEL_FILE_CHARS} for the file name itself"
        )
    return rel


def _unique(s: DB, folder: str, name: str) -> None:
    if s.scalar(select(Model).where(Model.folder == folder, Model.name == name)) is not None:
        raise Conflict(f"{folder}/{name} is already in the catalog")


@router.get("", response_model=list[ModelOut])
def list_models(s: DB, _: AdminUser, folder: str | None = None) -> list[ModelOut]:
    q = select(Model).order_by(Model.folder, Model.name)
    if folder:
        q = q.where(Model.folder == folder)
    return [out(m) for m in s.scalars(q)]


@router.post("", response_model=ModelOut, status_code=201)
def register_url(body: ModelRegister, s: DB, admin: AdminUser, state: State) -> ModelOut:
    """A model fetched by workers straight from a public URL on an allow-listed host."""
    name = _check_place(body.folder, body.name, body.kind)
    parsed = urlparse(body.url)
    host = (parsed.hostname or "").lower()
    allowed = [h.lower() for h in state.settings.model_url_hosts]
    if parsed.scheme != "https" and not (parsed.scheme == "http" and host in ("127.0.0.1", "localhost")):
        raise InvalidInput("url: must be https")
    if not any(host == h or host.endswith("." + h) for h in allowed):
        raise InvalidInput(f"url: {host} is not an allowed model host ({', '.join(allowed)})")
    _unique(s, body.folder, name)
    m = Model(
        id=str(uuid.uuid4()),
        kind=body.kind,
        folder=body.folder,
        name=name,
        size=body.size,
        sha256=body.sha256.lower() if body.sha256 else None,
        source_kind="url",
        object_key=None,
        url=body.url,
        base_model=body.base_model,
        created_by=admin.id,
        created_at=state.clock(),
    )
    s.add(m)
    s.flush()
    return out(m)


@router.put("/upload/{folder}/{name:path}", response_model=ModelOut, status_code=201)
async def upload(
    folder: str,
    name: str,
    request: Request,
    admin: AdminUser,
    state: State,
    kind: Annotated[str, Query(max_length=30)] = "other",
    base_model: Annotated[str, Query(max_length=40)] = "other",
) -> ModelOut:
    """Upload the file as the raw request body; it is hashed while it streams to disk."""
    rel = _check_place(folder, name, kind)

    def exists() -> bool:
        with state.sessions() as s, s.begin():
            return s.scalar(select(Model).where(Model.folder == folder, Model.name == rel)) is not None

    if await asyncio.to_thread(exists):
        raise Conflict(f"{folder}/{rel} is already in the catalog")
    limit = state.settings.max_model_bytes
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(dir=scratch_dir(state.store), prefix=".model-upload-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"model too large: the limit is {limit} bytes")
                digest.update(chunk)
                fh.write(chunk)
        if size == 0:
            raise InvalidInput("empty upload")
        sha = digest.hexdigest()
        key = f"models/{folder}/{sha}/{rel.rsplit('/', 1)[-1]}"
        await asyncio.to_thread(state.store.put_file, key, tmp)
    finally:
        tmp.unlink(missing_ok=True)

    def save() -> ModelOut:
        with state.sessions() as s, s.begin():
            m = Model(
                id=str(uuid.uuid4()),
                kind=kind,
                folder=folder,
                name=rel,
                size=size,
                sha256=sha,
                source_kind="object",
                object_key=key,
                url=None,
                base_model=base_model,
                created_by=admin.id,
                created_at=state.clock(),
            )
            s.add(m)
            s.flush()
            return out(m)

    return await asyncio.to_thread(save)


@router.delete("/{model_id}", status_code=204)
def remove(model_id: str, s: DB, _: AdminUser, state: State) -> None:
    m = s.get(Model, model_id)
    if m is None:
        raise NotFound(f"model {model_id} not found")
    orphan = (
        m.object_key
        if m.object_key
        and s.scalar(select(Model).where(Model.object_key == m.object_key, Model.id != m.id)) is None
        else None
    )
    s.delete(m)
    # The row goes first: a commit that fails leaves the row and its file; a file delete that
    # fails after the commit leaves only an unreferenced file.
    s.commit()
    if orphan:
        state.store.delete(orphan)
