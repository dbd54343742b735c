"""End to end on a fake VastAI whose "rented machines" run the real bootstrap script as local
processes (worker + ComfyUI emulator): a burst scales a pool 0 → max → back to min, every job
completes, and nothing is left running that the database does not know; then two control
planes on one PostgreSQL at once."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import BIN, FailureLogs, Up, wait_for
from tests.fake_models import fake_weights
from tests.fakes.vastai import FakeVastAI, make_offer

pytestmark = pytest.mark.slow


@pytest.fixture
def fake(failure_logs: FailureLogs) -> Iterator[FakeVastAI]:
    offers = [make_offer(i, dph_total=0.30 + i / 100) for i in range(1, 8)]
    env = {"SWARMSTATION_SKIP_INSTALL": "1", "SWARMSTATION_BIN": str(BIN)}
    with FakeVastAI(
        offers=offers,
        run_onstart=True,
        consume_offers=True,
        provision_seconds=0.3,
        load_seconds=0.3,
        onstart_env=env,
    ) as f:
        failure_logs.add("the fake Vast.ai's machines", f.dump_logs)
        yield f


@pytest.fixture
def up_factory(fake: FakeVastAI, up_factory: Callable[..., Up]) -> Callable[..., Up]:
    """The conftest's, set up after the fake: so the Ups stop (and give their instances back)
    while the fake still answers, instead of retrying a gone Vast.ai for 15 s."""
    return up_factory


def vast_env(fake: FakeVastAI) -> dict[str, object]:
    return {
        "provider": "none",
        "worker_comfyui_mode": "emulator",
        "control_interval_seconds": 0.5,
        "heartbeat_timeout_seconds": 6,
        "orphan_grace_seconds": 5,
        "lease_seconds": 20,
    }


def start(up: Up, fake: FakeVastAI) -> None:
    up.env.update({"VASTAI_API_KEY": fake.api_key, "VASTAI_BASE_URL": fake.url})
    up.start()


def setup_pool(up: Up, *, max_instances: int, idle_minutes: float) -> None:
    http = up.client()
    pool = {
        "name": "gpu",
        "provider": "vastai",
        "image": "nvidia/cuda:12.4.1-runtime-ubuntu22.04",
        "min_instances": 0,
        "max_instances": max_instances,
        "idle_minutes": idle_minutes,
        "target_wait_seconds": 5,
        "scale_cooldown_seconds": 1,
        "gpu_filters": {"max_price_per_hour": 1.0},
    }
    r = http.post("/v1/admin/pools", json=pool)
    assert r.status_code == 201, r.text
    tool = http.get("/v1/tools/sd15-txt2img").json()
    body = {k: tool[k] for k in ("name", "description", "category", "base_model", "workflow", "inputs")}
    r = http.post("/v1/admin/tools", json={**body, "slug": "gpu-sd15", "pool": "gpu"})
    assert r.status_code == 201, r.text


def live_instances(up: Up) -> list[dict[str, Any]]:
    return [i for i in up.client().get("/v1/admin/instances").json() if i["pool"] == "gpu"]


def no_strays(up: Up, fake: FakeVastAI) -> bool:
    known = {i["provider_instance_id"] for i in live_instances(up)}
    return {str(i["id"]) for i in fake.instances()} <= known


def submit_burst(up: Up, n: int) -> list[str]:
    http = up.client()
    return [
        http.post(
            "/v1/jobs",
            json={"tool": "gpu-sd15", "inputs": {"prompt": f"p{k}", "steps": 2, "width": 64, "height": 64}},
        ).json()["id"]
        for k in range(n)
    ]


def all_finished(up: Up, ids: list[str]) -> list[dict[str, Any]] | None:
    http = up.client()
    jobs = [http.get(f"/v1/jobs/{i}").json() for i in ids]
    return jobs if all(j["state"] in ("COMPLETED", "FAILED") for j in jobs) else None


def test_burst_scales_zero_to_max_and_back(up_factory, fake: FakeVastAI) -> None:  # type: ignore[no-untyped-def]
    up: Up = up_factory(**vast_env(fake))
    start(up, fake)
    setup_pool(up, max_instances=3, idle_minutes=0.1)
    fake.fail("create", 429, times=2, body="text")  # a rate-limit storm on the way up
    fake.fail("search", 500, times=1)
    ids = submit_burst(up, 50)
    peak = 0

    urls: set[str] = set()

    def finished() -> list[dict[str, Any]] | None:
        nonlocal peak
        live = [i for i in live_instances(up) if i["state"] != "TERMINATED"]
        peak = max(peak, len(live))
        urls.update(i["comfyui_url"] for i in live if i["comfyui_url"])
        return all_finished(up, ids)

    jobs = wait_for(finished, 240, "all 50 jobs", interval=1.0)
    assert [j["state"] for j in jobs] == ["COMPLETED"] * 50, [j["error"] for j in jobs if j["error"]]
    assert peak == 3
    assert len(urls) >= 3  # each rented machine ran its own ComfyUI
    assert len({j["instance_id"] for j in jobs}) >= 2
    # Idle past the timeout: drained and destroyed, back to the minimum of 0.
    wait_for(lambda: live_instances(up) == [] and fake.instances() == [], 120, "scale back to zero")
    costs = up.client().get("/v1/admin/costs?group_by=pool").json()
    assert costs["billed"] > 0 and costs["attributed"] > 0
    assert abs(costs["attributed"] + costs["unattributed"] - costs["billed"]) < 1e-6
    status = json.loads(up.cli("status", "--json", "--all").stdout)
    assert all(i["state"] == "TERMINATED" for i in status["instances"] if i["pool"] == "gpu")


def test_instance_vanishing_mid_job(up_factory, fake: FakeVastAI) -> None:  # type: ignore[no-untyped-def]
    up: Up = up_factory(**vast_env(fake))
    start(up, fake)
    setup_pool(up, max_instances=2, idle_minutes=5)
    http = up.client()
    job = http.post(
        "/v1/jobs",
        json={"tool": "gpu-sd15", "inputs": {"prompt": "slow", "steps": 120, "width": 64, "height": 64}},
    ).json()
    running = wait_for(
        lambda: (j := http.get(f"/v1/jobs/{job['id']}").json())["state"] == "RUNNING" and j,
        120,
        "the job to run",
    )
    victim = next(i for i in live_instances(up) if i["id"] == running["instance_id"])
    fake.vanish(int(victim["provider_instance_id"]))
    done = wait_for(lambda: all_finished(up, [job["id"]]), 180, "the job to finish elsewhere")[0]
    assert done["state"] == "COMPLETED" and done["instance_id"] != victim["id"] and done["attempt"] == 2
    wait_for(lambda: no_strays(up, fake), 30, "no unknown instances")


@pytest.mark.postgres
def test_two_control_planes_on_one_postgres(up_factory, fake: FakeVastAI, database_url: str) -> None:  # type: ignore[no-untyped-def]
    if not database_url.startswith("postgresql"):
        pytest.skip("this one is about PostgreSQL")
    a: Up = up_factory(**vast_env(fake), database_url=database_url, secret_key="shared-secret-for-both")
    b: Up = up_factory(
        a.folder, **vast_env(fake), database_url=database_url, secret_key="shared-secret-for-both"
    )
    for up in (a, b):  # beside another replica, workers need one shared address (here a's)
        up.env["SWARMSTATION_PUBLIC_URL"] = a.url
    start(a, fake)
    start(b, fake)
    setup_pool(a, max_instances=2, idle_minutes=0.1)
    ids = submit_burst(a, 10) + submit_burst(b, 10)
    jobs = wait_for(lambda: all_finished(a, ids), 240, "all jobs", interval=1.0)
    assert [j["state"] for j in jobs] == ["COMPLETED"] * 20
    assert len(fake.create_bodies) <= 2 + 1  # one leader launched; no duplicate pools of machines
    wait_for(lambda: live_instances(a) == [] and fake.instances() == [], 120, "scale back to zero")


def test_idle_instance_is_parked_and_resumed_with_its_model_cache(up_factory, fake: FakeVastAI) -> None:  # type: ignore[no-untyped-def]
    up: Up = up_factory(**vast_env(fake))
    start(up, fake)
    setup_pool(up, max_instances=1, idle_minutes=0.05)  # 3 s idle, then parked
    http = up.client()
    assert http.patch("/v1/admin/pools/gpu", json={"max_parked": 1}).status_code == 200
    # the checkpoint from the catalog, so that the worker downloads it (the emulator's
    # placeholder under that name has another size and is replaced)
    weights = fake_weights(b"sd15 weights " * 40_000)
    r = http.put(
        "/v1/admin/models/upload/checkpoints/v1-5-pruned-emaonly.safetensors",
        content=weights,
        params={"kind": "checkpoint", "base_model": "SD1.5"},
    )
    assert r.status_code == 201, r.text
    ids = submit_burst(up, 2)
    inst = wait_for(
        lambda: (i := live_instances(up)) and i[0]["provider_instance_id"] and i[0], 60, "an instance"
    )
    provider_id = int(inst["provider_instance_id"])
    bootstrap = wait_for(lambda: fake.process(provider_id), 30, "its bootstrap to run")
    old_port = fake.host_port(provider_id)
    jobs = wait_for(lambda: all_finished(up, ids), 90, "the first jobs", interval=0.5)
    assert [j["state"] for j in jobs] == ["COMPLETED"] * 2, [j["error"] for j in jobs]
    assert {j["instance_id"] for j in jobs} == {inst["id"]}

    def cache(instance_id: str) -> dict[str, float]:
        counters: dict[str, float] = http.get(f"/v1/admin/instances/{instance_id}").json()["info"]["cache"]
        return counters

    # downloaded once (by a job, or a prefetch), from the worker's counters in its heartbeats
    wait_for(lambda: cache(inst["id"]).get("bytes_downloaded") == len(weights), 30, "the download")

    # idle: parked, stopped at the provider with its disk, its processes gone
    parked = wait_for(lambda: (i := live_instances(up)) and i[0]["state"] == "STOPPED" and i[0], 60, "a park")
    assert parked["id"] == inst["id"] and parked["parked_at"] and parked["comfyui_url"] is None
    # the state changes before the stop call (pools.py: a crash in between leaves a STOPPED
    # instance running, which reconcile stops again), so the provider shows it stopped just after
    def stopped_at_provider() -> bool:
        shown = fake.instance(provider_id)
        return shown is not None and (shown["actual_status"], shown["intended_status"]) == ("stopped",) * 2

    wait_for(stopped_at_provider, 15, "the stop at the provider")
    # the fake marks the instance stopped before its process group has finished exiting
    wait_for(lambda: bootstrap.poll() is not None, 15, "its processes to exit")
    # ... and forgets the process only once its log is closed, just after that
    wait_for(lambda: fake.process(provider_id) is None, 15, "the fake to forget its processes")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{old_port}/system_stats", timeout=2)
    assert http.get("/v1/admin/pools/gpu").json()["parked"] == 1

    # demand again: the same machine is started again, nothing is rented, the cache is there
    [again] = submit_burst(up, 1)
    done = wait_for(lambda: all_finished(up, [again]), 90, "the job on the resumed instance")[0]
    assert done["state"] == "COMPLETED", done["error"]
    assert done["instance_id"] == inst["id"]
    assert done["timings"]["model_bytes_downloaded"] == 0 and done["timings"]["model_cache_hits"] == 1
    assert len(fake.create_bodies) == 1 and fake.starts(provider_id) == 1
    # the resumed worker is a new process with new counters: a hit, and nothing downloaded
    resumed = wait_for(lambda: (c := cache(inst["id"])).get("hits") and c, 30, "a heartbeat")
    assert resumed["bytes_downloaded"] == 0 and resumed["bytes_hit"] == len(weights)
    detail = http.get(f"/v1/admin/instances/{inst['id']}").json()
    states = [t["to_state"] for t in detail["transitions"]]
    assert states[states.index("STOPPED") :][:2] == ["STOPPED", "PROVISIONING"]
    assert detail["comfyui_url"] and detail["parked_at"] is None
    costs = http.get("/v1/admin/costs?group_by=pool").json()
    assert abs(costs["attributed"] + costs["unattributed"] - costs["billed"]) < 1e-6


def test_interruptible_instance_outbid_mid_job(up_factory, fake: FakeVastAI) -> None:  # type: ignore[no-untyped-def]
    """A pool that rents interruptible (bid) instances: the machine running a job is outbid (Vast
    stops it), the job is requeued and completes on a replacement, and costs bill the bids."""
    up: Up = up_factory(**vast_env(fake))
    start(up, fake)
    setup_pool(up, max_instances=1, idle_minutes=5)
    http = up.client()
    r = http.patch("/v1/admin/pools/gpu", json={"rental": "interruptible", "bid_margin": 1.2})
    assert r.status_code == 200 and r.json()["rental"] == "interruptible", r.text
    job = http.post(
        "/v1/jobs",
        json={"tool": "gpu-sd15", "inputs": {"prompt": "slow", "steps": 120, "width": 64, "height": 64}},
    ).json()
    running = wait_for(
        lambda: (j := http.get(f"/v1/jobs/{job['id']}").json())["state"] == "RUNNING" and j,
        120,
        "the job to run",
    )
    victim = next(i for i in live_instances(up) if i["id"] == running["instance_id"])
    # offer 1 is the cheapest: dph_total 0.31, min_bid 0.155 → bid 0.186
    [first_body] = fake.create_bodies
    assert first_body["price"] == 0.186 and fake.search_queries[-1]["type"] == "bid"
    fake.outbid(int(victim["provider_instance_id"]))
    done = wait_for(lambda: all_finished(up, [job["id"]]), 120, "the job to finish elsewhere")[0]
    assert done["state"] == "COMPLETED" and done["instance_id"] != victim["id"] and done["attempt"] == 2
    detail = http.get(f"/v1/admin/instances/{victim['id']}").json()
    assert detail["state"] == "TERMINATED"
    reasons = [t["reason"] for t in detail["transitions"]]
    assert "outbid: the provider stopped this interruptible instance" in reasons
    assert fake.instance(int(victim["provider_instance_id"])) is None  # destroyed, not left stopped
    assert len(fake.create_bodies) == 2 and all("price" in b for b in fake.create_bodies)
    wait_for(lambda: no_strays(up, fake), 30, "no unknown instances")
    by_instance = {row["key"]: row for row in http.get("/v1/admin/costs?group_by=instance").json()["rows"]}
    # billed from creation to its end at the bid (recorded from the listing), not at the
    # offer's on-demand 0.31/h; its job was requeued, so the bill is unattributed
    lived = (
        datetime.fromisoformat(detail["terminated_at"]) - datetime.fromisoformat(detail["created_at"])
    ).total_seconds()
    assert by_instance[victim["id"]]["cost"] == pytest.approx(lived * 0.186 / 3600, rel=1e-3, abs=1e-6)
