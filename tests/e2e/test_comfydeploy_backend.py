"""End to end: ComfyUI Deploy (a fake that speaks its API and sends webhooks) as a second
execution backend behind a per-tool traffic split, with lost, duplicated and reordered webhooks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import Up, wait_for
from tests.fakes.comfydeploy import FakeComfyDeploy

pytestmark = pytest.mark.slow


@pytest.fixture
def fake() -> Iterator[FakeComfyDeploy]:
    with FakeComfyDeploy(queue_delay=0.1, step_delay=0.1, steps=3) as f:
        yield f


def start(up_factory: Any, fake: FakeComfyDeploy) -> Up:
    up: Up = up_factory(pool_min_instances=1, comfydeploy_poll_seconds=1.0)
    up.env.update({"COMFY_DEPLOY_API_KEY": fake.api_key, "COMFY_DEPLOY_BASE_URL": fake.url})
    up.start()
    return up


def finished(http: httpx.Client, ids: list[str]) -> list[dict[str, Any]] | None:
    jobs = [http.get(f"/v1/jobs/{i}").json() for i in ids]
    return jobs if all(j["state"] in ("COMPLETED", "FAILED") for j in jobs) else None


def submit(http: httpx.Client, n: int, tool: str = "sd15-txt2img") -> list[str]:
    return [
        http.post("/v1/jobs", json={"tool": tool, "inputs": {"prompt": f"p{k}"}}).json()["id"]
        for k in range(n)
    ]


def test_jobs_run_on_comfydeploy_like_on_the_pool(up_factory, fake: FakeComfyDeploy) -> None:  # type: ignore[no-untyped-def]
    up = start(up_factory, fake)
    assert "dep-flux" in up.cli("comfydeploy", "deployments").stdout
    r = up.cli("tools", "split", "sd15-txt2img", "--comfydeploy", "100", "--deployment", "dep-flux")
    assert r.returncode == 0, r.stderr
    made = up.cli("generate", "a red fox", "--tool", "sd15-txt2img", "--out", "fox.png", "--json")
    assert made.returncode == 0, made.stderr
    job = json.loads(made.stdout)
    assert job["backend"] == "comfydeploy" and job["state"] == "COMPLETED" and job["instance_id"] is None
    with Image.open(up.folder / "fox.png") as img:
        assert img.format == "PNG"
    assert job["timings"]["cost_usd"] >= 0 and job["timings"]["run_seconds"] > 0
    run = next(r for r in fake.runs.values())
    assert run.inputs["prompt"] == "a red fox"
    events = [
        json.loads(line[6:])
        for line in httpx.get(
            f"{up.url}/v1/jobs/{job['id']}/events", headers={"Authorization": f"Bearer {up.admin_key}"}
        ).text.splitlines()
        if line.startswith("data: ")
    ]
    states = [e["state"] for e in events if "state" in e]
    assert states == ["QUEUED", "ASSIGNED", "RUNNING", "COMPLETED"]
    assert any("progress" in e for e in events)

    http = up.client()
    # A lost final webhook: polling finishes the job. Duplicated and reordered ones change nothing.
    fake.lose_statuses = {"success"}
    lost = submit(http, 1)
    fake.lose_statuses = set()
    fake.duplicate, fake.shuffle = 3, True
    noisy = submit(http, 3)
    jobs = wait_for(lambda: finished(http, lost + noisy), 60, "jobs to finish")
    assert [j["state"] for j in jobs] == ["COMPLETED"] * 4
    for j in jobs:
        body = httpx.get(
            f"{up.url}/v1/jobs/{j['id']}/events", headers={"Authorization": f"Bearer {up.admin_key}"}
        ).text
        assert body.count('"state": "COMPLETED"') == 1 and len(j["outputs"]) == 1
    fake.duplicate, fake.shuffle = 1, False
    fake.fail_message = "CUDA out of memory"
    doomed = submit(http, 1)
    failed = wait_for(lambda: finished(http, doomed), 30, "a failed run")[0]
    assert failed["state"] == "FAILED" and "CUDA out of memory" in failed["error"]
    fake.fail_message = None
    # A deployment offered as a tool of its own: listed with the tools, and run there.
    r = up.cli("tools", "from-deployment", "dep-flux", "--slug", "flux-managed", "--like", "sd15-txt2img")
    assert r.returncode == 0, r.stderr
    assert "flux-managed" in {t["slug"] for t in json.loads(up.cli("tools", "list", "--json").stdout)}
    listed = json.loads(up.cli("comfydeploy", "deployments", "--json").stdout)
    assert "flux-managed" in listed[0]["tools"]
    managed = submit(http, 1, tool="flux-managed")
    ran = wait_for(lambda: finished(http, managed), 30, "the deployment's tool")[0]
    assert ran["state"] == "COMPLETED" and ran["backend"] == "comfydeploy"
    # A forged webhook is refused.
    r = httpx.post(
        f"{up.url}/v1/webhooks/comfydeploy",
        params={"job": job["id"], "secret": "0" * 64},
        json={"run_id": "x", "status": "success"},
    )
    assert r.status_code == 403


def test_traffic_split_is_sticky_and_costs_compare(up_factory, fake: FakeComfyDeploy) -> None:  # type: ignore[no-untyped-def]
    up = start(up_factory, fake)
    http = up.client()
    r = http.put(
        "/v1/admin/tools/sd15-txt2img/split",
        json={"comfydeploy_percent": 50, "deployment_id": "dep-flux"},
    )
    assert r.status_code == 200, r.text
    ids = submit(http, 16)
    jobs = wait_for(lambda: finished(http, ids), 120, "16 jobs", interval=0.5)
    assert [j["state"] for j in jobs] == ["COMPLETED"] * 16
    backends = {j["backend"] for j in jobs}
    assert backends == {"pool", "comfydeploy"}
    assert all((j["instance_id"] is None) == (j["backend"] == "comfydeploy") for j in jobs)
    # Changing the split later does not move jobs that were already routed.
    http.put("/v1/admin/tools/sd15-txt2img/split", json={"comfydeploy_percent": 0})
    again = [http.get(f"/v1/jobs/{i}").json()["backend"] for i in ids]
    assert again == [j["backend"] for j in jobs]
    assert {j["backend"] for j in (http.get(f"/v1/jobs/{i}").json() for i in submit(http, 3))} == {"pool"}
    costs = http.get("/v1/admin/costs", params={"group_by": "backend"}).json()
    assert {r["key"] for r in costs["rows"]} >= {"pool", "comfydeploy"}
    r = http.put("/v1/admin/tools/sd15-txt2img/split", json={"comfydeploy_percent": 101})
    assert r.status_code == 422
