"""End to end: `swarmstation up`, then `swarmstation generate` writes a PNG; and the faults."""

from __future__ import annotations

import json
import os
import signal
import threading
from typing import Any

import pytest
from PIL import Image

from swarmstation.client import Client
from tests.e2e.conftest import Up, wait_for, wait_idle

pytestmark = pytest.mark.slow

INVERT_TOOL = {
    "slug": "invert",
    "name": "Inverted blank",
    "description": "EmptyImage, inverted",
    "category": "utility",
    "base_model": "other",
    "workflow": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}},
    },
    "inputs": [{"name": "width", "type": "integer", "bindings": ["1.width"], "minimum": 16, "maximum": 512}],
}


def test_up_generate_writes_png_with_progress_events(up_factory) -> None:  # type: ignore[no-untyped-def]
    up: Up = up_factory(emulator_step_seconds=0.05)
    up.start()
    try:
        # Follow the job's event stream the way a browser would, while the CLI runs the job.
        seen: list[tuple[str, dict[str, Any]]] = []
        with Client(up.url, up.admin_key) as client:
            job = client.post(
                "/v1/jobs", json={"tool": "sd15-txt2img", "inputs": {"prompt": "a fox", "steps": 12}}
            )
            seen.extend((ev.type, ev.data) for ev in client.events(job["id"]))
        states = [d["state"] for t, d in seen if t == "state"]
        assert states == ["QUEUED", "ASSIGNED", "RUNNING", "COMPLETED"]
        progress = [d["progress"] for t, d in seen if t == "progress"]
        assert progress and progress == sorted(progress) and 0 < progress[-1] <= 1

        result = up.cli("generate", "a red fox in the snow", "--tool", "sdxl-txt2img", "--out", "fox.png")
        assert result.returncode == 0, result.stderr
        assert "COMPLETED" in result.stderr  # the rich progress bar's last state
        with Image.open(up.folder / "fox.png") as img:
            assert img.format == "PNG" and img.size == (1024, 1024)

        status = up.cli("status", "--json")
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert data["pools"][0]["name"] == "default"
        assert data["queue"]["completed"] == 2
        assert any(i["state"] in ("IDLE", "BUSY") for i in data["instances"])
        assert up.cli("status").returncode == 0

        tools = json.loads(up.cli("tools", "list", "--json").stdout)
        assert "flux-txt2img" in {t["slug"] for t in tools}

        # An admin's own tool, added from a file, runs like a bundled one.
        (up.folder / "invert.json").write_text(json.dumps(INVERT_TOOL))
        added = up.cli("tools", "add", "invert.json")
        assert added.returncode == 0, added.stderr
        shown = json.loads(up.cli("tools", "show", "invert", "--json").stdout)
        assert shown["inputs"][0]["name"] == "width"
        made = up.cli("generate", "-", "--tool", "invert", "--input", "width=96", "--out", "inv.png")
        assert made.returncode == 0, made.stderr
        with Image.open(up.folder / "inv.png") as img:
            assert img.size == (96, 64) and img.getpixel((0, 0)) == (255, 255, 255)  # black, inverted
        assert up.cli("tools", "remove", "invert").returncode == 0
        assert up.cli("tools", "show", "invert").returncode == 1
        metrics = up.client().get("/metrics").text
        assert 'swarmstation_jobs{state="COMPLETED"} 3.0' in metrics
    finally:
        up.stop()
    assert not any(_alive(int(s["worker_pid"])) for s in up.instance_state_files())  # up stops its instances


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def test_cli_reports_bad_input_without_traceback(up_factory) -> None:  # type: ignore[no-untyped-def]
    up: Up = up_factory(pool_min_instances=0)
    up.start()
    r = up.cli("generate", "x", "--tool", "no-such-tool")
    assert r.returncode == 1 and "unknown tool" in r.stderr and "Traceback" not in r.stderr
    r = up.cli("generate", "x", "--tool", "sd15-txt2img", "--input", "width=abc")
    assert r.returncode == 1 and "inputs.width" in r.stderr and "Traceback" not in r.stderr
    r = up.cli("tools", "add", "missing.json")
    assert r.returncode == 1 and "cannot read" in r.stderr
    r = up.cli("status", "--api-key", "ss_wrong")
    assert r.returncode == 1 and "401" in r.stderr
    r = up.cli("pool", "add", "small", "--set", "min_instances=5", "--set", "max_instances=1")
    assert r.returncode == 1 and "min_instances" in r.stderr and "Traceback" not in r.stderr
    r = up.cli(
        "pool", "add", "small", "--set", "max_instances=3", "--set", 'gpu_filters={"gpu_names": ["RTX 4090"]}'
    )
    assert r.returncode == 0, r.stderr
    shown = json.loads(up.cli("pool", "show", "small", "--json").stdout)
    assert shown["gpu_filters"]["gpu_names"] == ["RTX 4090"] and shown["max_instances"] == 3
    assert up.cli("pool", "set", "small", "--set", "max_instances=0").returncode == 0
    assert up.cli("pool", "remove", "small").returncode == 0
    r = up.cli("costs", "--by", "day")
    assert r.returncode == 0 and "billed" in r.stdout
    r = up.cli("costs", "--by", "planet")
    assert r.returncode == 1 and "Traceback" not in r.stderr


