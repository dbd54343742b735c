"""Target utilisation end to end: the busy-slot measure read from jobs, the pool loop draining an
idle surplus that `idle_minutes` alone would keep, and the settings over the API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.control.pools import busy_slots_recent
from swarmstation.domain.states import InstanceState, JobState
from swarmstation.providers.base import LaunchSpec, ProviderInstance
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, Job, Pool, User
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user, submit


class StubProvider:
    """The pool loop's provider; these tests only drain, so it is never asked to launch."""

    name = "test"

    def launch(self, spec: LaunchSpec) -> str:
        raise AssertionError(f"unexpected launch for pool {spec.pool}")

    def list(self) -> list[ProviderInstance]:
        return []

    def destroy(self, provider_id: str) -> None:
        pass


@pytest.fixture
def db_plane(settings: Settings, clock: FakeClock) -> Iterator[ControlPlane]:
    """A control plane on each database backend (the `settings` fixture's `database_url`)."""
    cp = build(settings, provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


def add_pool(s: Session, now: datetime, *, target_utilisation: float | None) -> Pool:
    pool = Pool(
        name="util",
        provider="test",
        min_instances=0,
        max_instances=4,
        scale_up_queue_threshold=1,
        idle_minutes=30,
        slots_per_instance=1,
        created_at=now,
        gpu_filters={},
        image="",
        startup_script="",
        preload_models=[],
        target_wait_seconds=60,
        scale_cooldown_seconds=0,
        target_utilisation=target_utilisation,
        utilisation_grace_seconds=60,
    )
    s.add(pool)
    s.flush()
    return pool


def add_job(
    s: Session,
    user: User,
    now: datetime,
    *,
    assigned: float | None,
    finished: float | None,
    state: JobState = JobState.COMPLETED,
    instance: Instance | None = None,
    pool: str = "util",
    backend: str = "pool",
) -> Job:
    """A job that held a slot from `assigned` to `finished` (seconds relative to `now`)."""
    job = submit(s, user, now - timedelta(hours=1))
    job.pool, job.backend, job.state = pool, backend, state
    job.instance_id = instance.id if instance is not None else None
    job.assigned_at = now + timedelta(seconds=assigned) if assigned is not None else None
    job.started_at = job.assigned_at + timedelta(seconds=1) if job.assigned_at is not None else None
    job.finished_at = now + timedelta(seconds=finished) if finished is not None else None
    return job


def test_busy_slots_recent_is_the_mean_overlap_with_the_window(
    db_plane: ControlPlane, clock: FakeClock
) -> None:
    now = clock()
    with transaction(db_plane.state.sessions) as s:
        add_pool(s, now, target_utilisation=0.5)
        user, _ = add_user(s, now)
        inst, _ = add_instance(s, now, pool="util")
        add_job(s, user, now, assigned=-300, finished=-200, instance=inst)  # inside: 100 s
        add_job(s, user, now, assigned=-700, finished=-500, instance=inst)  # across the start: 100 s
        add_job(s, user, now, assigned=-120, finished=None, state=JobState.RUNNING, instance=inst)  # 120 s
        add_job(s, user, now, assigned=-1000, finished=-700, instance=inst)  # before the window
        # ComfyUI Deploy runs use none of our slots (an instance id here so only the backend differs)
        add_job(s, user, now, assigned=-300, finished=-100, instance=inst, backend="comfydeploy")
        # requeued: its assigned_at is from the lost attempt, and it holds no instance now
        add_job(s, user, now, assigned=-400, finished=None, state=JobState.QUEUED)
        add_job(s, user, now, assigned=-300, finished=-100, instance=inst, pool="default")  # another pool
    with transaction(db_plane.state.sessions) as s:
        assert busy_slots_recent(s, "util", now) == pytest.approx((100 + 100 + 120) / 600)
        # a shorter window: only the running job's last 60 s and nothing else
        assert busy_slots_recent(s, "util", now, window_seconds=60) == pytest.approx(1.0)
        assert busy_slots_recent(s, "default", now) == pytest.approx(200 / 600)


@pytest.mark.parametrize(
    ("target", "work", "draining"),
    [
        (0.5, "light", 1),  # 0.1 busy slots need one instance at 50%: the other is surplus
        (None, "light", 0),  # no target: both idle for less than idle_minutes, both kept
        (0.5, "heavy", 0),  # 1.0 busy slots need two instances at 50%: nothing is surplus
    ],
)
def test_scale_drains_idle_surplus_only_with_a_target_utilisation(
    db_plane: ControlPlane, clock: FakeClock, target: float | None, work: str, draining: int
) -> None:
    now = clock()
    idle_since = now - timedelta(minutes=5)  # past the 60 s grace, short of idle_minutes (30)
    with transaction(db_plane.state.sessions) as s:
        add_pool(s, now, target_utilisation=target)
        user, _ = add_user(s, now)
        instances = [add_instance(s, now - timedelta(hours=1), pool="util")[0] for _ in range(2)]
        for inst in instances:
            inst.idle_since = idle_since
        if work == "light":  # one minute of work in the last ten
            add_job(s, user, now, assigned=-400, finished=-340, instance=instances[0])
        else:  # both instances busy for the first half of the window
            for inst in instances:
                add_job(s, user, now, assigned=-900, finished=-300, instance=inst)
    db_plane.pools.scale(StubProvider())
    with transaction(db_plane.state.sessions) as s:
        states = sorted(s.scalars(select(Instance.state).where(Instance.pool == "util")))
        reasons = [
            i.state_reason
            for i in s.scalars(select(Instance).where(Instance.state == InstanceState.DRAINING))
        ]
    assert states.count(InstanceState.DRAINING) == draining, states
    assert states.count(InstanceState.IDLE) == 2 - draining, states
    assert all("surplus" in r for r in reasons), reasons


def test_pool_target_utilisation_over_the_api(api: TestClient, admin: dict[str, str]) -> None:
    r = api.post("/v1/admin/pools", headers=admin, json={"name": "plain"})
    assert r.status_code == 201, r.text
    assert r.json()["target_utilisation"] is None and r.json()["utilisation_grace_seconds"] == 60

    body = {"name": "busy", "target_utilisation": 0.7, "utilisation_grace_seconds": 90}
    r = api.post("/v1/admin/pools", headers=admin, json=body)
    assert r.status_code == 201, r.text
    assert r.json()["target_utilisation"] == 0.7 and r.json()["utilisation_grace_seconds"] == 90
    got = api.get("/v1/admin/pools/busy", headers=admin).json()
    assert got["target_utilisation"] == 0.7 and got["utilisation_grace_seconds"] == 90

    r = api.patch(
        "/v1/admin/pools/busy", headers=admin, json={"target_utilisation": 1, "utilisation_grace_seconds": 0}
    )
    assert r.status_code == 200, r.text
    got = api.get("/v1/admin/pools/busy", headers=admin).json()
    assert got["target_utilisation"] == 1 and got["utilisation_grace_seconds"] == 0
    r = api.patch("/v1/admin/pools/busy", headers=admin, json={"target_utilisation": None})
    assert r.status_code == 200 and r.json()["target_utilisation"] is None  # null turns it off
    assert api.get("/v1/admin/pools/busy", headers=admin).json()["utilisation_grace_seconds"] == 0

    bad = [
        ({"target_utilisation": 0}, "target_utilisation", "greater than 0"),
        ({"target_utilisation": 1.5}, "target_utilisation", "less than or equal to 1"),
        ({"target_utilisation": -0.2}, "target_utilisation", "greater than 0"),
        ({"utilisation_grace_seconds": -1}, "utilisation_grace_seconds", "greater than or equal to 0"),
        ({"utilisation_grace_seconds": 86_401}, "utilisation_grace_seconds", "less than or equal to 86400"),
        ({"utilisation_grace_seconds": None}, "utilisation_grace_seconds", "must not be null"),
    ]
    for i, (fields, name, why) in enumerate(bad):
        for r in (
            api.post("/v1/admin/pools", headers=admin, json={"name": f"bad{i}", **fields}),
            api.patch("/v1/admin/pools/busy", headers=admin, json=fields),
        ):
            assert r.status_code == 422, (fields, r.text)
            assert name in r.json()["detail"] and why in r.json()["detail"], (fields, r.text)
    assert api.get("/v1/admin/pools/bad0", headers=admin).status_code == 404
    got = api.get("/v1/admin/pools/busy", headers=admin).json()
    assert got["target_utilisation"] is None and got["utilisation_grace_seconds"] == 0  # unchanged
