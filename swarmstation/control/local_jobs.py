"""Jobs of local tools (LLM text tools, image utilities): run on the control plane's leader, in
threads, with no instance and no worker.

A local job (`backend == "local"`) goes through the same lifecycle as any other, so users see the
same events, outputs, errors and charges:

    QUEUED --claim: ASSIGN, START--> RUNNING --the tool ran--> COMPLETED
                                             \\--LocalToolError--> FAILED (or QUEUED: RETRY)
                                             \\--lease ran out--> QUEUED (LEASE_EXPIRED) or FAILED

`LocalExecutor.tick` (a leader loop, every ~0.2 s) expires old leases and claims up to
`local_tool_workers` minus what is running: the rows are locked (`SKIP LOCKED` on PostgreSQL, so
two replicas never take one job), moved ASSIGNED then RUNNING with a lease of the deadline plus a
margin, and committed before the tool starts. The tool runs in a thread without a session;
afterwards a new transaction locks the job again and keeps the result only if the job is still
RUNNING on the same lease (fencing token): a job cancelled meanwhile, or requeued because its
lease ran out, drops what the late run made. File outputs go to the object store as `Output`
rows (node_id = the port name); value outputs into `job.result`.

A control plane that dies mid-run leaves RUNNING jobs whose leases run out; whichever replica
leads next requeues them (or fails them when their attempts are used up), as the scheduler does
for pool jobs (`domain.scheduling.plan_lease_expiry`).
"""

from __future__ import annotations

import logging
import mimetypes
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from swarmstation.config import Settings
from swarmstation.control import jobs as jobs_ops
from swarmstation.domain.errors import SwarmError
from swarmstation.domain.scheduling import Lease, Requeue, plan_lease_expiry
from swarmstation.domain.states import LEASED_JOB_STATES, JobState
from swarmstation.localtools.base import LocalContext, LocalImage, LocalResult, LocalTool, LocalToolError
from swarmstation.localtools.registry import local_tools
from swarmstation.objectstore.base import ObjectStore
from swarmstation.store.db import transaction
from swarmstation.store.models import Job, Output

log = logging.getLogger(__name__)

BACKEND = "local"
#: A lease outlasts the deadline by this much: the run's own bookkeeping (fetching inputs,
#: storing outputs) is not the tool's time, and a lease that runs out requeues a live run.
LEASE_MARGIN_SECONDS = 30.0
#: How often `tick` looks for expired leases: leases are the deadline plus the margin long, so a
#: few seconds late is nothing, and the claim query alone runs at the loop's cadence.
EXPIRY_INTERVAL_SECONDS = 5.0
#: What a user sees when a tool raised something it should not have (the details are logged).
UNEXPECTED = "the tool failed unexpectedly (the control plane's log has the details)"


@dataclass(frozen=True)
class Claim:
    """A job this executor started: what the thread needs, copied out of the session."""

    job_id: str
    lease_token: int
    tool: LocalTool
    inputs: dict[str, Any]
    input_images: dict[str, Any]


@dataclass(frozen=True)
class Finished:
    """What a run came to: a result, or the error to fail (or retry) the job with."""

    result: LocalResult | None
    error: LocalToolError | None
    run_seconds: float


