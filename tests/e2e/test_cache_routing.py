"""End to end: three emulated instances whose model caches hold three LoRAs each (a disk budget),
a Zipf-popular set of twelve real (small) LoRA files, and the same trace run twice: cache-aware
routing sends jobs to the instances that hold their LoRAs and downloads measurably less than
first-in first-out routing, which ignores caches and keeps evicting."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from tests.e2e.conftest import Up, wait_for, wait_idle
from tests.fakes.model_hubs import FakeHubs, lora_bytes

pytestmark = pytest.mark.slow

LORAS = 12
JOBS = 48
LORA_BYTES = 2_000_000
BATCH = 3


def zipf_trace(seed: int) -> list[int]:
    rng = random.Random(seed)
    weights = [1 / (k + 1) for k in range(LORAS)]  # Zipf, s = 1
    return rng.choices(range(LORAS), weights=weights, k=JOBS)


def run_trace(up: Up, hubs: FakeHubs, trace: list[int]) -> list[dict[str, Any]]:
    up.start()
    http = up.client()
    slugs = []
    for k in range(LORAS):
        imported = json.loads(up.cli("loras", "import", f"{hubs.url}/models/{500 + k}", "--json").stdout)
        assert up.cli("loras", "approve", imported["slug"]).returncode == 0
        slugs.append(imported["slug"])
    wait_idle(http, 3)
    jobs: list[dict[str, Any]] = []
    for start in range(0, len(trace), BATCH):
        ids = [
            http.post(
                "/v1/jobs",
                json={
                    "tool": "sdxl-txt2img",
                    "inputs": {
                        "prompt": f"<lora:{slugs[k]}:0.8> a lighthouse",
                        "steps": 4,
                        "width": 64,
                        "height": 64,
                    },
                },
            ).json()["id"]
            for k in trace[start : start + BATCH]
        ]
        done = wait_for(
            lambda ids=ids: (
                (js := [http.get(f"/v1/jobs/{i}").json() for i in ids])
                and all(j["state"] in ("COMPLETED", "FAILED") for j in js)
                and js
            ),
            60,
            "a batch",
        )
        jobs.extend(done)
    up.stop()
    return jobs


def test_cache_aware_routing_downloads_less_than_fifo(tmp_path, up_factory) -> None:  # type: ignore[no-untyped-def]
    hubs = FakeHubs().start()
    for k in range(LORAS):
        hubs.add_civitai_lora(
            500 + k,
            5000 + k,
            name=f"Style {k}",
            trained_words=[f"style{k}"],
            content=lora_bytes(f"style-{k}", size=2_000_000),
        )
    trace = zipf_trace(seed=7)
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        for policy in ("cache", "fifo"):
            folder = tmp_path / policy
            folder.mkdir()
            up: Up = up_factory(
                folder,
                routing=policy,
                pool_min_instances=3,
                pool_max_instances=3,
                civitai_base_url=hubs.url,
                emulator_step_seconds=0.05,
                emulator_model_load_seconds=0,
            )
            try:
                results[policy] = run_trace(up, hubs, trace)
            finally:
                up.cleanup()
    finally:
        hubs.stop()
    for policy, jobs in results.items():
        assert [j["state"] for j in jobs] == ["COMPLETED"] * JOBS, (policy, [j["error"] for j in jobs])
    downloads = {p: sum(j["timings"]["models_downloaded"] for j in js) for p, js in results.items()}
    print(json.dumps({"downloads": downloads, "jobs": JOBS, "loras": LORAS}))
    # Each LoRA must be fetched at least once; cache-aware routing should rarely fetch one twice.
    assert downloads["cache"] < downloads["fifo"]