def test_worker_killed_mid_job_completes_elsewhere(up_factory) -> None:  # type: ignore[no-untyped-def]
    up: Up = up_factory(
        pool_min_instances=2,
        pool_max_instances=2,
        emulator_step_seconds=0.2,
        heartbeat_timeout_seconds=4,
        control_interval_seconds=0.5,
        lease_seconds=60,
    )
    up.start()
    http = up.client()
    wait_idle(http, 2)
    job = http.post(
        "/v1/jobs", json={"tool": "sd15-txt2img", "inputs": {"prompt": "fox", "steps": 30}}
    ).json()
    running = wait_for(
        lambda: (j := http.get(f"/v1/jobs/{job['id']}").json())["state"] == "RUNNING" and j,
        30,
        "the job to run",
    )
    victim = running["instance_id"]
    state = next(s for s in up.instance_state_files() if s["instance_id"] == victim)
    os.kill(int(state["worker_pid"]), signal.SIGKILL)  # type: ignore[call-overload]

    done = wait_for(
        lambda: (j := http.get(f"/v1/jobs/{job['id']}").json())["state"] in ("COMPLETED", "FAILED") and j,
        90,
        "the job to finish elsewhere",
    )
    assert done["state"] == "COMPLETED", done
    assert done["instance_id"] != victim and done["attempt"] == 2
    dead = http.get(f"/v1/admin/instances/{victim}").json()
    assert [t["to_state"] for t in dead["transitions"]][-2:] == ["UNHEALTHY", "TERMINATED"]
    # The local provider sees the process exit; a remote one would see the heartbeats stop.
    assert dead["transitions"][-2]["reason"] in ("its processes exited", "no heartbeat for 4s")
    image = http.get(done["outputs"][0]["url"])
    assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
    # The autoscaler replaced the dead instance.
    wait_for(
        lambda: sum(i["state"] in ("IDLE", "BUSY") for i in http.get("/v1/admin/instances").json()) == 2,
        90,
        "a replacement instance",
    )


def test_control_plane_restart_while_jobs_run(up_factory) -> None:  # type: ignore[no-untyped-def]
    up: Up = up_factory(
        pool_min_instances=2,
        pool_max_instances=2,
        emulator_step_seconds=0.1,
        heartbeat_timeout_seconds=10,
        control_interval_seconds=0.5,
        lease_seconds=20,
    )
    up.start()
    http = up.client()
    wait_idle(http, 2)
    ids = [
        http.post(
            "/v1/jobs", json={"tool": "sd15-txt2img", "inputs": {"prompt": f"p{n}", "steps": 15}}
        ).json()["id"]
        for n in range(6)
    ]
    wait_for(
        lambda: any(http.get(f"/v1/jobs/{i}").json()["state"] == "RUNNING" for i in ids),
        30,
        "a running job",
    )
    http.close()
    up.kill()
    threading.Event().wait(3.0)  # workers keep going and retry their reports
    up.start()
    http = up.client()

    def all_done() -> list[dict[str, Any]] | None:
        jobs = [http.get(f"/v1/jobs/{i}").json() for i in ids]
        return jobs if all(j["state"] in ("COMPLETED", "FAILED") for j in jobs) else None

    jobs = wait_for(all_done, 120, "every job to end")
    for j in jobs:
        assert j["state"] == "COMPLETED" or j["error"], j
    assert sum(j["state"] == "COMPLETED" for j in jobs) == len(ids), [j["error"] for j in jobs]
