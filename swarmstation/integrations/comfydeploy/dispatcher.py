"""Jobs that run on ComfyUI Deploy: dispatch, webhook and poll updates, outputs, cost.

A job routed to ComfyUI Deploy goes QUEUED → ASSIGNED when its run is queued there (the lease is
held by the service, not by an instance), RUNNING on the first running update, and COMPLETED or
FAILED on the final one, exactly like a pool job, so users see the same events, outputs and
errors. Updates come from webhooks (authenticated by a per-job secret in the URL) and, when a
webhook never arrives, from polling the run's status; `newer` makes duplicated and out-of-order
updates change nothing. Outputs are copied into our object store. The cost is recorded the same
way as for pool jobs: GPU seconds at the service's per-second rate.
"""

from __future__ import annotations

import logging
import mimetypes
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from swarmstation.config import Settings
from swarmstation.control import jobs as jobs_ops
from swarmstation.domain.comfydeploy_webhooks import RunOutput, RunUpdate, newer, webhook_url
from swarmstation.domain.states import JobState
from swarmstation.integrations.comfydeploy.client import ComfyDeployClient, ComfyDeployError
from swarmstation.objectstore.base import ObjectStore
from swarmstation.store.db import transaction
from swarmstation.store.models import Job, Output, Tool

log = logging.getLogger(__name__)
WEBHOOK_PATH = "/v1/webhooks/comfydeploy"


def _stored(job: Job) -> RunUpdate | None:
    ext = job.external or {}
    if not ext.get("run_id"):
        return None
    outputs = tuple(RunOutput(**o) for o in ext.get("outputs", []))
    return RunUpdate(
        run_id=ext["run_id"],
        status=ext["status"],
        progress=ext.get("progress"),
        live_status=ext.get("live_status"),
        outputs=outputs,
        error=ext.get("error"),
        raw_status=ext.get("raw_status", ""),
    )


def apply_update(
    s: Session,
    job: Job,
    update: RunUpdate,
    *,
    client: ComfyDeployClient,
    store: ObjectStore,
    settings: Settings,
    now: datetime,
) -> bool:
    """Apply one run update to its job; returns False when it changes nothing (a duplicate, a
    late one, or a job that already ended)."""
    if job.backend != "comfydeploy" or job.external_run_id != update.run_id:
        return False
    if job.state not in (JobState.ASSIGNED, JobState.RUNNING) or not newer(_stored(job), update):
        return False
    job.external = {**asdict(update), "outputs": [asdict(o) for o in update.outputs], "at": now.isoformat()}
    lease = settings.lease_seconds
    if update.status == "running":
        jobs_ops.report_progress(
            s,
            job,
            progress=min(0.95, (update.progress or 0.0) * 0.95),
            detail={"stage": update.live_status or "running", "backend": "comfydeploy"},
            lease_seconds=lease,
            now=now,
        )
    elif update.status == "success":
        jobs_ops.mark_running(s, job, lease_seconds=lease, now=now)
        for n, output in enumerate(update.outputs):
            data = client.download(output)
            name = output.name or f"output-{n}.png"
            output_id = str(uuid.uuid4())
            key = f"outputs/{job.id}/{output_id}/{name}"
            content_type = output.content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
            store.put_bytes(key, data, content_type)
            s.add(
                Output(
                    id=output_id,
                    job_id=job.id,
                    key=key,
                    filename=name,
                    content_type=content_type,
                    size=len(data),
                    node_id="",
                    uploaded=True,
                    created_at=now,
                )
            )
        s.flush()
        started = job.started_at or job.assigned_at or now
        run_seconds = max(0.0, (now - started).total_seconds())
        jobs_ops.complete_job(
            s,
            job,
            timings={
                "run_seconds": round(run_seconds, 3),
                "cost_usd": round(run_seconds * settings.comfydeploy_price_per_second, 6),
            },
            now=now,
        )
    elif update.status in ("failed", "cancelled"):
        if job.state == JobState.ASSIGNED:
            jobs_ops.mark_running(s, job, lease_seconds=lease, now=now)
        started = job.started_at or now
        job.timings = {
            **job.timings,
            "cost_usd": round(
                max(0.0, (now - started).total_seconds()) * settings.comfydeploy_price_per_second, 6
            ),
        }
        jobs_ops.fail_job(
            s, job, reason=f"ComfyUI Deploy run {update.status}: {update.error or 'no reason given'}", now=now
        )
    return True


