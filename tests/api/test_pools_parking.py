"""Parking as an operator sees it: the pool settings over the API, parked instances in the pool,
instance and metrics views, and costs that bill no GPU time for a parked period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from swarmstation.api.app import ControlPlane
from swarmstation.control.costs import bill_spans, running_spans
from swarmstation.control.instances import move_instance
from swarmstation.domain.pricing import JobRun
from swarmstation.domain.states import InstanceState, InstanceTrigger, JobState
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, Pool, User
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user, submit


def test_pool_parking_settings_over_the_api(api: TestClient, admin: dict[str, str]) -> None:
    r = api.post("/v1/admin/pools", headers=admin, json={"name": "plain"})
    assert r.status_code == 201, r.text
    assert r.json()["max_parked"] == 0 and r.json()["park_max_hours"] == 24 and r.json()["parked"] == 0

    body = {"name": "warm", "max_parked": 2, "park_max_hours": 6.5}
    r = api.post("/v1/admin/pools", headers=admin, json=body)
    assert r.status_code == 201, r.text
    assert r.json()["max_parked"] == 2 and r.json()["park_max_hours"] == 6.5
    got = api.get("/v1/admin/pools/warm", headers=admin).json()
    assert got["max_parked"] == 2 and got["park_max_hours"] == 6.5

    r = api.patch("/v1/admin/pools/warm", headers=admin, json={"max_parked": 100, "park_max_hours": 720})
    assert r.status_code == 200, r.text
    r = api.patch("/v1/admin/pools/warm", headers=admin, json={"max_parked": 0})
    assert r.status_code == 200 and r.json()["max_parked"] == 0 and r.json()["park_max_hours"] == 720

    bad = [
        ({"max_parked": -1}, "max_parked", "greater than or equal to 0"),
        ({"max_parked": 101}, "max_parked", "less than or equal to 100"),
        ({"max_parked": 1.5}, "max_parked", "integer"),
        ({"max_parked": None}, "max_parked", "must not be null"),
        ({"park_max_hours": 0}, "park_max_hours", "greater than 0"),
        ({"park_max_hours": -3}, "park_max_hours", "greater than 0"),
        ({"park_max_hours": 721}, "park_max_hours", "less than or equal to 720"),
        ({"park_max_hours": "soon"}, "park_max_hours", "number"),
        ({"park_max_hours": None}, "park_max_hours", "must not be null"),
    ]
    for i, (fields, name, why) in enumerate(bad):
        for r in (
            api.post("/v1/admin/pools", headers=admin, json={"name": f"bad{i}", **fields}),
            api.patch("/v1/admin/pools/warm", headers=admin, json=fields),
        ):
            assert r.status_code == 422, (fields, r.text)
            assert name in r.json()["detail"] and why in r.json()["detail"], (fields, r.text)
    assert api.get("/v1/admin/pools/bad0", headers=admin).status_code == 404
    got = api.get("/v1/admin/pools/warm", headers=admin).json()
    assert got["max_parked"] == 0 and got["park_max_hours"] == 720  # unchanged


def add_pool(s: Session, name: str, now: datetime, *, max_parked: int) -> None:
    s.add(
        Pool(
            name=name,
            provider="none",
            min_instances=0,
            max_instances=2,
            scale_up_queue_threshold=1,
            idle_minutes=5,
            created_at=now,
            max_parked=max_parked,
        )
    )
    s.flush()


def test_parked_instances_in_pool_instance_and_metrics_views(
    api: TestClient, plane: ControlPlane, clock: FakeClock, admin: dict[str, str]
) -> None:
    now = clock()
    with transaction(plane.state.sessions) as s:
        add_pool(s, "warm", now, max_parked=2)
        parked, _ = add_instance(s, now, pool="warm")
        move_instance(s, parked, InstanceTrigger.PARK, "parked: idle for more than 5 minutes", now)
        parked.parked_at = now
        add_instance(s, now, pool="warm")  # one idle
        parked_id = parked.id
    pool = api.get("/v1/admin/pools/warm", headers=admin).json()
    assert pool["parked"] == 1 and pool["instances"] == {"STOPPED": 1, "IDLE": 1}
    listed = {i["id"]: i for i in api.get("/v1/admin/instances", headers=admin).json()}
    assert listed[parked_id]["state"] == "STOPPED"
    assert datetime.fromisoformat(listed[parked_id]["parked_at"].replace("Z", "+00:00")) == now
    assert all(i["parked_at"] is None for k, i in listed.items() if k != parked_id)
    status = api.get("/v1/admin/status", headers=admin).json()
    assert next(p for p in status["pools"] if p["name"] == "warm")["instances"]["STOPPED"] == 1
    metrics = api.get("/metrics").text
    assert 'swarmstation_instances{pool="warm",state="STOPPED"} 1.0' in metrics
    # a parked instance still exists at the provider: the pool cannot go yet
    r = api.delete("/v1/admin/pools/warm", headers=admin)
    assert r.status_code == 409 and "max_parked" in r.json()["detail"]


def run_job(s: Session, user: User, inst: Instance, start: datetime, seconds: float) -> None:
    job = submit(s, user, start)
    job.state, job.instance_id = JobState.COMPLETED, inst.id
    job.started_at, job.finished_at = start, start + timedelta(seconds=seconds)


def test_an_hour_parked_bills_no_gpu(
    api: TestClient, plane: ControlPlane, clock: FakeClock, admin: dict[str, str]
) -> None:
    t0 = clock()

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    with transaction(plane.state.sessions) as s:
        user, _ = add_user(s, t0, "dora")
        inst, _ = add_instance(s, t0)
        inst.price_per_hour = 3.6  # $0.001 per second
        run_job(s, user, inst, at(100), 300)
        move_instance(s, inst, InstanceTrigger.PARK, "parked", at(1000))  # parked for an hour
        move_instance(s, inst, InstanceTrigger.RESUME, "resuming", at(4600))
        move_instance(s, inst, InstanceTrigger.STARTED, "worker started", at(4630))
        move_instance(s, inst, InstanceTrigger.READY, "ComfyUI ready", at(4640))
        run_job(s, user, inst, at(4700), 100)
        move_instance(s, inst, InstanceTrigger.DRAIN, "idle", at(5400))
        move_instance(s, inst, InstanceTrigger.DESTROY, "drained, destroyed", at(5600))
        # still parked now, since 600 s after its creation: 600 s billed, no job
        idle, _ = add_instance(s, t0)
        idle.price_per_hour = 0.36
        move_instance(s, idle, InstanceTrigger.PARK, "parked", at(600))
        # parked, then drained to be destroyed: it never ran again
        gone, _ = add_instance(s, t0)
        gone.price_per_hour = 0.36
        move_instance(s, gone, InstanceTrigger.PARK, "parked", at(300))
        move_instance(s, gone, InstanceTrigger.DRAIN, "parked for more than 1h", at(4000))
        move_instance(s, gone, InstanceTrigger.DESTROY, "drained, destroyed", at(4010))
        inst_id, user_id = inst.id, user.id
    clock.advance(7200)
    data = api.get("/v1/admin/costs?group_by=instance", headers=admin).json()
    # 1000 s before the park and 1000 s after the resume at $0.001/s, not 5600 s
    by_instance = {r["key"]: r for r in data["rows"]}
    assert by_instance[inst_id]["cost"] == pytest.approx(2.0) and by_instance[inst_id]["jobs"] == 2
    assert data["billed"] == pytest.approx(2.0 + 0.06 + 0.03)
    assert data["attributed"] == pytest.approx(2.0) and data["unattributed"] == pytest.approx(0.09)
    assert sum(r["cost"] for r in data["rows"]) == pytest.approx(data["billed"])
    # each job carries its own span's idle time: 300 of 1000 s, then 100 of 1000 s, the rest shared
    by_user = api.get("/v1/admin/costs?group_by=user", headers=admin).json()["rows"]
    dora = next(r for r in by_user if r["key"] == user_id)
    assert dora["cost"] == pytest.approx(2.0) and dora["gpu_seconds"] == pytest.approx(400)


T0 = datetime(2026, 1, 1, tzinfo=UTC)


@given(
    price=st.floats(0, 10),
    life=st.integers(1, 100_000),
    # a park and the resume after it, as offsets; the instance runs again after each resume
    parks=st.lists(st.tuples(st.integers(0, 20_000), st.integers(0, 20_000)), max_size=5),
    jobs=st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 3_000)), max_size=20),
    ended=st.booleans(),
)
def test_parked_spans_are_not_billed_and_job_costs_add_up(
    price: float, life: int, parks: list[tuple[int, int]], jobs: list[tuple[int, int]], ended: bool
) -> None:
    # the creation (as the cost report reads it), then parks and resumes
    changes: list[tuple[datetime, str]] = [(T0, InstanceState.PROVISIONING)]
    running: list[tuple[int, int]] = []  # the seconds that are billed, built independently
    t: int | None = 0
    for run_for, parked_for in parks:
        assert t is not None
        if t + run_for >= life:
            break
        running.append((t, t + run_for))
        changes.append((T0 + timedelta(seconds=t + run_for), InstanceState.STOPPED))
        t = t + run_for + parked_for
        if t >= life:  # still parked at the end
            t = None
            break
        changes.append((T0 + timedelta(seconds=t), InstanceState.PROVISIONING))
    if t is not None:
        running.append((t, life))
    end = T0 + timedelta(seconds=life)
    spans = running_spans(T0, end if ended else None, changes)
    # jobs only run while the instance does
    runs = [
        JobRun(f"j{k}", "i", T0 + timedelta(seconds=s), T0 + timedelta(seconds=s + d))
        for k, (s, d) in enumerate(jobs)
        if any(a <= s and s + d <= b for a, b in running)
    ]
    result = bill_spans("i", price, spans, runs, now=end)
    billed_seconds = sum(b - a for a, b in running)
    assert result.cost == pytest.approx(billed_seconds * price / 3600, rel=1e-9, abs=1e-9)
    assert sum(j.total for j in result.jobs) + result.unattributed == pytest.approx(
        result.cost, rel=1e-9, abs=1e-9
    )
    assert sorted(j.job_id for j in result.jobs) == sorted(r.job_id for r in runs)
    assert all(j.gpu_cost >= 0 and j.overhead_cost >= 0 for j in result.jobs)
