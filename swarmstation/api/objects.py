"""Presigned object URLs of the local object store: GET to download, PUT to upload."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse

from swarmstation.api.deps import State
from swarmstation.objectstore.local import LocalObjectStore

router = APIRouter(tags=["objects"], include_in_schema=False)

MAX_OBJECT_BYTES = 4 * 1024**3


def _local(state: State) -> LocalObjectStore:
    if not isinstance(state.store, LocalObjectStore):
        raise HTTPException(404, "objects are served by the S3 store, not here")
    return state.store


def _check(state: State, method: str, key: str, expires: int, signature: str) -> None:
    if not _local(state).verify(method, key, expires, signature):
        raise HTTPException(403, "invalid or expired signature")


@router.get("/objects/{key:path}")
def get_object(
    key: str, state: State, expires: Annotated[int, Query()], signature: Annotated[str, Query(max_length=64)]
) -> FileResponse:
    _check(state, "GET", key, expires, signature)
    path = _local(state).path(key)
    if not path.is_file():
        raise HTTPException(404, "no such object")
    return FileResponse(path)


@router.put("/objects/{key:path}", status_code=204)
async def put_object(
    key: str,
    request: Request,
    state: State,
    expires: Annotated[int, Query()],
    signature: Annotated[str, Query(max_length=64)],
) -> None:
    _check(state, "PUT", key, expires, signature)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_OBJECT_BYTES:
        raise HTTPException(413, "object too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_OBJECT_BYTES:
            raise HTTPException(413, "object too large")
        chunks.append(chunk)
    await asyncio.to_thread(state.store.put_bytes, key, b"".join(chunks))
