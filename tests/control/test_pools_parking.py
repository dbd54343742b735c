"""Parking in the real control plane, in process: the pool loop parks idle instances (STOPPED here,
stopped at the provider with their disk), resumes them before it launches, gives a resume up when
the start fails or the worker does not come back in time, retries a lost stop, destroys instances
parked too long, and never takes a parked instance's silence for a dead one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from swarmstation.api.app import ControlPlane
from swarmstation.config import Settings
from swarmstation.control.instances import transitions
from swarmstation.control.scheduler import scheduler_pass
from swarmstation.domain.states import InstanceState, JobState
from swarmstation.providers.base import LaunchSpec, ProviderError, ProviderInstance
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, Job, Pool
from tests.conftest import FakeClock
from tests.helpers import add_user, instance_by_provider_id, plane_with_pool, submit


class RecordingProvider:
    """An in-memory provider that records every call; a test makes its stops or starts fail."""

    name = "test"

    def __init__(self) -> None:
        self.instances: dict[str, ProviderInstance] = {}
        self.specs: dict[str, LaunchSpec] = {}  # by provider id
        self.calls: list[tuple[str, str]] = []
        self.fail_start: str | None = None  # the error the next starts raise
        self.fail_stop: str | None = None

    def launch(self, spec: LaunchSpec) -> str:
        provider_id = f"p{len(self.specs) + 1}"
        self.calls.append(("launch", provider_id))
        self.specs[provider_id] = spec
        self.instances[provider_id] = ProviderInstance(provider_id, spec.instance_id, True, 0.5)
        return provider_id

    def list(self) -> list[ProviderInstance]:
        return list(self.instances.values())

    def destroy(self, provider_id: str) -> None:
        self.calls.append(("destroy", provider_id))
        self.instances.pop(provider_id, None)

    def stop(self, provider_id: str) -> None:
        self.calls.append(("stop", provider_id))
        if self.fail_stop is not None:
            raise ProviderError(self.fail_stop)
        self.instances[provider_id] = replace(self.instances[provider_id], stopped=True, status="stopped")

    def start(self, provider_id: str) -> None:
        self.calls.append(("start", provider_id))
        if self.fail_start is not None:
            raise ProviderError(self.fail_start)
        self.instances[provider_id] = replace(self.instances[provider_id], stopped=False, status="running")

    def count(self, what: str) -> int:
        return sum(1 for call, _ in self.calls if call == what)


@pytest.fixture
def provider() -> RecordingProvider:
    return RecordingProvider()


@pytest.fixture
def plane(
    tmp_path: Path, database_url: str, clock: FakeClock, provider: RecordingProvider
) -> Iterator[ControlPlane]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        provider="none",
        heartbeat_timeout_seconds=20,
        orphan_grace_seconds=0,
    )
    cp = plane_with_pool(
        settings, {"test": provider}, clock, max_instances=2, max_parked=1, park_max_hours=24
    )
    yield cp
    cp.state.engine.dispose()


def instance_row(cp: ControlPlane, provider_id: str = "p1") -> Instance:
    return instance_by_provider_id(cp, provider_id)


def submit_job(cp: ControlPlane, clock: FakeClock) -> str:
    with transaction(cp.state.sessions) as s:
        user, _ = add_user(s, clock())
        job = submit(s, user, clock())
        job.pool = "gpu"
        return job.id


def register(cp: ControlPlane, token: str) -> dict[str, Any]:
    """What a (re)started worker does: register while ComfyUI starts, then once it answers."""
    worker = TestClient(cp.app)  # no lifespan: the test runs the loops by hand
    headers = {"Authorization": f"Bearer {token}"}
    body = {"comfyui_url": "http://127.0.0.1:9", "version": "test"}
    r = worker.post("/worker/v1/register", params={"ready": "false"}, headers=headers, json=body)
    assert r.status_code == 200, r.text
    assert instance_row(cp).state == InstanceState.INITIALIZING
    r = worker.post("/worker/v1/register", params={"ready": "true"}, headers=headers, json=body)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def cancel_all(cp: ControlPlane) -> None:
    with transaction(cp.state.sessions) as s:
        for job in s.scalars(select(Job)):
            job.state = JobState.CANCELLED


def sweep(cp: ControlPlane, clock: FakeClock) -> None:
    """A scheduler pass with its health checks."""
    with transaction(cp.state.sessions) as s:
        scheduler_pass(s, cp.state.settings, clock())


def parked_instance(cp: ControlPlane, provider: RecordingProvider, clock: FakeClock) -> Instance:
    """One instance launched for a job, ready, idle past idle_minutes, and parked."""
    submit_job(cp, clock)
    cp.pools.tick()
    assert provider.calls == [("launch", "p1")]
    cancel_all(cp)
    register(cp, provider.specs["p1"].worker_token)
    clock.advance(61)
    cp.pools.tick()
    return instance_row(cp)


def test_idle_instance_is_parked_then_resumed_instead_of_a_launch(
    plane: ControlPlane, provider: RecordingProvider, clock: FakeClock
) -> None:
    parked = parked_instance(plane, provider, clock)
    assert parked.state == InstanceState.STOPPED and parked.state_reason.startswith("parked: idle for")
    assert parked.parked_at == clock() and parked.idle_since is None and parked.comfyui_url is None
    assert provider.calls[-1] == ("stop", "p1") and provider.instances["p1"].stopped
    plane.pools.tick()  # parked and stopped: nothing to do
    assert provider.count("stop") == 1 and instance_row(plane).state == InstanceState.STOPPED

    # demand again: the scheduler gives a parked instance nothing, and the pool loop starts it
    # again instead of renting a machine
    job_id = submit_job(plane, clock)
    sweep(plane, clock)
    with transaction(plane.state.sessions) as s:
        assert s.get(Job, job_id).state == JobState.QUEUED
    clock.advance(5)
    plane.pools.tick()
    resumed = instance_row(plane)
    assert provider.calls[-1] == ("start", "p1") and provider.count("launch") == 1
    assert resumed.state == InstanceState.PROVISIONING and resumed.state_reason.startswith("resuming")
    assert resumed.parked_at is None and resumed.info["resumed_at"] == clock().isoformat()
    with transaction(plane.state.sessions) as s:
        assert s.get(Pool, "gpu").last_scale_up_at == clock()  # a resume is a scale-up (cooldown)

    # its worker comes back with the same token, as a new one would, and gets the job
    clock.advance(30)
    register(plane, provider.specs["p1"].worker_token)
    back = instance_row(plane)
    assert back.state == InstanceState.IDLE and back.idle_since == clock()
    assert back.comfyui_url == "http://127.0.0.1:9"
    sweep(plane, clock)
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job.state == JobState.ASSIGNED and job.instance_id == back.id
        states = [t.to_state for t in transitions(s, back.id)]
    assert states == [
        "PROVISIONING",
        "INITIALIZING",
        "IDLE",
        "STOPPED",
        "PROVISIONING",
        "INITIALIZING",
        "IDLE",
        "BUSY",
    ]


def test_a_parked_instance_is_not_taken_for_dead_without_heartbeats(
    plane: ControlPlane, provider: RecordingProvider, clock: FakeClock
) -> None:
    parked_instance(plane, provider, clock)
    for _ in range(3):
        clock.advance(10 * plane.state.settings.heartbeat_timeout_seconds)
        sweep(plane, clock)
        plane.pools.tick()
    assert instance_row(plane).state == InstanceState.STOPPED
    assert provider.count("destroy") == 0

    # past park_max_hours it is drained; while it waits to be destroyed it is not "unhealthy" either
    clock.advance(24 * 3600)
    plane.pools.scale(provider)
    drained = instance_row(plane)
    assert drained.state == InstanceState.DRAINING and "parked for more than 24h" in drained.state_reason
    sweep(plane, clock)
    assert instance_row(plane).state == InstanceState.DRAINING
    plane.pools.tick()
    gone = instance_row(plane)
    assert gone.state == InstanceState.TERMINATED and gone.state_reason == "drained, destroyed"
    assert provider.calls[-1] == ("destroy", "p1") and provider.instances == {}
    assert provider.count("launch") == 1  # nothing queued: no replacement


def test_more_parked_than_max_parked_are_destroyed(
    plane: ControlPlane, provider: RecordingProvider, clock: FakeClock
) -> None:
    parked_instance(plane, provider, clock)
    with transaction(plane.state.sessions) as s:
        s.get(Pool, "gpu").max_parked = 0
    plane.pools.tick()
    assert instance_row(plane).state == InstanceState.DRAINING
    plane.pools.tick()
    assert instance_row(plane).state == InstanceState.TERMINATED and provider.instances == {}


def test_a_resumed_instance_is_judged_as_a_new_one_until_it_registers(
    plane: ControlPlane, provider: RecordingProvider, clock: FakeClock
) -> None:
    """Its heartbeats from before the park are old news: between the start and the worker's
    registration (bootstrap stages reported, ComfyUI starting) it is not "silent"."""
    parked_instance(plane, provider, clock)
    clock.advance(3600)
    submit_job(plane, clock)
    plane.pools.tick()
    assert instance_row(plane).state == InstanceState.PROVISIONING
    worker = TestClient(plane.app)
    headers = {"Authorization": f"Bearer {provider.specs['p1'].worker_token}"}
    r = worker.post("/worker/v1/bootstrap", headers=headers, json={"stage": "install", "ok": True})
    assert r.status_code == 204 and instance_row(plane).state == InstanceState.INITIALIZING
    clock.advance(2 * plane.state.settings.heartbeat_timeout_seconds)  # within the resume timeout
    sweep(plane, clock)
    plane.pools.tick()
    assert instance_row(plane).state == InstanceState.INITIALIZING
    register(plane, provider.specs["p1"].worker_token)
    assert instance_row(plane).state == InstanceState.IDLE
    clock.advance(plane.state.settings.resume_timeout_seconds)  # ready: the resume timeout is over
    r = worker.post("/worker/v1/heartbeat", headers=headers, json={"running": []})
    assert r.status_code == 200 and r.json()["drain"] is False
    sweep(plane, clock)
    plane.pools.tick()
    assert instance_row(plane).state in (InstanceState.IDLE, InstanceState.BUSY)


def test_a_failed_start_gives_the_resume_up_and_a_launch_follows(
    plane: ControlPlane, provider: RecordingProvider, clock: FakeClock
) -> None:
    parked_instance(plane, provider, clock)
    provider.fail_start = "Vast.ai set state running on 1: no_gpu - the GPU was rented out"
    submit_job(plane, clock)
    plane.pools.tick()
    failed = instance_row(plane)
    assert provider.calls[-1] == ("start", "p1") and provider.count("launch") == 1
    assert failed.state == InstanceState.UNHEALTHY and failed.state_reason.startswith("resume failed:")
    plane.pools.tick()  # destroyed, and the queued job gets a new machine
    assert instance_row(plane).state == InstanceState.TERMINATED
    assert ("destroy", "p1") in provider.calls and provider.calls[-1] == ("launch", "p2")
    with transaction(plane.state.sessions) as s:
        fresh = s.scalar(select(Instance).where(Instance.provider_instance_id == "p2"))
        assert fresh is not None and fresh.state == InstanceState.PROVISIONING


def test_a_resume_that_never_comes_up_times_out_and_a_launch_follows(
    plane: ControlPlane, provider: RecordingProvider, clock: FakeClock
) -> None:
    parked_instance(plane, provider, clock)
    submit_job(plane, clock)
    plane.pools.tick()  # started at the provider; its worker never registers (no GPU after all)
    assert provider.calls[-1] == ("start", "p1")
    timeout = plane.state.settings.resume_timeout_seconds
    clock.advance(timeout - 1)
    sweep(plane, clock)
    plane.pools.tick()
    assert instance_row(plane).state == InstanceState.PROVISIONING and provider.count("launch") == 1
    clock.advance(2)
    plane.pools.tick()  # given up, destroyed and replaced in one tick
    given_up = instance_row(plane)
    assert given_up.state == InstanceState.TERMINATED
    with transaction(plane.state.sessions) as s:
        reasons = [t.reason for t in transitions(s, given_up.id)]
    assert f"not ready within {timeout:g}s of its resume" in reasons
    assert provider.calls[-2:] == [("destroy", "p1"), ("launch", "p2")]


def test_a_lost_stop_is_sent_again(
    plane: ControlPlane, provider: RecordingProvider, clock: FakeClock
) -> None:
    provider.fail_stop = "Vast.ai PUT /api/v0/instances/1/: no answer (ReadTimeout)"
    parked = parked_instance(plane, provider, clock)
    assert parked.state == InstanceState.STOPPED  # parked here whatever the provider answered
    assert provider.count("stop") == 1 and not provider.instances["p1"].stopped
    # its worker still runs meanwhile: the heartbeat tells it to take no work
    worker = TestClient(plane.app)
    headers = {"Authorization": f"Bearer {provider.specs['p1'].worker_token}"}
    r = worker.post("/worker/v1/heartbeat", headers=headers, json={"running": []})
    assert r.status_code == 200 and r.json()["drain"] is True
    plane.pools.tick()  # reconcile: still running there, so stopped again (and failing again)
    assert provider.count("stop") == 2
    provider.fail_stop = None
    plane.pools.tick()
    assert provider.count("stop") == 3 and provider.instances["p1"].stopped
    plane.pools.tick()
    assert provider.count("stop") == 3 and instance_row(plane).state == InstanceState.STOPPED


def test_a_parked_instance_the_provider_lost_is_terminated_and_never_an_orphan(
    plane: ControlPlane, provider: RecordingProvider, clock: FakeClock
) -> None:
    parked_instance(plane, provider, clock)
    plane.pools.tick()  # orphan_grace_seconds is 0: an unknown instance would be destroyed now
    assert provider.count("destroy") == 0 and "p1" in provider.instances
    del provider.instances["p1"]
    plane.pools.tick()
    lost = instance_row(plane)
    assert lost.state == InstanceState.TERMINATED
    with transaction(plane.state.sessions) as s:
        assert "the provider lost it" in [t.reason for t in transitions(s, lost.id)]


def test_a_busy_instance_is_never_parked(
    plane: ControlPlane, provider: RecordingProvider, clock: FakeClock
) -> None:
    """The policy plans on a snapshot; a job assigned since then keeps the instance running."""
    from swarmstation.control.pools import park

    submit_job(plane, clock)
    plane.pools.tick()
    register(plane, provider.specs["p1"].worker_token)
    sweep(plane, clock)  # the job is assigned: BUSY
    with plane.state.sessions() as s:  # never committed
        inst = s.scalar(select(Instance).where(Instance.provider_instance_id == "p1"))
        assert inst is not None and inst.state == InstanceState.BUSY
        assert park(s, inst, "test", clock()) is False
        inst.state = InstanceState.IDLE  # as a stale snapshot would have it, with the job still leased
        assert park(s, inst, "test", clock()) is False
        assert inst.parked_at is None
    assert instance_row(plane).state == InstanceState.BUSY
