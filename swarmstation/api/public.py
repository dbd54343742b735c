"""The public API under /v1: tools, jobs, their events and outputs, and image uploads."""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from datetime import timedelta
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from PIL import Image, UnidentifiedImageError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from swarmstation.api.deps import DB, AppState, CurrentUser, State, read_transaction
from swarmstation.api.prices import price_out
from swarmstation.api.schemas import (
    INT64_MAX,
    JobCreate,
    JobList,
    JobOut,
    ToolDetail,
    ToolSummary,
    UploadOut,
)
from swarmstation.api.sse import Frame, event_stream
from swarmstation.api.views import job_out, output_url, tool_detail, tool_summary
from swarmstation.control import charging, idempotency, submission
from swarmstation.control import jobs as jobs_ops
from swarmstation.control.submission import UPLOAD_REF_PREFIX
from swarmstation.domain.errors import Conflict, InvalidInput, NotFound, TooLarge
from swarmstation.domain.states import TERMINAL_JOB_STATES, JobState
from swarmstation.objectstore.base import NotFound as ObjectNotFound
from swarmstation.objectstore.base import RedirectTo
from swarmstation.store import queries
from swarmstation.store.db import transaction
from swarmstation.store.models import IdempotencyKey, Job, JobEvent, Output, Tool, Upload, User

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["public"])

_DOWNLOAD_URL_SECONDS = 600  # a redirect to the bucket is followed at once
_IMAGE_TYPES = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "WEBP": ("image/webp", "webp")}


@router.get("/tools", response_model=list[ToolSummary])
def list_tools(s: DB, _: CurrentUser, state: State) -> list[ToolSummary]:
    cfg = charging.ChargeSettings.from_settings(state.settings)
    tools = s.scalars(select(Tool).order_by(Tool.slug))
    return [
        tool_summary(t, price_out(charging.price_view(s, t, cfg)), settings=state.settings) for t in tools
    ]


@router.get("/tools/{slug}", response_model=ToolDetail)
def get_tool(slug: str, s: DB, _: CurrentUser, state: State) -> ToolDetail:
    tool = queries.tool_by_slug(s, slug)
    cfg = charging.ChargeSettings.from_settings(state.settings)
    return tool_detail(tool, price_out(charging.price_view(s, tool, cfg)), settings=state.settings)


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[!-~]+$",
        description="Printable ASCII, no spaces. A retry with the same key and body answers the job "
        "the first request created (for 24 hours at least); the same key with another body is a 422",
    ),
]
_JOBS_SCOPE = "jobs.create"


def _claim_key(s: Session, state: AppState, user: User, key: str, body: JobCreate) -> IdempotencyKey | JobOut:
    """The claimed key (give it the job before committing), or the job an earlier request made.
    Raises idempotency.KeyReused (422) or KeyInFlight (409)."""
    found = idempotency.claim(
        s,
        user_id=user.id,
        scope=_JOBS_SCOPE,
        key=key,
        digest=idempotency.request_hash(body.model_dump(mode="json")),
        now=state.clock(),
        keep=timedelta(hours=state.settings.idempotency_key_hours),
    )
    if isinstance(found, idempotency.Replay):
        job = s.get(Job, found.job_id)
        assert job is not None  # the key goes with its job (ON DELETE CASCADE)
        return job_out(s, job)
    return found


def _create_job(
    state: AppState, body: JobCreate, user: User, idempotency_key: str | None
) -> tuple[JobOut, bool]:
    """The submission in one transaction of its own, committed before it returns: (the job,
    whether it is an earlier request's replayed)."""
    with transaction(state.sessions) as s:
        claimed: IdempotencyKey | None = None
        if idempotency_key is not None:
            found = _claim_key(s, state, user, idempotency_key, body)
            if isinstance(found, JobOut):
                return found, True
            claimed = found
        settings = state.settings
        job = submission.submit(
            s,
            user=user,
            tool_slug=body.tool,
            inputs=body.inputs,
            matchers=state.matchers,
            limits=submission.SubmissionLimits.from_settings(settings),
            now=state.clock(),
            pricing=state.pricing,  # the quote is held with the job
        )
        if claimed is not None:
            claimed.job_id = job.id
        out = job_out(s, job, outputs=())  # just submitted: no outputs yet
    state.loops.poke()
    return out, False


