"""Every state change of a job or an instance row records its trigger (SQLite and PostgreSQL),
and a refused one changes neither the row nor its history."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from swarmstation.api.app import build
from swarmstation.config import Settings
from swarmstation.control import jobs as jobs_ops
from swarmstation.control.instances import move_instance
from swarmstation.control.scheduler import scheduler_pass
from swarmstation.domain.states import IllegalTransition, InstanceState, InstanceTrigger, JobState, JobTrigger
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, InstanceTransition, Job, JobEvent
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user, submit


@pytest.fixture
def plane(settings: Settings, clock: FakeClock):  # type: ignore[no-untyped-def]
    cp = build(settings, provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


def test_a_job_back_in_the_queue_says_why(plane, settings: Settings, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    sessions = plane.state.sessions
    with transaction(sessions) as s:
        user, _ = add_user(s, clock())
        inst, _ = add_instance(s, clock())
        job_id, inst_id = submit(s, user, clock(), max_attempts=3).id, inst.id
    with transaction(sessions) as s:
        scheduler_pass(s, settings, clock())
    clock.advance(settings.lease_seconds + 1)  # no report: the lease runs out
    with transaction(sessions) as s:
        s.get(Instance, inst_id).last_heartbeat_at = clock()  # the instance itself is fine
        scheduler_pass(s, settings, clock())
    with transaction(sessions) as s:
        job = s.get(Job, job_id)
        assert isinstance(job.state, JobState)  # an enum column: no casts
        events = list(s.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))
        told = [(e.data["state"], e.trigger) for e in events if e.type == "state"]
        assert told[:3] == [
            ("QUEUED", None),
            ("ASSIGNED", JobTrigger.ASSIGN),
            ("QUEUED", JobTrigger.LEASE_EXPIRED),
        ]
        assert events[2].data["trigger"] == "LEASE_EXPIRED"  # on the event stream too
        moves = list(
            s.scalars(
                select(InstanceTransition)
                .where(InstanceTransition.instance_id == inst_id)
                .order_by(InstanceTransition.id)
            )
        )
        told_moves = [(m.to_state, m.trigger) for m in moves]
        # busy with the job, idle when it went back, then busy with it again
        assert told_moves[-3:] == [
            (InstanceState.BUSY, InstanceTrigger.ASSIGN),
            (InstanceState.IDLE, InstanceTrigger.RELEASE),
            (InstanceState.BUSY, InstanceTrigger.ASSIGN),
        ]


def test_a_refused_change_leaves_the_row_and_its_history(plane, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    sessions = plane.state.sessions
    with transaction(sessions) as s:
        user, _ = add_user(s, clock())
        inst, _ = add_instance(s, clock())
        job = submit(s, user, clock())
        jobs_ops.cancel_job(s, job, now=clock())
        job_id, inst_id = job.id, inst.id
    with transaction(sessions) as s:
        job = s.get(Job, job_id)
        before = s.scalar(select(JobEvent.id).where(JobEvent.job_id == job_id).order_by(JobEvent.id.desc()))
        with pytest.raises(IllegalTransition, match="CANCELLED"):
            jobs_ops.requeue_job(s, job, trigger=JobTrigger.RETRY, reason="x", now=clock() + timedelta(1))
        assert job.state == JobState.CANCELLED
        inst = s.get(Instance, inst_id)
        state, reason = inst.state, inst.state_reason
        with pytest.raises(IllegalTransition, match="RESUME"):
            move_instance(s, inst, InstanceTrigger.RESUME, "not parked", clock())
        assert (inst.state, inst.state_reason) == (state, reason)
    with transaction(sessions) as s:
        assert s.get(Job, job_id).state == JobState.CANCELLED
        last = s.scalar(select(JobEvent.id).where(JobEvent.job_id == job_id).order_by(JobEvent.id.desc()))
        assert last == before
        assert not list(
            s.scalars(select(InstanceTransition).where(InstanceTransition.reason == "not parked"))
        )
