"""Presigned object URLs of the local object store: GET to download, PUT to upload."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from swarmstation.api.deps import State, read_transaction
from swarmstation.domain.errors import Forbidden, NotFound, TooLarge
from swarmstation.domain.states import LEASED_JOB_STATES
from swarmstation.objectstore.base import UploadLease
from swarmstation.objectstore.local import LocalObjectStore
from swarmstation.store.models import Job

router = APIRouter(tags=["objects"], include_in_schema=False)


def _local(state: State) -> LocalObjectStore:
    if not isinstance(state.store, LocalObjectStore):
        raise NotFound("objects are served by the S3 store, not here")
    return state.store


def _check(
    state: State, method: str, key: str, expires: int, signature: str, lease: UploadLease | None = None
) -> None:
    if not _local(state).verify(method, key, expires, signature, lease):
        raise Forbidden("invalid or expired signature")


def _lease_holds(state: State, lease: UploadLease) -> bool:
    with read_transaction(state) as s:  # a read: no write lock (SQLite)
        job = s.get(Job, lease.job_id)
        return job is not None and job.lease_token == lease.lease_token and job.state in LEASED_JOB_STATES


@router.get("/objects/{key:path}")
def get_object(
    key: str, state: State, expires: Annotated[int, Query()], signature: Annotated[str, Query(max_length=64)]
) -> FileResponse:
    _check(state, "GET", key, expires, signature)
    path = _local(state).path(key)
    if not path.is_file():
        raise NotFound("no such object")
    return FileResponse(path)


@router.put("/objects/{key:path}", status_code=204)
async def put_object(
    key: str,
    request: Request,
    state: State,
    expires: Annotated[int, Query()],
    signature: Annotated[str, Query(max_length=64)],
    job: Annotated[str | None, Query(max_length=64)] = None,
    lease: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
) -> None:
    upload_lease = UploadLease(job, lease) if job is not None and lease is not None else None
    _check(state, "PUT", key, expires, signature, upload_lease)
    # An output's upload URL dies with its job's lease, before its expiry if need be: once the
    # job has completed, failed or moved to another lease, its outputs cannot be replaced.
    if upload_lease is not None and not await asyncio.to_thread(_lease_holds, state, upload_lease):
        raise Forbidden(f"this upload URL ended with the lease of job {upload_lease.job_id}")
    limit = state.settings.max_object_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"object too large: the limit is {limit} bytes")
    # Stream to a temporary file beside the target and rename it into place: memory stays at one
    # chunk whatever the object's size, and a reader never sees half an object.
    store = _local(state)
    fd, tmp_name = tempfile.mkstemp(dir=store.root, prefix=".put-")
    tmp = Path(tmp_name)
    try:
        size = 0
        with os.fdopen(fd, "wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"object too large: the limit is {limit} bytes")
                fh.write(chunk)
        await asyncio.to_thread(store.put_file, key, tmp)
    finally:
        tmp.unlink(missing_ok=True)