# The job routes most requests take are `async def` around one thread of work with its own
# transaction, committed before the answer: a sync handler with the request-scoped session
# (`DB`) cost three thread hops more (the session's start and end, the answer's validation).
@router.post("/jobs", response_model=JobOut, status_code=201)
async def create_job(
    body: JobCreate,
    user: CurrentUser,
    state: State,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobOut:
    out, replayed = await anyio.to_thread.run_sync(_create_job, state, body, user, idempotency_key)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return out


@router.get("/jobs", response_model=JobList)
def list_jobs(
    s: DB,
    user: CurrentUser,
    state_filter: Annotated[JobState | None, Query(alias="state")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobList:
    q = select(Job).where(Job.user_id == user.id).order_by(Job.created_at.desc()).limit(limit)
    if state_filter is not None:
        q = q.where(Job.state == state_filter)
    jobs = JobList(jobs=[job_out(s, j) for j in s.scalars(q)])
    s.commit()  # before the answer is validated in the thread pool (api/worker.py says why)
    return jobs


def _job_view(state: AppState, job_id: str, user: User) -> JobOut:
    with read_transaction(state) as s:
        return job_out(s, queries.job_for_user(s, job_id, user))


@router.get("/jobs/{job_id}", response_model=JobOut)
async def get_job(job_id: str, user: CurrentUser, state: State) -> JobOut:
    return await anyio.to_thread.run_sync(_job_view, state, job_id, user)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, s: DB, user: CurrentUser, state: State) -> JobOut:
    job = queries.job_for_user(s, job_id, user)
    # locked: a cancel racing a worker's report moves (and settles) the job once
    s.refresh(job, with_for_update=True)
    if job.state in TERMINAL_JOB_STATES:
        raise Conflict(f"job {job_id} is already {job.state}")
    jobs_ops.cancel_job(s, job, now=state.clock())
    s.flush()
    out = job_out(s, job)
    s.commit()
    state.notifier.wake(f"job:{job_id}")
    state.loops.poke()
    return out


@router.get("/jobs/{job_id}/outputs/{output_id}", response_model=None)
def download_output(
    job_id: str, output_id: str, s: DB, user: CurrentUser, state: State
) -> FileResponse | RedirectResponse:
    queries.job_for_user(s, job_id, user)
    out = s.get(Output, output_id)
    if out is None or out.job_id != job_id or not out.uploaded:
        raise NotFound(f"output {output_id} not found")
    try:
        where = state.store.download(out.key, _DOWNLOAD_URL_SECONDS)
    except ObjectNotFound as exc:
        raise NotFound(f"output {output_id} is missing from the object store") from exc
    if isinstance(where, RedirectTo):  # S3/R2: the client fetches it from the bucket
        return RedirectResponse(where.url, status_code=307)
    return FileResponse(where.path, media_type=out.content_type, filename=out.filename)


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse)
async def job_events(
    job_id: str,
    request: Request,
    user: CurrentUser,
    state: State,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0, le=INT64_MAX)] = None,
) -> StreamingResponse:
    """Server-sent events: `state` and `progress` events as they happen; the stream ends after
    the job's final state. Reconnect with `Last-Event-ID` to resume."""

    checked = False

    def frames_after(s: Session, after: int) -> tuple[list[Frame], int | None]:
        """The events after `after` (columns, not rows), and the terminal state event's id when
        one is among them: a terminal state has no way out, so it is the stream's last."""
        frames, last = [], None
        for event_id, type_, data in s.execute(
            select(JobEvent.id, JobEvent.type, JobEvent.data)
            .where(JobEvent.job_id == job_id, JobEvent.id > after)
            .order_by(JobEvent.id)
        ):
            frame = Frame(event_id, type_, {"job_id": job_id, **data})
            if type_ == "state" and data.get("state") in TERMINAL_JOB_STATES:
                last = event_id
                if data.get("outputs"):  # the terminal event says where the outputs are
                    frame.data["output_urls"] = [output_url(job_id, o) for o in data["outputs"]]
            frames.append(frame)
        return frames, last

    def read(after: int) -> tuple[list[Frame], int | None]:
        """The first read checks who may see the job (and whether it ended before `after`: a
        client that resumes after the end); each later one reads only the new events, one
        statement, instead of loading the job on every wake."""
        nonlocal checked
        with read_transaction(state) as s:
            if checked:
                return frames_after(s, after)
            row = s.execute(select(Job.user_id, Job.state).where(Job.id == job_id)).first()
            if row is None or (row.user_id != user.id and user.role != "admin"):
                raise NotFound(f"job {job_id} not found")  # as queries.job_for_user answers
            checked = True
            frames, last = frames_after(s, after)
            if row.state not in TERMINAL_JOB_STATES or last is not None:
                return frames, last
            ended = s.scalar(
                select(func.max(JobEvent.id)).where(JobEvent.job_id == job_id, JobEvent.type == "state")
            )
            return frames, int(ended or 0)

    return await event_stream(
        request, state.notifier, f"job:{job_id}", read, after=last_event_id or 0, what=f"job {job_id}"
    )


