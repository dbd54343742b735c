"""The job lifecycle and the scheduler pass against SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from swarmstation.api.app import build
from swarmstation.config import Settings
from swarmstation.control import jobs as jobs_ops
from swarmstation.control.scheduler import scheduler_pass
from swarmstation.domain.states import IllegalTransition, InstanceState, JobState, JobTrigger
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, InstanceTransition, Job, JobEvent, Output, Pool, Tool
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user, submit


@pytest.fixture
def plane(settings: Settings, clock: FakeClock):  # type: ignore[no-untyped-def]
    cp = build(settings, provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


def test_build_migrates_and_seeds_once(plane, settings: Settings, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    with transaction(plane.state.sessions) as s:
        slugs = set(s.scalars(select(Tool.slug)))
        assert {"sd15-txt2img", "sdxl-txt2img", "flux-txt2img", "sd15-img2img", "upscale-4x"} <= slugs
        assert s.get(Pool, "default") is not None
        s.delete(s.get(Tool, "flux-txt2img"))
    assert plane.admin_key is not None
    assert (settings.data_dir / "admin.key").stat().st_mode & 0o777 == 0o600
    again = build(settings, provider=None, clock=clock)  # a restart: no second admin, no re-seeding
    assert again.admin_key is None
    with transaction(again.state.sessions) as s:
        assert s.get(Tool, "flux-txt2img") is None
    again.state.engine.dispose()


def test_submit_assign_run_complete(plane, settings: Settings, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    sessions = plane.state.sessions
    with transaction(sessions) as s:
        user, _ = add_user(s, clock())
        inst, _ = add_instance(s, clock())
        job = submit(s, user, clock())
        job_id, inst_id = job.id, inst.id
    with transaction(sessions) as s:
        result = scheduler_pass(s, settings, clock())
    assert result.woken_instances == {inst_id} and result.changed_jobs == {job_id}
    with transaction(sessions) as s:
        job = s.get(Job, job_id)
        assert job.state == JobState.ASSIGNED and job.instance_id == inst_id and job.lease_token == 1
        assert job.attempt == 1
        assert s.get(Instance, inst_id).state == InstanceState.BUSY
        held = jobs_ops.leased_job(s, job_id, inst_id, 1)
        jobs_ops.mark_running(s, held, lease_seconds=30, now=clock())
        s.add(
            Output(
                id="o1",
                job_id=job_id,
                key=f"outputs/{job_id}/o1/x.png",
                filename="x.png",
                content_type="image/png",
                size=3,
                node_id="9",
                uploaded=True,
                created_at=clock(),
            )
        )
        s.flush()
        jobs_ops.complete_job(s, held, timings={"run_seconds": 1.0}, now=clock())
    with transaction(sessions) as s:
        job = s.get(Job, job_id)
        assert job.state == JobState.COMPLETED and job.progress == 1.0
        assert s.get(Instance, inst_id).state == InstanceState.IDLE
        states = [
            e.data["state"]
            for e in s.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
            if e.type == "state"
        ]
        assert states == ["QUEUED", "ASSIGNED", "RUNNING", "COMPLETED"]
        hist = [
            (t.from_state, t.to_state)
            for t in s.scalars(
                select(InstanceTransition)
                .where(InstanceTransition.instance_id == inst_id)
                .order_by(InstanceTransition.id)
            )
        ]
        assert hist == [("IDLE", "BUSY"), ("BUSY", "IDLE")]


def test_stale_fencing_token_is_rejected_and_changes_nothing(plane, settings, clock) -> None:  # type: ignore[no-untyped-def]
    sessions = plane.state.sessions
    with transaction(sessions) as s:
        user, _ = add_user(s, clock())
        a, _ = add_instance(s, clock())
        job_id, a_id = submit(s, user, clock()).id, a.id
    with transaction(sessions) as s:
        scheduler_pass(s, settings, clock())
    # Instance A goes silent; its lease is taken away and the job goes to B with a new token.
    clock.advance(settings.heartbeat_timeout_seconds + 1)
    with transaction(sessions) as s:
        b, _ = add_instance(s, clock())
        b_id = b.id
        scheduler_pass(s, settings, clock())  # A → UNHEALTHY, job requeued
        scheduler_pass(s, settings, clock())  # job → B
    with transaction(sessions) as s:
        job = s.get(Job, job_id)
        assert job.instance_id == b_id and job.lease_token == 2 and job.state == JobState.ASSIGNED
        assert s.get(Instance, a_id).state == InstanceState.UNHEALTHY
    with transaction(sessions) as s, pytest.raises(jobs_ops.StaleLease):
        jobs_ops.leased_job(s, job_id, a_id, 1)
    with transaction(sessions) as s, pytest.raises(jobs_ops.StaleLease):
        jobs_ops.leased_job(s, job_id, b_id, 1)  # right instance, old token
    with transaction(sessions) as s:
        assert s.get(Job, job_id).state == JobState.ASSIGNED


def test_expired_lease_requeues_then_fails_after_max_attempts(plane, settings, clock) -> None:  # type: ignore[no-untyped-def]
    sessions = plane.state.sessions
    with transaction(sessions) as s:
        user, _ = add_user(s, clock())
        add_instance(s, clock())
        job_id = submit(s, user, clock(), max_attempts=2).id
    for attempt in (1, 2):
        with transaction(sessions) as s:
            scheduler_pass(s, settings, clock())
            job = s.get(Job, job_id)
            assert job.state == JobState.ASSIGNED and job.attempt == attempt
            # keep the instance itself healthy: only the lease runs out
            for inst in s.scalars(select(Instance)):
                inst.last_heartbeat_at = clock() + timedelta(seconds=settings.lease_seconds + 5)
        clock.advance(settings.lease_seconds + 1)
        with transaction(sessions) as s:
            scheduler_pass(s, settings, clock())
    with transaction(sessions) as s:
        job = s.get(Job, job_id)
        assert job.state == JobState.FAILED
        assert "lease expired" in (job.error or "") and "attempt 2 of 2" in (job.error or "")


def test_retryable_failure_goes_back_to_queue(plane, settings, clock) -> None:  # type: ignore[no-untyped-def]
    with transaction(plane.state.sessions) as s:
        user, _ = add_user(s, clock())
        inst, _ = add_instance(s, clock())
        job = submit(s, user, clock(), max_attempts=2)
        scheduler_pass(s, settings, clock())
        jobs_ops.retry_or_fail(s, job, reason="ComfyUI went away", now=clock())
        assert job.state == JobState.QUEUED and job.instance_id is None
        assert inst.state == InstanceState.IDLE
        scheduler_pass(s, settings, clock())
        jobs_ops.retry_or_fail(s, job, reason="ComfyUI went away", now=clock())
        assert job.state == JobState.FAILED and "gave up after 2 attempts" in (job.error or "")


def test_terminal_job_refuses_further_transitions(plane, clock) -> None:  # type: ignore[no-untyped-def]
    with transaction(plane.state.sessions) as s:
        user, _ = add_user(s, clock())
        job = submit(s, user, clock())
        jobs_ops.cancel_job(s, job, now=clock())
        with pytest.raises(IllegalTransition):
            jobs_ops.requeue_job(s, job, trigger=JobTrigger.RETRY, reason="x", now=clock())
        assert job.state == JobState.CANCELLED


def test_jobs_only_go_to_instances_of_their_pool(plane, settings, clock) -> None:  # type: ignore[no-untyped-def]
    with transaction(plane.state.sessions) as s:
        s.add(
            Pool(
                name="other",
                provider="none",
                min_instances=0,
                max_instances=1,
                scale_up_queue_threshold=1,
                idle_minutes=1,
                slots_per_instance=1,
                created_at=clock(),
            )
        )
        s.flush()
        user, _ = add_user(s, clock())
        add_instance(s, clock(), pool="other")
        job = submit(s, user, clock())
        scheduler_pass(s, settings, clock())
        assert job.state == JobState.QUEUED


def test_provisioning_timeout_marks_instance_unhealthy(plane, settings, clock) -> None:  # type: ignore[no-untyped-def]
    with transaction(plane.state.sessions) as s:
        inst, _ = add_instance(s, clock(), state=InstanceState.PROVISIONING)
        inst.last_heartbeat_at = None
        clock.advance(settings.provisioning_timeout_seconds + 1)
        scheduler_pass(s, settings, clock())
        assert inst.state == InstanceState.UNHEALTHY and "not ready" in inst.state_reason
