"""A failure of the machine is not the job's failure (issue 11, item 18), on SQLite and PostgreSQL.

Through the worker API: a fail report with `infrastructure: true` requeues the job without
spending an attempt (bounded), an instance that fails `infra_failure_threshold` jobs in a row so
is taken out at once (UNHEALTHY), and a heartbeat saying ComfyUI is down hands back what was
assigned but not taken and takes the instance out of routing until ComfyUI answers again. The
app's loops are not started: the test drives every scheduler pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.control.scheduler import scheduler_pass
from swarmstation.domain.breaker import breaker_trips, keeps_attempt
from swarmstation.domain.states import InstanceState, JobState
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, Job
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user, submit

Factory = Callable[..., tuple[ControlPlane, TestClient]]


@pytest.fixture
def make_plane(tmp_path: Path, database_url: str, clock: FakeClock) -> Iterator[Factory]:
    built: list[ControlPlane] = []

    def factory(**overrides: Any) -> tuple[ControlPlane, TestClient]:
        settings = Settings(
            data_dir=tmp_path / "data",
            database_url=database_url,
            provider="none",
            max_attempts=2,
            **overrides,
        )
        cp = build(settings, provider=None, clock=clock)
        built.append(cp)
        return cp, TestClient(cp.app)  # no lifespan: no background passes

    yield factory
    for cp in built:
        cp.state.engine.dispose()


def _setup(cp: ControlPlane, clock: FakeClock, jobs: int = 1) -> tuple[str, dict[str, str], list[str]]:
    with transaction(cp.state.sessions) as s:
        user, _ = add_user(s, clock())
        inst, token = add_instance(s, clock())
        ids = [submit(s, user, clock(), prompt=f"p{n}", max_attempts=2).id for n in range(jobs)]
        return inst.id, {"Authorization": f"Bearer {token}"}, ids


def _assign(cp: ControlPlane, clock: FakeClock) -> None:
    with transaction(cp.state.sessions) as s:
        scheduler_pass(s, cp.state.settings, clock())


def _job(cp: ControlPlane, job_id: str) -> Job:
    with transaction(cp.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        s.expunge(job)
        return job


def _instance(cp: ControlPlane, instance_id: str) -> Instance:
    with transaction(cp.state.sessions) as s:
        inst = s.get(Instance, instance_id)
        assert inst is not None
        s.expunge(inst)
        return inst


def _fail(api: TestClient, headers: dict[str, str], job: Job, **body: Any) -> None:
    r = api.post(
        f"/worker/v1/jobs/{job.id}/fail",
        headers=headers,
        json={"lease_token": job.lease_token, "error": "ComfyUI is not answering", **body},
    )
    assert r.status_code == 204, r.text


def test_an_infrastructure_failure_requeues_the_job_without_spending_an_attempt(make_plane, clock) -> None:  # type: ignore[no-untyped-def]
    cp, api = make_plane()
    inst_id, headers, (job_id,) = _setup(cp, clock)
    _assign(cp, clock)
    job = _job(cp, job_id)
    assert job.state == JobState.ASSIGNED and job.attempt == 1
    _fail(api, headers, job, retryable=True, infrastructure=True)
    job = _job(cp, job_id)
    assert job.state == JobState.QUEUED and job.instance_id is None
    assert job.attempt == 0 and job.infra_requeues == 1
    inst = _instance(cp, inst_id)
    assert inst.state == InstanceState.IDLE and inst.consecutive_infra_failures == 1


def test_the_breaker_takes_the_instance_out_after_n_machine_failures_in_a_row(make_plane, clock) -> None:  # type: ignore[no-untyped-def]
    cp, api = make_plane(infra_failure_threshold=3)
    inst_id, headers, (job_id,) = _setup(cp, clock)
    for n in range(1, 4):  # more failures than the job has attempts (2): none is spent
        _assign(cp, clock)
        job = _job(cp, job_id)
        assert job.state == JobState.ASSIGNED and job.instance_id == inst_id, n
        _fail(api, headers, job, retryable=True, infrastructure=True)
        assert _instance(cp, inst_id).state == (InstanceState.UNHEALTHY if n == 3 else InstanceState.IDLE)
    job = _job(cp, job_id)
    assert job.state == JobState.QUEUED and job.attempt == 0
    inst = _instance(cp, inst_id)
    assert "3 jobs in a row" in inst.state_reason
    # out of routing at once: nothing more is assigned to it, and its worker is told to stop
    _assign(cp, clock)
    assert _job(cp, job_id).state == JobState.QUEUED
    r = api.post("/worker/v1/heartbeat", headers=headers, json={"running": []})
    assert r.status_code == 410


def test_a_job_that_ends_on_the_machine_resets_the_count(make_plane, clock) -> None:  # type: ignore[no-untyped-def]
    cp, api = make_plane(infra_failure_threshold=3)
    inst_id, headers, ids = _setup(cp, clock, jobs=2)

    def assigned() -> Job:
        _assign(cp, clock)
        return next(j for j in (_job(cp, i) for i in ids) if j.state == JobState.ASSIGNED)

    for _ in range(2):
        _fail(api, headers, assigned(), retryable=True, infrastructure=True)
    assert _instance(cp, inst_id).consecutive_infra_failures == 2
    # a failure of the job's own (ComfyUI answered and refused it) shows the machine works
    refused = assigned()
    _fail(api, headers, refused, retryable=False)
    assert _job(cp, refused.id).state == JobState.FAILED
    assert _instance(cp, inst_id).consecutive_infra_failures == 0
    for _ in range(2):
        _fail(api, headers, assigned(), retryable=True, infrastructure=True)
    assert _instance(cp, inst_id).state == InstanceState.IDLE


def test_machine_requeues_are_bounded_then_attempts_count(make_plane, clock) -> None:  # type: ignore[no-untyped-def]
    cp, api = make_plane(infra_failure_threshold=100, max_infra_requeues=2)
    _, headers, (job_id,) = _setup(cp, clock)
    for _ in range(2):
        _assign(cp, clock)
        _fail(api, headers, _job(cp, job_id), retryable=True, infrastructure=True)
    assert _job(cp, job_id).attempt == 0
    for _ in range(2):  # past the bound: an ordinary retryable failure, 2 attempts
        _assign(cp, clock)
        _fail(api, headers, _job(cp, job_id), retryable=True, infrastructure=True)
    job = _job(cp, job_id)
    assert job.state == JobState.FAILED and "gave up after 2 attempts" in (job.error or "")


def test_a_heartbeat_with_comfyui_down_hands_back_unstarted_jobs_and_routes_nothing_there(  # type: ignore[no-untyped-def]
    make_plane, clock
) -> None:
    cp, api = make_plane()
    inst_id, headers, (job_id,) = _setup(cp, clock)
    _assign(cp, clock)
    assert _job(cp, job_id).state == JobState.ASSIGNED
    r = api.post("/worker/v1/heartbeat", headers=headers, json={"running": [], "comfyui_ok": False})
    assert r.status_code == 200, r.text
    job = _job(cp, job_id)
    assert job.state == JobState.QUEUED and job.attempt == 0 and job.instance_id is None
    _assign(cp, clock)
    assert _job(cp, job_id).state == JobState.QUEUED  # not routed to a worker without ComfyUI
    r = api.post("/worker/v1/heartbeat", headers=headers, json={"running": [], "comfyui_ok": True})
    assert r.status_code == 200, r.text
    _assign(cp, clock)
    job = _job(cp, job_id)
    assert job.state == JobState.ASSIGNED and job.instance_id == inst_id and job.attempt == 1


def test_a_job_the_worker_has_taken_is_not_handed_back(make_plane, clock) -> None:  # type: ignore[no-untyped-def]
    cp, api = make_plane()
    _, headers, (job_id,) = _setup(cp, clock)
    _assign(cp, clock)
    job = _job(cp, job_id)
    running = [{"job_id": job_id, "lease_token": job.lease_token}]
    r = api.post("/worker/v1/heartbeat", headers=headers, json={"running": running, "comfyui_ok": False})
    assert r.status_code == 200 and r.json()["stale"] == []
    assert _job(cp, job_id).state == JobState.ASSIGNED  # its own report will say how it ended


def test_breaker_policy() -> None:
    assert not breaker_trips(2, 3)
    assert breaker_trips(3, 3) and breaker_trips(4, 3)
    assert keeps_attempt(0, 10) and keeps_attempt(9, 10)
    assert not keeps_attempt(10, 10) and not keeps_attempt(0, 0)