def _decode_image(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) of an image that decodes completely, or a 4xx: 413 for more
    pixels than `max_pixels` (checked from the header, before anything is decoded), 422 for
    anything that is not a whole PNG, JPEG or WebP. Messages never quote Pillow's, which show
    Python object reprs."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, width, height = img.format or "", img.width, img.height
            if fmt not in _IMAGE_TYPES:
                raise InvalidInput(
                    f"file: unsupported image format {fmt or 'unknown'}; use PNG, JPEG or WebP"
                )
            if width * height > max_pixels:
                raise TooLarge(
                    f"file: the image is {width}x{height} pixels, more than the limit of {max_pixels}"
                )
            img.verify()  # checksums and structure
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # every pixel: verify() passes a file cut short after its headers
    except Image.DecompressionBombError:
        # Pillow's own ceiling (twice Image.MAX_IMAGE_PIXELS), met before our check can run
        raise TooLarge(f"file: the image has more pixels than the limit of {max_pixels}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise InvalidInput(
            "file: not a readable image (not PNG, JPEG or WebP, or truncated or corrupt)"
        ) from None
    return fmt, width, height


@router.post("/uploads", response_model=UploadOut, status_code=201)
async def upload_image(file: UploadFile, user: CurrentUser, state: State) -> UploadOut:
    limit = state.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"image too large: the limit is {limit} bytes")
    if not data:
        raise InvalidInput("file: empty upload")
    fmt, width, height = await asyncio.to_thread(_decode_image, data, state.settings.max_image_pixels)
    content_type, ext = _IMAGE_TYPES[fmt]
    upload_id = str(uuid.uuid4())
    key = f"uploads/{user.id}/{upload_id}.{ext}"
    await asyncio.to_thread(state.store.put_bytes, key, data, content_type)
    filename = (file.filename or f"upload.{ext}")[:255]

    def save() -> None:
        with state.sessions() as s, s.begin():
            s.add(
                Upload(
                    id=upload_id,
                    user_id=user.id,
                    key=key,
                    filename=filename,
                    content_type=content_type,
                    size=len(data),
                    created_at=state.clock(),
                )
            )

    await asyncio.to_thread(save)
    return UploadOut(
        id=upload_id,
        ref=f"{UPLOAD_REF_PREFIX}{upload_id}",
        filename=filename,
        content_type=content_type,
        size=len(data),
        width=width,
        height=height,
    )
