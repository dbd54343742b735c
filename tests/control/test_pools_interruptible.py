"""Interruptible (bid) rentals: the `vastai` provider against the fake Vast.ai (bid search, the
create's `price`, the bid as the recorded price, an outbid instance in the listing), and the pool
loop in process with that provider (an outbid instance's job is requeued, the instance destroyed
and replaced; parked and resumed instances reported stopped are not taken for outbid)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from swarmstation.api.app import ControlPlane
from swarmstation.config import Settings
from swarmstation.control.instances import transitions
from swarmstation.control.pools import OUTBID_REASON, STOPPED_BY_PROVIDER_REASON
from swarmstation.control.scheduler import scheduler_pass
from swarmstation.domain.offers import Offer, OfferFilters, search_query
from swarmstation.domain.states import InstanceState, JobState
from swarmstation.providers.base import LaunchSpec
from swarmstation.providers.vastai.instances import instance_from_json
from swarmstation.providers.vastai.provider import VastAIProvider
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, Job, Pool
from tests.conftest import FakeClock
from tests.fakes.vastai import FakeVastAI, make_offer
from tests.helpers import add_user, instance_by_provider_id, plane_with_pool, submit

BID_FILTERS = OfferFilters(max_price_per_hour=0.3, interruptible=True, bid_margin=1.1)


def market() -> list[dict[str, Any]]:
    return [
        # the best on-demand (0.35/h), but its bid floor is high: bid 0.33, over the 0.3 cap
        make_offer(201, dph_total=0.35, min_bid=0.30, dlperf=60.0),
        # dearer on-demand, cheap to bid on: bid 0.2 * 1.1 = 0.22 → the best bid
        make_offer(202, dph_total=0.60, min_bid=0.20, dlperf=60.0),
        make_offer(203, dph_total=0.40, min_bid=0.25, dlperf=60.0),  # bid 0.275
        make_offer(204, dph_total=0.20, min_bid=None, dlperf=60.0),  # on-demand only
    ]


SPEC = LaunchSpec(
    instance_id="inst-1",
    pool="gpu",
    server_url="http://control.example:8000",
    worker_token="worker-secret-token-abc",
    image="nvidia/cuda:12.4.1-runtime-ubuntu22.04",
    onstart="echo starting",
    filters=BID_FILTERS,
)


@pytest.fixture
def fake() -> Iterator[FakeVastAI]:
    with FakeVastAI(offers=market()) as server:
        yield server


@pytest.fixture
def provider(fake: FakeVastAI) -> Iterator[VastAIProvider]:
    made = VastAIProvider(
        fake.api_key, base_url=fake.url, sleep=lambda _: None, rng=random.Random(7), label_lookup_attempts=1
    )
    yield made
    made.close()


# -- provider ----------------------------------------------------------------------------------------


def test_bid_launch_searches_bids_and_bids_min_bid_times_margin(
    fake: FakeVastAI, provider: VastAIProvider
) -> None:
    provider_id = provider.launch(SPEC)
    [query] = fake.search_queries
    assert query == search_query(BID_FILTERS, limit=64)
    assert query["type"] == "bid" and "dph_total" not in query
    [body] = fake.create_bodies
    assert fake.calls[-1].path == "/api/v0/asks/202/"  # ranked by bid, not by dph_total
    assert body["price"] == 0.22
    [listed] = provider.list()
    assert listed.provider_id == provider_id and listed.interruptible
    assert listed.price_per_hour == 0.22  # what we pay, not the offer's on-demand 0.60
    assert (listed.running, listed.stopped) == (True, False)


def test_on_demand_launch_sends_no_price(fake: FakeVastAI, provider: VastAIProvider) -> None:
    on_demand = replace(SPEC, filters=OfferFilters(max_price_per_hour=0.3))
    provider.launch(on_demand)
    assert fake.search_queries[0]["type"] == "on-demand"
    [body] = fake.create_bodies
    assert "price" not in body and fake.calls[-1].path == "/api/v0/asks/204/"
    [listed] = provider.list()
    assert not listed.interruptible and listed.price_per_hour == 0.20


def test_the_fake_refuses_a_bid_under_the_floor_and_the_next_offer_is_tried(
    fake: FakeVastAI, provider: VastAIProvider
) -> None:
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    body = {"image": "x", "env": {}, "price": 0.19}
    r = httpx.put(f"{fake.url}/api/v0/asks/202/", json=body, headers=headers)
    assert r.status_code == 400 and r.json()["error"] == "invalid_price"
    r = httpx.put(f"{fake.url}/api/v0/asks/204/", json=body, headers=headers)  # no min_bid
    assert r.status_code == 400 and r.json()["error"] == "invalid_args"
    assert fake.instances() == []
    # the floor rose between our search and our create (others bid more): the next offer is rented
    real_search = provider.search_offers

    def stale_search(filters: OfferFilters) -> list[Offer]:
        return [replace(o, min_bid=0.1) if o.id == 202 else o for o in real_search(filters)]

    provider.search_offers = stale_search  # type: ignore[method-assign]
    provider.launch(SPEC)
    assert [c.path for c in fake.calls if c.endpoint == "create"][-2:] == [
        "/api/v0/asks/202/",
        "/api/v0/asks/203/",
    ]
    assert fake.create_bodies[-2]["price"] == 0.11 and fake.create_bodies[-1]["price"] == 0.275
    [listed] = provider.list()
    assert listed.price_per_hour == 0.275


def test_an_outbid_instance_is_listed_stopped_and_interruptible(
    fake: FakeVastAI, provider: VastAIProvider
) -> None:
    provider_id = provider.launch(SPEC)
    fake.outbid(int(provider_id))
    shown = fake.instance(int(provider_id))
    assert shown is not None and (shown["actual_status"], shown["intended_status"]) == ("stopped", "running")
    [listed] = provider.list()
    assert (listed.running, listed.stopped, listed.interruptible, listed.status) == (
        True,
        True,
        True,
        "stopped",
    )


@pytest.mark.parametrize(
    ("is_bid", "expected"),
    [(True, True), ("true\n", True), (1, True), (False, False), (None, False), ("no", False)],
)
def test_instance_from_json_is_bid(is_bid: Any, expected: bool) -> None:
    mapped = instance_from_json(
        {"id": 5, "label": "swarmstation-x", "actual_status": "running", "is_bid": is_bid}
    )
    assert mapped is not None and mapped.interruptible is expected


# -- the pool loop -----------------------------------------------------------------------------------


@pytest.fixture
def plane(
    tmp_path: Path, database_url: str, clock: FakeClock, provider: VastAIProvider
) -> Iterator[ControlPlane]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        provider="none",
        heartbeat_timeout_seconds=20,
        orphan_grace_seconds=0,
    )
    cp = plane_with_pool(
        settings,
        {"vastai": provider},
        clock,
        image="nvidia/cuda:12.4.1-runtime-ubuntu22.04",
        gpu_filters={"max_price_per_hour": 0.3},
        rental="interruptible",
        bid_margin=1.1,
        max_parked=1,
    )
    yield cp
    cp.state.engine.dispose()


def row(cp: ControlPlane, provider_id: str) -> Instance:
    return instance_by_provider_id(cp, provider_id)


def only_provider_id(fake: FakeVastAI) -> str:
    [inst] = fake.instances()
    return str(inst["id"])


def submit_job(cp: ControlPlane, clock: FakeClock) -> str:
    with transaction(cp.state.sessions) as s:
        user, _ = add_user(s, clock())
        job = submit(s, user, clock(), max_attempts=3)
        job.pool = "gpu"
        return job.id


def register(cp: ControlPlane, fake: FakeVastAI, provider_id: str) -> None:
    """What the rented machine's worker does once ComfyUI answers."""
    label = f"swarmstation-{row(cp, provider_id).id}"
    [body] = [b for b in fake.create_bodies if b["label"] == label]
    token = body["env"]["SWARMSTATION_WORKER_TOKEN"]
    r = TestClient(cp.app).post(
        "/worker/v1/register",
        params={"ready": "true"},
        headers={"Authorization": f"Bearer {token}"},
        json={"comfyui_url": "http://127.0.0.1:9", "version": "test"},
    )
    assert r.status_code == 200, r.text


