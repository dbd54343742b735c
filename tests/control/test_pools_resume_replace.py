"""With pool_replace_overdue_resumes, a resume that does not come up is replaced after the bound
from the pool's own past resume times (domain.startup), not after the 240 s resume timeout: the
pool loop in process against the fake Vast.ai over HTTP, whose failed start answers success and
leaves the machine stopped (its GPU was rented out meanwhile), so the worker never registers."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane
from swarmstation.config import Settings
from swarmstation.control.instances import transitions
from swarmstation.control.pools import start_outcomes
from swarmstation.domain.startup import StartKind
from swarmstation.domain.states import InstanceState, JobState
from swarmstation.providers.vastai.provider import VastAIProvider
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, Job
from tests.conftest import FakeClock
from tests.fakes.vastai import FakeVastAI, make_offer
from tests.helpers import add_user, instance_by_provider_id, plane_with_pool, submit


@pytest.fixture
def fake() -> Iterator[FakeVastAI]:
    offers = [make_offer(300 + k, dph_total=0.25 + k / 100, dlperf=60.0) for k in range(3)]
    with FakeVastAI(offers=offers) as server:
        yield server


@pytest.fixture
def plane(tmp_path: Path, database_url: str, clock: FakeClock, fake: FakeVastAI) -> Iterator[ControlPlane]:
    provider = VastAIProvider(
        fake.api_key, base_url=fake.url, sleep=lambda _: None, rng=random.Random(7), label_lookup_attempts=1
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        provider="none",
        heartbeat_timeout_seconds=20,
        orphan_grace_seconds=0,
        pool_replace_overdue_resumes=True,
    )
    cp = plane_with_pool(
        settings,
        {"vastai": provider},
        clock,
        image="nvidia/cuda:12.4.1-runtime-ubuntu22.04",
        max_instances=2,
        max_parked=1,
    )
    yield cp
    cp.state.engine.dispose()
    provider.close()


def submit_job(cp: ControlPlane, clock: FakeClock) -> str:
    with transaction(cp.state.sessions) as s:
        user, _ = add_user(s, clock())
        job = submit(s, user, clock(), max_attempts=3)
        job.pool = "gpu"
        return job.id


def cancel(cp: ControlPlane, job_id: str) -> None:
    with transaction(cp.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.state = JobState.CANCELLED


def register(cp: ControlPlane, fake: FakeVastAI, provider_id: str) -> None:
    """What the machine's worker does once ComfyUI answers (a resumed one registers again)."""
    label = f"swarmstation-{instance_by_provider_id(cp, provider_id).id}"
    [body] = [b for b in fake.create_bodies if b["label"] == label]
    r = TestClient(cp.app).post(
        "/worker/v1/register",
        params={"ready": "true"},
        headers={"Authorization": f"Bearer {body['env']['SWARMSTATION_WORKER_TOKEN']}"},
        json={"comfyui_url": "http://127.0.0.1:9", "version": "test"},
    )
    assert r.status_code == 200, r.text


def state(cp: ControlPlane, provider_id: str) -> InstanceState:
    return instance_by_provider_id(cp, provider_id).state


def parked(cp: ControlPlane, fake: FakeVastAI, clock: FakeClock) -> str:
    """An instance launched for a job that was cancelled, ready, idle past idle_minutes, parked."""
    job_id = submit_job(cp, clock)
    cp.pools.tick()
    [inst] = fake.instances()
    provider_id = str(inst["id"])
    cancel(cp, job_id)
    register(cp, fake, provider_id)
    clock.advance(61)
    cp.pools.tick()
    assert state(cp, provider_id) == InstanceState.STOPPED
    return provider_id


def resume_for_a_job(cp: ControlPlane, fake: FakeVastAI, clock: FakeClock, provider_id: str) -> str:
    job_id = submit_job(cp, clock)
    starts = fake.starts(int(provider_id))
    cp.pools.tick()
    assert fake.starts(int(provider_id)) == starts + 1
    assert state(cp, provider_id) == InstanceState.PROVISIONING
    return job_id


def test_a_resume_that_never_heartbeats_is_replaced_after_the_fallback_bound(
    plane: ControlPlane, fake: FakeVastAI, clock: FakeClock
) -> None:
    provider_id = parked(plane, fake, clock)
    fake.fail_next_start()  # accepted; the machine stays stopped and no worker registers
    resume_for_a_job(plane, fake, clock, provider_id)
    fallback = plane.state.settings.resume_heartbeat_timeout_seconds
    assert fallback < plane.state.settings.resume_timeout_seconds
    clock.advance(fallback - 5)
    plane.pools.tick()
    assert len(fake.create_bodies) == 1  # not overdue yet: no replacement
    clock.advance(10)
    plane.pools.tick()  # overdue: a replacement is launched while the resume may still come up
    assert len(fake.create_bodies) == 2
    assert state(plane, provider_id) == InstanceState.PROVISIONING
    clock.advance(plane.state.settings.resume_timeout_seconds - fallback)
    plane.pools.tick()  # the resume timeout gives it up, and the job already has its replacement
    assert state(plane, provider_id) == InstanceState.TERMINATED
    assert len(fake.create_bodies) == 2


def test_the_bound_comes_from_the_pools_own_past_resumes(
    plane: ControlPlane, fake: FakeVastAI, clock: FakeClock
) -> None:
    provider_id = parked(plane, fake, clock)
    for _ in range(5):  # five resumes whose workers came back after 30 s
        job_id = resume_for_a_job(plane, fake, clock, provider_id)
        cancel(plane, job_id)
        clock.advance(30)
        register(plane, fake, provider_id)
        clock.advance(61)
        plane.pools.tick()
        assert state(plane, provider_id) == InstanceState.STOPPED
    with transaction(plane.state.sessions) as s:
        outcomes = start_outcomes(s, "gpu", clock())
    resumes = [o for o in outcomes if o.kind == StartKind.RESUME]
    assert [o.ready_after_seconds for o in resumes] == [30.0] * 5
    assert [o.ready for o in outcomes if o.kind == StartKind.LAUNCH] == [True]

    fake.fail_next_start()
    resume_for_a_job(plane, fake, clock, provider_id)
    clock.advance(85)  # the bound is 3 x 30 = 90 s, less than the 120 s fallback
    plane.pools.tick()
    assert len(fake.create_bodies) == 1
    clock.advance(10)
    plane.pools.tick()
    assert len(fake.create_bodies) == 2
    with transaction(plane.state.sessions) as s:
        inst = s.get(Instance, instance_by_provider_id(plane, provider_id).id)
        assert inst is not None and inst.state == InstanceState.PROVISIONING
        assert [t.to_state for t in transitions(s, inst.id)][-1] == InstanceState.PROVISIONING
