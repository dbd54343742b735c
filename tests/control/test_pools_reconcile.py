"""The pool loop against the fake VastAI, in process: a crash between create and commit, orphans,
lost instances, scaling decisions turned into real provider calls, and nothing left running that
the database does not know."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.control.instances import move_instance, transitions
from swarmstation.control.scheduler import scheduler_pass
from swarmstation.domain.states import InstanceState, InstanceTrigger, JobState
from swarmstation.providers.vastai.provider import VastAIProvider
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, Job, Pool
from tests.conftest import FakeClock
from tests.fakes.vastai import FakeVastAI, make_offer
from tests.helpers import add_user, submit


class Monotonic:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def fake() -> Iterator[FakeVastAI]:
    with FakeVastAI(
        offers=[make_offer(i, dph_total=0.3 + i / 100) for i in range(1, 6)], consume_offers=False
    ) as f:
        yield f


@pytest.fixture
def plane(tmp_path: Path, clock: FakeClock, fake: FakeVastAI) -> Iterator[ControlPlane]:
    settings = Settings(data_dir=tmp_path / "data", provider="none", orphan_grace_seconds=60)
    provider = VastAIProvider(fake.api_key, base_url=fake.url, sleep=lambda _: None, label_lookup_interval=0)
    cp = build(settings, providers={"vastai": provider}, clock=clock)
    cp.pools.monotonic = Monotonic()
    with transaction(cp.state.sessions) as s:
        s.add(
            Pool(
                name="gpu",
                provider="vastai",
                min_instances=0,
                max_instances=3,
                scale_up_queue_threshold=1,
                idle_minutes=1,
                slots_per_instance=1,
                created_at=clock(),
                gpu_filters={"max_price_per_hour": 1.0},
                image="nvidia/cuda:12.4.1-runtime-ubuntu22.04",
                startup_script="",
                preload_models=[],
                target_wait_seconds=10,
                scale_cooldown_seconds=0,
            )
        )
    yield cp
    cp.state.engine.dispose()


def known_provider_ids(cp: ControlPlane) -> set[str]:
    with transaction(cp.state.sessions) as s:
        return {
            i.provider_instance_id
            for i in s.scalars(select(Instance).where(Instance.state != "TERMINATED"))
            if i.provider_instance_id
        }


def live_at_fake(fake: FakeVastAI) -> set[str]:
    return {str(i["id"]) for i in fake.instances()}


def test_demand_launches_rented_machines_and_idle_ones_go_back(plane, fake, clock) -> None:  # type: ignore[no-untyped-def]
    with transaction(plane.state.sessions) as s:
        user, _ = add_user(s, clock())
        for _ in range(20):
            job = submit(s, user, clock())
            job.pool = "gpu"
    plane.pools.tick()
    assert len(fake.instances()) == 3  # max_instances
    assert known_provider_ids(plane) == live_at_fake(fake)
    body = fake.create_bodies[0]
    assert body["image"] == "nvidia/cuda:12.4.1-runtime-ubuntu22.04" and body["label"].startswith(
        "swarmstation-"
    )
    assert "SWARMSTATION_WORKER_TOKEN" in body["env"] and "sst_" not in body["onstart"]
    plane.pools.tick()
    with transaction(plane.state.sessions) as s:
        prices = {i.price_per_hour for i in s.scalars(select(Instance))}
        assert prices <= {0.31, 0.32, 0.33} and None not in prices  # rates read back from the provider
        # everything finishes; the instances idle past the timeout and are drained, then destroyed
        for job in s.scalars(select(Job)):
            job.state = JobState.CANCELLED
        for inst in s.scalars(select(Instance)):
            move_instance(s, inst, InstanceTrigger.READY, "test: worker registered", clock())
    clock.advance(120)
    plane.pools.tick()
    plane.pools.tick()
    assert fake.instances() == [] and known_provider_ids(plane) == set()


def test_crash_between_create_and_commit_is_adopted_or_swept(plane, fake, clock) -> None:  # type: ignore[no-untyped-def]
    # Our row exists, the create went through, but the provider id was never recorded.
    with transaction(plane.state.sessions) as s:
        row = Instance(
            id="11111111-2222-3333-4444-555555555555",
            pool="gpu",
            provider="vastai",
            provider_instance_id=None,
            state=InstanceState.PROVISIONING,
            state_reason="launch",
            token_hash="x" * 64,
            created_at=clock(),
            state_changed_at=clock(),
            info={},
        )
        s.add(row)
    adopted = fake.add_instance(f"swarmstation-{row.id}", dph_total=0.4)
    # And a machine with our label prefix that no row knows: an orphan.
    orphan = fake.add_instance("swarmstation-99999999-0000-0000-0000-000000000000")
    plane.pools.reconcile(plane.pools.providers["vastai"])
    with transaction(plane.state.sessions) as s:
        assert s.get(Instance, row.id).provider_instance_id == str(adopted)
    assert str(orphan) in live_at_fake(fake)  # within the grace period: kept
    plane.pools.monotonic.t += 61  # type: ignore[attr-defined]
    plane.pools.reconcile(plane.pools.providers["vastai"])
    assert live_at_fake(fake) == {str(adopted)}


def test_lost_instance_requeues_its_job_and_nothing_unknown_remains(plane, fake, clock) -> None:  # type: ignore[no-untyped-def]
    with transaction(plane.state.sessions) as s:
        user, _ = add_user(s, clock())
        job = submit(s, user, clock())
        job.pool = "gpu"
    plane.pools.tick()
    with transaction(plane.state.sessions) as s:
        inst = s.scalars(select(Instance)).one()
        move_instance(s, inst, InstanceTrigger.READY, "test", clock())
        inst.last_heartbeat_at = clock()
        scheduler_pass(s, plane.state.settings, clock())
        job_id, provider_id = s.scalars(select(Job)).one().id, inst.provider_instance_id
        assert s.get(Job, job_id).state == JobState.ASSIGNED
    fake.vanish(int(provider_id))
    plane.pools.tick()  # lost → UNHEALTHY → destroyed (already gone) → TERMINATED; a new one launched
    with transaction(plane.state.sessions) as s:
        scheduler_pass(s, plane.state.settings, clock())
        lost = s.scalar(select(Instance).where(Instance.provider_instance_id == provider_id))
        assert lost.state == InstanceState.TERMINATED
        assert "the provider lost it" in [t.reason for t in transitions(s, lost.id)]
        job = s.get(Job, job_id)
        assert job.state == JobState.QUEUED and job.attempt == 1
    assert known_provider_ids(plane) == live_at_fake(fake)


def test_provider_storms_do_not_leave_strays(plane, fake, clock) -> None:  # type: ignore[no-untyped-def]
    fake.fail("search", 500, times=2)
    fake.fail("create", 429, times=3, body="json")
    fake.lose_create_answer(times=1)
    with transaction(plane.state.sessions) as s:
        user, _ = add_user(s, clock())
        for _ in range(3):
            submit(s, user, clock()).pool = "gpu"
    plane.pools.tick()
    plane.pools.tick()
    assert len(fake.instances()) == 3
    assert known_provider_ids(plane) == live_at_fake(
        fake
    )  # the lost answer was found by label, not rented twice


def test_instance_never_ready_is_replaced_on_another_machine(plane, fake, clock) -> None:  # type: ignore[no-untyped-def]
    with transaction(plane.state.sessions) as s:
        s.get(Pool, "gpu").min_instances = 1
    plane.pools.tick()
    first = fake.create_bodies[-1]
    plane.pools.tick()  # learns the host (machine) of the new instance
    clock.advance(plane.state.settings.provisioning_timeout_seconds + 1)
    with transaction(plane.state.sessions) as s:
        scheduler_pass(s, plane.state.settings, clock())
        stuck = s.scalars(select(Instance)).one()
        assert stuck.state == InstanceState.UNHEALTHY and "not ready" in stuck.state_reason
    plane.pools.tick()  # destroyed, and a replacement rented elsewhere
    creates = [c.path for c in fake.calls if c.endpoint == "create"]
    assert creates[0].endswith("/asks/1/") and not creates[-1].endswith("/asks/1/")
    assert first["label"] != fake.create_bodies[-1]["label"]
    assert known_provider_ids(plane) == live_at_fake(fake)