def sweep(cp: ControlPlane, clock: FakeClock) -> None:
    with transaction(cp.state.sessions) as s:
        scheduler_pass(s, cp.state.settings, clock())


def job_of(cp: ControlPlane, job_id: str) -> Job:
    with transaction(cp.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def busy_instance(cp: ControlPlane, fake: FakeVastAI, clock: FakeClock) -> tuple[str, str]:
    """A job, and the bid instance launched for it, ready and running the job."""
    job_id = submit_job(cp, clock)
    cp.pools.tick()
    provider_id = only_provider_id(fake)
    assert fake.create_bodies[-1]["price"] == 0.22
    register(cp, fake, provider_id)
    sweep(cp, clock)
    assert row(cp, provider_id).state == InstanceState.BUSY
    job = job_of(cp, job_id)
    assert job.state == JobState.ASSIGNED and job.attempt == 1
    return job_id, provider_id


def parked_instance(cp: ControlPlane, fake: FakeVastAI, clock: FakeClock) -> str:
    """A bid instance launched for a job that was then cancelled, ready, idle past idle_minutes,
    and parked: stopped at the provider by us."""
    job_id = submit_job(cp, clock)
    cp.pools.tick()
    with transaction(cp.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.state = JobState.CANCELLED
    provider_id = only_provider_id(fake)
    register(cp, fake, provider_id)
    clock.advance(61)
    cp.pools.tick()
    assert row(cp, provider_id).state == InstanceState.STOPPED
    return provider_id


def test_an_outbid_instance_is_given_up_its_job_requeued_and_a_replacement_bid_launched(
    plane: ControlPlane, fake: FakeVastAI, clock: FakeClock
) -> None:
    job_id, first = busy_instance(plane, fake, clock)
    plane.pools.tick()
    assert row(plane, first).price_per_hour == 0.22  # the bid, from the listing

    fake.outbid(int(first))
    plane.pools.tick()  # reconcile: outbid → UNHEALTHY, then destroyed at the provider
    outbid = row(plane, first)
    assert outbid.state == InstanceState.TERMINATED
    with transaction(plane.state.sessions) as s:
        reasons = [(t.to_state, t.reason) for t in transitions(s, outbid.id)]
    assert ("UNHEALTHY", OUTBID_REASON) in reasons
    assert fake.instance(int(first)) is None  # destroyed: a stopped instance still bills storage

    sweep(plane, clock)  # its lease goes back to the queue, the attempt counted
    job = job_of(plane, job_id)
    assert job.state == JobState.QUEUED and job.instance_id is None and job.attempt == 1
    plane.pools.tick()  # a replacement, bid again
    second = only_provider_id(fake)
    assert second != first and len(fake.create_bodies) == 2
    assert fake.create_bodies[-1]["price"] > 0 and fake.search_queries[-1]["type"] == "bid"
    register(plane, fake, second)
    sweep(plane, clock)
    job = job_of(plane, job_id)
    assert job.state == JobState.ASSIGNED and job.attempt == 2
    assert job.instance_id == row(plane, second).id


def test_an_on_demand_instance_stopped_by_the_host_gets_the_generic_reason(
    plane: ControlPlane, fake: FakeVastAI, clock: FakeClock
) -> None:
    with transaction(plane.state.sessions) as s:
        pool = s.get(Pool, "gpu")
        assert pool is not None
        pool.rental = "on-demand"
    job_id = submit_job(plane, clock)
    plane.pools.tick()
    provider_id = only_provider_id(fake)
    assert "price" not in fake.create_bodies[-1]
    fake.outbid(int(provider_id))  # the same stop, on an instance that is no bid: the host did it
    plane.pools.tick()
    with transaction(plane.state.sessions) as s:
        inst = s.scalar(select(Instance).where(Instance.provider_instance_id == provider_id))
        assert inst is not None and inst.state == InstanceState.TERMINATED
        assert ("UNHEALTHY", STOPPED_BY_PROVIDER_REASON) in [
            (t.to_state, t.reason) for t in transitions(s, inst.id)
        ]
    assert job_of(plane, job_id).state == JobState.QUEUED  # never assigned; still waiting


def test_a_parked_bid_instance_reported_stopped_is_not_outbid(
    plane: ControlPlane, fake: FakeVastAI, clock: FakeClock
) -> None:
    provider_id = parked_instance(plane, fake, clock)
    shown = fake.instance(int(provider_id))
    assert shown is not None and shown["actual_status"] == "stopped" and shown["is_bid"] is True
    for _ in range(3):
        plane.pools.tick()
    parked = row(plane, provider_id)
    assert parked.state == InstanceState.STOPPED and fake.instance(int(provider_id)) is not None

    # resumed: the start "succeeds" but the machine stays stopped (the GPU went to a higher bid);
    # right after our start that is what a slow start looks like too, so not "outbid": the
    # resume timeout judges it
    fake.fail_next_start()
    submit_job(plane, clock)
    plane.pools.tick()
    assert fake.starts(int(provider_id)) == 1
    for _ in range(2):
        clock.advance(5)
        plane.pools.tick()
        assert row(plane, provider_id).state == InstanceState.PROVISIONING
    clock.advance(plane.state.settings.resume_timeout_seconds)
    plane.pools.tick()
    with transaction(plane.state.sessions) as s:
        inst = s.scalar(select(Instance).where(Instance.provider_instance_id == provider_id))
        assert inst is not None
        reasons = [t.reason for t in transitions(s, inst.id)]
    assert OUTBID_REASON not in reasons
    assert any(r.startswith("not ready within") for r in reasons)


def test_a_drained_parked_instance_is_destroyed_as_drained_not_as_outbid(
    plane: ControlPlane, fake: FakeVastAI, clock: FakeClock
) -> None:
    provider_id = parked_instance(plane, fake, clock)
    with transaction(plane.state.sessions) as s:
        pool = s.get(Pool, "gpu")
        assert pool is not None
        pool.max_parked = 0
    plane.pools.scale(plane.pools.providers["vastai"])
    assert row(plane, provider_id).state == InstanceState.DRAINING
    plane.pools.reconcile(plane.pools.providers["vastai"])  # reported stopped while DRAINING
    assert row(plane, provider_id).state == InstanceState.DRAINING
    plane.pools.tick()
    gone = row(plane, provider_id)
    assert gone.state == InstanceState.TERMINATED and gone.state_reason == "drained, destroyed"
