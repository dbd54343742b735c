"""Attached (static) instances: the scaling policy counts them and never drains or parks them, the
pool loop never launches, destroys, parks or replaces them, an unhealthy one comes back when its
worker heartbeats healthy, and the admin API attaches, detaches and rotates tokens (old and
detached tokens are refused at once, even when the identity was cached)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane
from swarmstation.api.deps import InstanceIdentity
from swarmstation.auth import hash_secret
from swarmstation.config import Settings
from swarmstation.control.instances import move_instance
from swarmstation.control.jobs import assign_job
from swarmstation.domain.scaling import (
    Drain,
    InstanceView,
    Launch,
    Park,
    PoolConfig,
    PoolSnapshot,
    plan_scaling,
)
from swarmstation.domain.states import InstanceState, InstanceTrigger
from swarmstation.providers.base import LaunchSpec, ProviderInstance
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, Job, Pool
from tests.conftest import FakeClock
from tests.helpers import add_user, heartbeat_at, plane_with_pool, submit

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POOL = PoolConfig("gpu", min_instances=1, max_instances=3, scale_up_queue_threshold=1, idle_minutes=5)


def view(instance_id: str, **fields: Any) -> InstanceView:
    base = InstanceView(instance_id, InstanceState.IDLE, 0, NOW - timedelta(hours=5), NOW - timedelta(days=9))
    return replace(base, **fields)


# -- the policy ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pool", "instances", "snapshot", "expected"),
    [
        pytest.param(
            POOL, [view("s", static=True)], PoolSnapshot(0), [], id="static-meets-min-so-nothing-is-rented"
        ),
        pytest.param(
            replace(POOL, min_instances=0),
            [view("s", static=True)],
            PoolSnapshot(0),
            [],
            id="long-idle-static-is-not-drained",
        ),
        pytest.param(
            replace(POOL, min_instances=0, max_parked=2),
            [view("s", static=True)],
            PoolSnapshot(0),
            [],
            id="long-idle-static-is-not-parked",
        ),
        pytest.param(
            replace(POOL, max_lifetime_hours=1),
            [view("s", static=True)],
            PoolSnapshot(0),
            [],
            id="static-past-max-lifetime-is-not-drained-or-replaced",
        ),
        pytest.param(
            replace(POOL, min_instances=0, target_utilisation=0.5),
            [view("s", static=True)],
            PoolSnapshot(0, busy_slots_recent=0.0),
            [],
            id="static-is-no-utilisation-surplus",
        ),
        pytest.param(
            POOL,
            [view("s", static=True), view("r")],
            PoolSnapshot(0),
            [Drain("r", "idle for more than 5 minutes")],
            id="rented-burst-drains-and-the-static-stays",
        ),
        pytest.param(
            POOL,
            [view("s", state=InstanceState.BUSY, static=True, active_jobs=1, idle_since=None)],
            PoolSnapshot(queued_jobs=3, expected_job_seconds=60, new_instance_price=1.0),
            [Launch("gpu", "3 jobs queued; the pool can start 0 within 60s")] * 2,
            id="queue-beyond-the-static-rents-burst",
        ),
        pytest.param(
            replace(POOL, max_instances=1),
            [view("s", state=InstanceState.BUSY, static=True, active_jobs=1, idle_since=None)],
            PoolSnapshot(queued_jobs=3, expected_job_seconds=60),
            [],
            id="static-counts-toward-max-instances",
        ),
        pytest.param(
            replace(POOL, max_spend_per_hour=1.0),
            [
                view(
                    "s",
                    state=InstanceState.BUSY,
                    static=True,
                    active_jobs=1,
                    idle_since=None,
                    price_per_hour=0.8,
                )
            ],
            PoolSnapshot(queued_jobs=3, expected_job_seconds=60, new_instance_price=0.5),
            [],
            id="static-price-counts-toward-spend-cap",
        ),
    ],
)
def test_plan_scaling_counts_static_instances_and_never_removes_them(
    pool: PoolConfig, instances: list[InstanceView], snapshot: PoolSnapshot, expected: list[Any]
) -> None:
    actions = plan_scaling(pool, instances, snapshot, now=NOW)
    assert actions == expected
    assert not [a for a in actions if isinstance(a, Drain | Park) and a.instance_id == "s"]


# -- the pool loop ---------------------------------------------------------------------------------
class RecordingProvider:
    name = "test"

    def __init__(self) -> None:
        self.instances: dict[str, ProviderInstance] = {}
        self.calls: list[tuple[str, str]] = []

    def launch(self, spec: LaunchSpec) -> str:
        provider_id = f"p{len(self.calls) + 1}"
        self.calls.append(("launch", spec.instance_id))
        self.instances[provider_id] = ProviderInstance(provider_id, spec.instance_id, True, 0.5)
        return provider_id

    def list(self) -> list[ProviderInstance]:
        return list(self.instances.values())

    def destroy(self, provider_id: str) -> None:
        self.calls.append(("destroy", provider_id))
        self.instances.pop(provider_id, None)

    def stop(self, provider_id: str) -> None:
        self.calls.append(("stop", provider_id))

    def start(self, provider_id: str) -> None:
        self.calls.append(("start", provider_id))


@pytest.fixture
def provider() -> RecordingProvider:
    return RecordingProvider()


@pytest.fixture
def cp(settings: Settings, provider: RecordingProvider, clock: FakeClock) -> Iterator[ControlPlane]:
    # the tests drive the loops themselves
    settings = settings.model_copy(
        update={"scheduler_interval_seconds": 600, "control_interval_seconds": 600}
    )
    plane = plane_with_pool(
        settings, {"test": provider}, clock, min_instances=0, max_instances=2, max_parked=1
    )
    yield plane
    plane.state.engine.dispose()


def attach(api: TestClient, admin: dict[str, str], **body: Any) -> dict[str, Any]:
    r = api.post("/v1/admin/instances", headers=admin, json={"pool": "gpu", **body})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def set_min_instances(cp: ControlPlane, n: int) -> None:
    with transaction(cp.state.sessions) as s:
        pool = s.get(Pool, "gpu")
        assert pool is not None
        pool.min_instances = n


def state_of(cp: ControlPlane, instance_id: str) -> InstanceState:
    with transaction(cp.state.sessions) as s:
        inst = s.get(Instance, instance_id)
        assert inst is not None
        return inst.state


def register(api: TestClient, token: str) -> int:
    auth = {"Authorization": f"Bearer {token}"}
    r = api.post(
        "/worker/v1/register", headers=auth, json={"comfyui_url": "http://127.0.0.1:8188", "version": "t"}
    )
    return r.status_code


def heartbeat(api: TestClient, token: str, *, comfyui_ok: bool = True) -> int:
    auth = {"Authorization": f"Bearer {token}"}
    body = {"comfyui_ok": comfyui_ok, "disk_free_bytes": 10**10, "models": [], "running": []}
    return api.post("/worker/v1/heartbeat", headers=auth, json=body).status_code


def test_pool_loop_counts_a_static_instance_and_never_touches_it(
    cp: ControlPlane, provider: RecordingProvider, clock: FakeClock
) -> None:
    admin = {"Authorization": f"Bearer {cp.admin_key}"}
    with TestClient(cp.app) as api:
        attached = attach(api, admin, name="desk-4090", price_per_hour=0.25)
        assert register(api, attached["token"]) == 200
        assert state_of(cp, attached["instance_id"]) == InstanceState.IDLE
        set_min_instances(cp, 1)
        # min 1 is met by the attached machine: nothing rented, however long it idles
        for _ in range(3):
            # the lifespan's loops run beside the test (see heartbeat_at; CI, PostgreSQL: a
            # sweep between the jump and the heartbeat launched a machine for the min)
            heartbeat_at(cp, attached["instance_id"], clock() + timedelta(seconds=3600))
            clock.advance(3600)
            assert heartbeat(api, attached["token"]) == 200
            cp.pools.tick()
        assert provider.calls == []
        assert state_of(cp, attached["instance_id"]) == InstanceState.IDLE

        # unhealthy (its ComfyUI is down past the timeout): out of routing, kept, never replaced
        with transaction(cp.state.sessions) as s:
            inst = s.get(Instance, attached["instance_id"])
            assert inst is not None
            move_instance(s, inst, InstanceTrigger.HEARTBEAT_LOST, "no heartbeat", clock())
        for _ in range(2):
            cp.pools.tick()
        assert state_of(cp, attached["instance_id"]) == InstanceState.UNHEALTHY
        assert ("destroy", attached["instance_id"]) not in provider.calls
        assert [c for c in provider.calls if c[0] != "launch"] == []  # rented burst may cover the min
        # its worker heartbeats healthy again: back in routing
        assert heartbeat(api, attached["token"]) == 200
        assert state_of(cp, attached["instance_id"]) == InstanceState.IDLE

        status = api.get("/v1/admin/status", headers=admin).json()
        shown = next(i for i in status["instances"] if i["id"] == attached["instance_id"])
        assert shown["provider"] == "static" and shown["info"]["name"] == "desk-4090"


def test_unhealthy_static_instance_is_not_told_to_go_away(cp: ControlPlane, clock: FakeClock) -> None:
    admin = {"Authorization": f"Bearer {cp.admin_key}"}
    with TestClient(cp.app) as api:
        attached = attach(api, admin)
        assert register(api, attached["token"]) == 200
        with transaction(cp.state.sessions) as s:
            inst = s.get(Instance, attached["instance_id"])
            assert inst is not None
            move_instance(s, inst, InstanceTrigger.HEARTBEAT_LOST, "no heartbeat", clock())
        assert heartbeat(api, attached["token"], comfyui_ok=False) == 200  # not 410: it stays
        assert state_of(cp, attached["instance_id"]) == InstanceState.UNHEALTHY
        assert register(api, attached["token"]) == 200
        assert state_of(cp, attached["instance_id"]) == InstanceState.IDLE


def test_rotated_and_detached_tokens_are_refused_at_once(cp: ControlPlane) -> None:
    admin = {"Authorization": f"Bearer {cp.admin_key}"}
    with TestClient(cp.app) as api:
        attached = attach(api, admin, slots=2, server_url="https://cp.example.org")
        assert attached["command"].startswith(
            f"swarmstation worker --server https://cp.example.org --token {attached['token']} "
        )
        assert register(api, attached["token"]) == 200  # the identity is now cached
        r = api.post(f"/v1/admin/instances/{attached['instance_id']}/rotate-token", headers=admin)
        assert r.status_code == 200, r.text
        rotated = r.json()
        assert rotated["token"] != attached["token"] and rotated["token"] in rotated["command"]
        assert heartbeat(api, attached["token"]) == 401
        assert heartbeat(api, rotated["token"]) == 200

        r = api.post(f"/v1/admin/instances/{attached['instance_id']}/detach", headers=admin)
        assert r.status_code == 200 and r.json()["state"] == "TERMINATED"
        assert heartbeat(api, rotated["token"]) == 410
        assert register(api, rotated["token"]) == 410


def test_a_cached_identity_of_a_rotated_token_is_refused(cp: ControlPlane) -> None:
    """As on a second replica, whose cache the rotation did not reach."""
    admin = {"Authorization": f"Bearer {cp.admin_key}"}
    with TestClient(cp.app) as api:
        attached = attach(api, admin)
        api.post(f"/v1/admin/instances/{attached['instance_id']}/rotate-token", headers=admin)
        old_hash = hash_secret(attached["token"])
        cp.state.instance_cache.put(old_hash, InstanceIdentity(attached["instance_id"], old_hash))
        assert heartbeat(api, attached["token"]) == 401


def test_detach_drains_a_busy_static_instance_first(cp: ControlPlane, clock: FakeClock) -> None:
    admin = {"Authorization": f"Bearer {cp.admin_key}"}
    with TestClient(cp.app) as api:
        attached = attach(api, admin)
        assert register(api, attached["token"]) == 200
        with transaction(cp.state.sessions) as s:
            user, _ = add_user(s, clock())
            job = submit(s, user, clock())
            job.pool = "gpu"
            inst = s.get(Instance, attached["instance_id"])
            assert inst is not None
            assign_job(s, job, inst, lease_seconds=30, now=clock())
            job_id = job.id
        r = api.post(f"/v1/admin/instances/{attached['instance_id']}/detach", headers=admin)
        assert r.status_code == 200 and r.json()["state"] == "DRAINING"
        cp.pools.tick()
        assert state_of(cp, attached["instance_id"]) == InstanceState.DRAINING  # its job still runs
        with transaction(cp.state.sessions) as s:
            running = s.get(Job, job_id)
            assert running is not None
            running.state = "CANCELLED"
        cp.pools.tick()
        assert state_of(cp, attached["instance_id"]) == InstanceState.TERMINATED


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param({"pool": "nope"}, 404, id="unknown-pool"),
        pytest.param({"pool": "gpu", "slots": 0}, 422, id="zero-slots"),
        pytest.param({"pool": "gpu", "price_per_hour": -1}, 422, id="negative-price"),
        pytest.param({"pool": "gpu", "server_url": "ftp://x"}, 422, id="bad-server-url"),
        pytest.param({"pool": "gpu", "comfy_dir": "a\nrm -rf /"}, 422, id="newline-in-dir"),
    ],
)
def test_bad_attach_requests_are_4xx(cp: ControlPlane, body: dict[str, Any], status: int) -> None:
    admin = {"Authorization": f"Bearer {cp.admin_key}"}
    with TestClient(cp.app) as api:
        assert api.post("/v1/admin/instances", headers=admin, json=body).status_code == status


def test_rented_instances_cannot_be_detached_here(cp: ControlPlane, provider: RecordingProvider) -> None:
    admin = {"Authorization": f"Bearer {cp.admin_key}"}
    set_min_instances(cp, 1)
    cp.pools.tick()  # min 1: one rented
    with transaction(cp.state.sessions) as s:
        rented = s.query(Instance).filter(Instance.provider == "test").one().id
    with TestClient(cp.app) as api:
        assert api.post(f"/v1/admin/instances/{rented}/detach", headers=admin).status_code == 409
        assert api.post(f"/v1/admin/instances/{rented}/rotate-token", headers=admin).status_code == 409
        assert api.post("/v1/admin/instances/nope/detach", headers=admin).status_code == 404