class ComfyDeployDispatcher:
    """Queues jobs on ComfyUI Deploy and polls the runs whose webhooks are late."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        client: ComfyDeployClient,
        store: ObjectStore,
        webhook_key: bytes,
        clock: Callable[[], datetime],
        on_change: Callable[[str], None] = lambda _job_id: None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.client = client
        self.store = store
        self.webhook_key = webhook_key
        self.clock = clock
        self.on_change = on_change

    def tick(self) -> None:
        self.dispatch()
        self.poll()

    def dispatch(self) -> None:
        with transaction(self.sessions) as s:
            waiting = [
                (j.id, j.tool_slug, j.inputs)
                for j in s.scalars(
                    select(Job).where(Job.backend == "comfydeploy", Job.state == JobState.QUEUED).limit(50)
                )
            ]
            deployments = {t.slug: t.comfydeploy_deployment_id for t in s.scalars(select(Tool))}
        for job_id, tool, inputs in waiting:
            deployment = deployments.get(tool)
            url = webhook_url(self.settings.base_url + WEBHOOK_PATH, job_id, self.webhook_key)
            error: str | None = None
            run_id: str | None = None
            if deployment is None:
                error = f"tool {tool} has no ComfyUI Deploy deployment any more"
            else:
                try:
                    run_id = self.client.queue_run(deployment, _deploy_inputs(inputs), webhook_url=url)
                except ComfyDeployError as exc:
                    if exc.retryable:
                        log.warning("ComfyUI Deploy did not take job %s yet: %s", job_id, exc)
                        continue
                    error = f"ComfyUI Deploy refused the run: {exc}"
            with transaction(self.sessions) as s:
                job = s.get(Job, job_id)
                if job is None or job.state != JobState.QUEUED:
                    continue
                now = self.clock()
                if run_id is None:
                    jobs_ops.fail_job(s, job, reason=error or "not queued", now=now)
                else:
                    jobs_ops.assign_external(s, job, backend="comfydeploy", run_id=run_id, now=now)
            self.on_change(job_id)

    def poll(self) -> None:
        """Backs up webhooks: runs with no update for `comfydeploy_poll_seconds` are asked directly."""
        now = self.clock()
        stale = now - timedelta(seconds=self.settings.comfydeploy_poll_seconds)
        with transaction(self.sessions) as s:
            candidates = [
                (j.id, j.external_run_id)
                for j in s.scalars(
                    select(Job).where(
                        Job.backend == "comfydeploy",
                        Job.state.in_([JobState.ASSIGNED, JobState.RUNNING]),
                        Job.external_run_id.is_not(None),
                    )
                )
                if datetime.fromisoformat((j.external or {}).get("at") or j.assigned_at.isoformat()) <= stale  # type: ignore[union-attr]
            ]
        for job_id, run_id in candidates:
            assert run_id is not None
            try:
                update = self.client.get_run(run_id)
            except ComfyDeployError as exc:
                log.warning("cannot poll ComfyUI Deploy run %s: %s", run_id, exc)
                continue
            with transaction(self.sessions) as s:
                job = s.get(Job, job_id)
                if job is None:
                    continue
                changed = apply_update(
                    s,
                    job,
                    update,
                    client=self.client,
                    store=self.store,
                    settings=self.settings,
                    now=self.clock(),
                )
                if not changed:
                    job.external = {**(job.external or {}), "at": self.clock().isoformat()}
            self.on_change(job_id)


def _deploy_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI Deploy deployments take their external inputs by name: the tool's inputs (prompt,
    seed, width, ...) as they were bound. (Tools with input images cannot be split there: the
    split endpoint refuses them.)"""
    return dict(inputs)