class LocalExecutor:
    """Claims and runs local jobs; `tick` is called by a leader loop, `close` on shutdown."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        store: ObjectStore,
        clock: Callable[[], datetime],
        on_change: Callable[[str], None] = lambda _job_id: None,
        *,
        tools: Mapping[str, LocalTool] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = store
        self.clock = clock
        self.on_change = on_change
        self.tools = dict(tools) if tools is not None else local_tools()
        self.workers = settings.local_tool_workers
        self.deadline_seconds = settings.local_tool_timeout_seconds
        self.lease_seconds = self.deadline_seconds + LEASE_MARGIN_SECONDS
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="local-tool")
        self._running: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._next_expiry = 0.0  # time.monotonic() of the next lease check

    # -- the loop's entry point ----------------------------------------------------------------

    def tick(self) -> None:
        if time.monotonic() >= self._next_expiry:
            self._next_expiry = time.monotonic() + EXPIRY_INTERVAL_SECONDS
            self.expire_leases()
        for claim in self.claim():
            self._start(claim)

    def running(self) -> int:
        with self._lock:
            for job_id in [j for j, f in self._running.items() if f.done()]:
                del self._running[job_id]
            return len(self._running)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait for the runs started so far to finish (tests; shutdown). True when they did."""
        with self._lock:
            futures = list(self._running.values())
        _done, not_done = wait_futures(futures, timeout=timeout)
        return not not_done

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)

    # -- claiming ------------------------------------------------------------------------------

    def claim(self) -> list[Claim]:
        """Lock up to the free workers' number of queued local jobs, oldest first, and move them
        to RUNNING (committed when this returns). A job whose tool is not a local tool, or cannot
        run with these settings (no LLM endpoint), fails with the reason instead."""
        free = self.workers - self.running()
        if free <= 0:
            return []
        claims: list[Claim] = []
        changed: list[str] = []
        with transaction(self.sessions) as s:
            rows = s.scalars(
                select(Job)
                .where(Job.backend == BACKEND, Job.state == JobState.QUEUED)
                .order_by(Job.queued_at, Job.id)
                .limit(free)
                .with_for_update(skip_locked=True)
            ).all()
            for job in rows:
                now = self.clock()
                changed.append(job.id)
                tool = self.tools.get(job.tool_slug)
                reason = (
                    f"tool {job.tool_slug} is not a local tool"
                    if tool is None
                    else _unavailable(tool, self.settings)
                )
                if tool is None or reason is not None:
                    jobs_ops.fail_job(s, job, reason=reason or "unavailable", now=now)
                    continue
                # ASSIGN as for an external backend (an attempt, a new fencing token, no instance),
                # then START at once: nothing stands between the claim and the run.
                jobs_ops.assign_external(s, job, backend=BACKEND, run_id="", now=now)
                job.external_run_id = None
                jobs_ops.mark_running(s, job, lease_seconds=self.lease_seconds, now=now)
                claims.append(
                    Claim(
                        job_id=job.id,
                        lease_token=job.lease_token,
                        tool=tool,
                        inputs=dict(job.inputs),
                        input_images=dict(job.input_images),
                    )
                )
        for job_id in changed:
            self.on_change(job_id)
        return claims

    def _start(self, claim: Claim) -> None:
        with self._lock:
            self._running[claim.job_id] = self._pool.submit(self._execute, claim)

    # -- running -------------------------------------------------------------------------------

    def _execute(self, claim: Claim) -> None:
        """The thread: run the tool, then record what it came to. Never raises (a failure to
        record leaves the lease to run out, and the job is requeued)."""
        finished = self.run_tool(claim)
        try:
            self.finish(claim, finished)
        except Exception:
            log.exception("local job %s: could not record its result", claim.job_id)

    def run_tool(self, claim: Claim) -> Finished:
        started = time.monotonic()
        result: LocalResult | None
        error: LocalToolError | None
        try:
            images = self._fetch_images(claim.input_images)
            ctx = LocalContext(
                settings=self.settings,
                deadline_seconds=self.deadline_seconds,
                max_pixels=self.settings.local_tool_max_pixels,
            )
            result = claim.tool.run(ctx, dict(claim.inputs), images)
            error = None
            if time.monotonic() - started > self.deadline_seconds:
                result, error = None, LocalToolError(_late(self.deadline_seconds))
        except LocalToolError as exc:
            result, error = None, exc
        except SwarmError as exc:  # the object store was down or lost an input: worth a retry
            log.warning("local job %s: %s", claim.job_id, exc)
            result, error = None, LocalToolError(f"an input image could not be read: {exc}", retryable=True)
        except Exception:
            log.exception("local job %s: the tool %s raised", claim.job_id, claim.tool.spec.slug)
            result, error = None, LocalToolError(UNEXPECTED)
        return Finished(result=result, error=error, run_seconds=round(time.monotonic() - started, 4))

    def _fetch_images(self, input_images: Mapping[str, Any]) -> dict[str, list[LocalImage]]:
        """The bytes of each image input: `{name: {"key", "filename", ...}}`, a list of such
        dicts for a `many` input (control/submission.py resolves the references)."""
        fetched: dict[str, list[LocalImage]] = {}
        for name, refs in input_images.items():
            items = refs if isinstance(refs, list) else [refs]
            fetched[name] = [
                LocalImage(data=self.store.get_bytes(ref["key"]), content_type=_content_type(ref))
                for ref in items
            ]
        return fetched

    # -- recording -----------------------------------------------------------------------------

    def finish(self, claim: Claim, finished: Finished) -> None:
        """Record a run's outcome, if the job is still RUNNING on the claim's lease."""
        with transaction(self.sessions) as s:
            job = s.scalar(select(Job).where(Job.id == claim.job_id).with_for_update())
            if job is None or job.state != JobState.RUNNING or job.lease_token != claim.lease_token:
                state = "gone" if job is None else f"{job.state}, lease {job.lease_token}"
                log.info("local job %s: result dropped (the job is %s now)", claim.job_id, state)
                return
            now = self.clock()
            job.timings = {**job.timings, "run_seconds": finished.run_seconds}
            error = finished.error
            if error is None and finished.result is not None:
                try:
                    self._complete(s, job, finished.result, finished.run_seconds, now)
                except SwarmError as exc:  # storing the outputs failed: the run may be tried again
                    log.warning("local job %s: outputs not stored: %s", job.id, exc)
                    error = LocalToolError(f"the outputs could not be stored: {exc}", retryable=True)
            if error is not None:
                if error.retryable:
                    jobs_ops.retry_or_fail(s, job, reason=str(error), now=now)
                else:
                    jobs_ops.fail_job(s, job, reason=str(error), now=now)
        self.on_change(claim.job_id)

    def _complete(self, s: Session, job: Job, result: LocalResult, run_seconds: float, now: datetime) -> None:
        stored: list[tuple[str, str, str, str, int]] = []
        counts: dict[str, int] = {}
        for file in result.files:
            n = counts.get(file.port, 0)
            counts[file.port] = n + 1
            ext = _extension(file.filename, file.content_type)
            key = f"outputs/{job.id}/{file.port}-{n}.{ext}"
            self.store.put_bytes(key, file.data, file.content_type)
            stored.append((key, file.filename, file.content_type, file.port, len(file.data)))
        for key, filename, content_type, port, size in stored:
            s.add(
                Output(
                    id=str(uuid.uuid4()),
                    job_id=job.id,
                    key=key,
                    filename=filename,
                    content_type=content_type,
                    size=size,
                    node_id=port,
                    uploaded=True,
                    created_at=now,
                )
            )
        s.flush()
        job.result = dict(result.values)
        timings: dict[str, Any] = {"run_seconds": run_seconds}
        if result.usage:
            timings["tokens"] = {
                "prompt": int(result.usage.get("prompt_tokens", 0)),
                "completion": int(result.usage.get("completion_tokens", 0)),
            }
        jobs_ops.complete_job(s, job, timings=timings, now=now)

    # -- leases --------------------------------------------------------------------------------

    def expire_leases(self) -> list[str]:
        """Local jobs whose lease ran out (their control plane died, or a run hung past its
        deadline and margin) go back to the queue, or fail when their attempts are used up. A
        run of this process that finishes later is dropped by its fencing token."""
        now = self.clock()
        changed: list[str] = []
        with transaction(self.sessions) as s:
            rows = s.scalars(
                select(Job)
                .where(
                    Job.backend == BACKEND,
                    Job.state.in_(sorted(LEASED_JOB_STATES)),
                    Job.lease_expires_at.is_not(None),
                    Job.lease_expires_at < now,
                )
                .with_for_update(skip_locked=True)
            ).all()
            by_id = {job.id: job for job in rows}
            leases = [
                Lease(
                    job_id=job.id,
                    instance_id="",
                    attempt=job.attempt,
                    max_attempts=job.max_attempts,
                    expires_at=job.lease_expires_at or now,
                    instance_alive=True,  # no instance: only the time counts
                )
                for job in rows
            ]
            for action in plan_lease_expiry(leases, now=now):
                job = by_id[action.job_id]
                if isinstance(action, Requeue):
                    jobs_ops.requeue_job(s, job, trigger=action.trigger, reason=action.reason, now=now)
                else:
                    jobs_ops.fail_job(s, job, reason=action.reason, now=now)
                changed.append(job.id)
        for job_id in changed:
            self.on_change(job_id)
        return changed


def _unavailable(tool: LocalTool, settings: Settings) -> str | None:
    reason = tool.unavailable(settings)
    return None if reason is None else f"tool {tool.spec.slug} is unavailable: {reason}"


def _late(deadline: float) -> str:
    return f"took longer than the {deadline:g} s a local tool may take"


def _content_type(ref: Mapping[str, Any]) -> str:
    given = ref.get("content_type")
    if isinstance(given, str) and given:
        return given
    name = str(ref.get("filename") or ref.get("key") or "")
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _extension(filename: str, content_type: str) -> str:
    if "." in filename:
        ext = filename.rsplit(".", 1)[-1].lower()
        if ext.isalnum() and len(ext) <= 8:
            return ext
    guessed = mimetypes.guess_extension(content_type) or ".bin"
    return guessed.lstrip(".")
