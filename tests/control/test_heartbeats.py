"""control.heartbeats.record_heartbeat (SQLite and PostgreSQL) and the pure ComfyUI-down policy
of domain.heartbeats: what a heartbeat records, when an instance is taken out, and how running
jobs are sorted into cancel, stale and renewed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.control import jobs as jobs_ops
from swarmstation.control.heartbeats import Heartbeat, HeartbeatSettings, RunningJob, record_heartbeat
from swarmstation.control.scheduler import scheduler_pass
from swarmstation.domain.errors import Gone
from swarmstation.domain.heartbeats import comfyui_down_since, comfyui_down_too_long
from swarmstation.domain.states import InstanceState, JobState
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, Job
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user, submit

BEAT = HeartbeatSettings(heartbeat_timeout_seconds=20, lease_seconds=30, max_infra_requeues=3)


def test_comfyui_down_policy() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert comfyui_down_since(None, True, t0) is None
    since = comfyui_down_since(None, False, t0)
    assert since == t0.isoformat()
    assert comfyui_down_since(since, False, t0 + timedelta(seconds=5)) == since  # the clock keeps its start
    assert comfyui_down_since(since, True, t0 + timedelta(seconds=5)) is None
    assert not comfyui_down_too_long(None, t0, 20)
    assert not comfyui_down_too_long(since, t0 + timedelta(seconds=19.9), 20)
    assert comfyui_down_too_long(since, t0 + timedelta(seconds=20), 20)


@pytest.fixture
def plane(settings: Settings, clock: FakeClock) -> Iterator[ControlPlane]:
    cp = build(settings, provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


def _assigned(plane: ControlPlane, settings: Settings, clock: FakeClock, jobs: int) -> tuple[str, list[str]]:
    """An instance with `jobs` jobs assigned to it (slots permitting: one)."""
    with transaction(plane.state.sessions) as s:
        user, _ = add_user(s, clock())
        inst, _ = add_instance(s, clock())
        ids = [submit(s, user, clock()).id for _ in range(jobs)]
        inst_id = inst.id
    with transaction(plane.state.sessions) as s:
        scheduler_pass(s, settings, clock())
    return inst_id, ids


def test_running_jobs_are_renewed_stale_or_cancelled(
    plane: ControlPlane, settings: Settings, clock: FakeClock
) -> None:
    inst_id, (job_id,) = _assigned(plane, settings, clock, 1)
    clock.advance(10)
    with transaction(plane.state.sessions) as s:
        inst = s.get(Instance, inst_id)
        assert inst is not None
        beat = Heartbeat(
            running=[RunningJob(job_id, 1), RunningJob(job_id + "-gone", 1)],
            disk_free_bytes=123,
            models=["checkpoints/a.safetensors"],
        )
        answer = record_heartbeat(s, inst, beat, settings=BEAT, now=clock())
        assert (answer.cancel, answer.stale, answer.gone, answer.drain) == (
            [],
            [job_id + "-gone"],
            None,
            False,
        )
        job = s.get(Job, job_id)
        assert job is not None and job.lease_expires_at is not None
        assert job.lease_expires_at.replace(tzinfo=UTC) == clock() + timedelta(seconds=30)  # renewed
        assert inst.info["disk_free_bytes"] == 123 and inst.last_heartbeat_at == clock()
        # a token the lease has moved on from is stale
        answer = record_heartbeat(
            s, inst, Heartbeat(running=[RunningJob(job_id, 9)]), settings=BEAT, now=clock()
        )
        assert answer.stale == [job_id]
        jobs_ops.cancel_job(s, job, now=clock())
        answer = record_heartbeat(
            s, inst, Heartbeat(running=[RunningJob(job_id, 1)]), settings=BEAT, now=clock()
        )
        assert (answer.cancel, answer.stale) == ([job_id], [])


def test_comfyui_down_hands_back_unstarted_jobs_then_takes_the_instance_out(
    plane: ControlPlane, settings: Settings, clock: FakeClock
) -> None:
    inst_id, (job_id,) = _assigned(plane, settings, clock, 1)
    with transaction(plane.state.sessions) as s:
        inst = s.get(Instance, inst_id)
        assert inst is not None
        answer = record_heartbeat(s, inst, Heartbeat(comfyui_ok=False), settings=BEAT, now=clock())
        assert answer.requeued == [job_id] and answer.gone is None
        job = s.get(Job, job_id)
        assert job is not None and job.state == JobState.QUEUED
    clock.advance(20)
    with transaction(plane.state.sessions) as s:
        inst = s.get(Instance, inst_id)
        assert inst is not None
        answer = record_heartbeat(s, inst, Heartbeat(comfyui_ok=False), settings=BEAT, now=clock())
        assert answer.gone == "ComfyUI has not answered for 20s"
        assert inst.state == InstanceState.UNHEALTHY
    with transaction(plane.state.sessions) as s:
        inst = s.get(Instance, inst_id)
        assert inst is not None
        with pytest.raises(Gone, match="declared unhealthy"):
            record_heartbeat(s, inst, Heartbeat(), settings=BEAT, now=clock())
