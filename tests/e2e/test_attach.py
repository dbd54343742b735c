"""Bring your own machine, end to end with real processes: `swarmstation up` rents nothing (its
pool may launch no instance), `swarmstation instances attach` prints a token and a worker command,
that command runs beside `swarmstation comfy-emulator` (the operator's "GPU machine"), `generate`
writes a PNG through it, and a rotated or detached token is refused."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import BIN, Up, free_port, wait_for
from tests.fake_models import write_fake_model

HEARTBEAT = {"comfyui_ok": True, "disk_free_bytes": 10**10, "models": [], "running": []}


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The attached machine's ComfyUI (the emulator) with the checkpoint the tool needs."""
    comfy_dir = tmp_path / "gpu-box" / "ComfyUI"
    write_fake_model(comfy_dir / "models" / "checkpoints" / "sd_xl_base_1.0.safetensors", b"sdxl")
    port = free_port()
    log = (tmp_path / "emulator.log").open("wb")
    proc = subprocess.Popen(
        [
            str(BIN),
            "comfy-emulator",
            "--port",
            str(port),
            "--base-dir",
            str(comfy_dir),
            "--step-seconds",
            "0.01",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/system_stats", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, 30, "the emulator")
        yield url, comfy_dir
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def heartbeat_status(up: Up, token: str) -> int:
    r = httpx.post(
        f"{up.url}/worker/v1/heartbeat",
        headers={"Authorization": f"Bearer {token}"},
        json=HEARTBEAT,
        timeout=10,
    )
    return r.status_code


def test_attach_run_the_printed_worker_generate_rotate_and_detach(
    up_factory, machine: tuple[str, Path], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    comfy_url, comfy_dir = machine
    up: Up = up_factory(pool_min_instances=0, pool_max_instances=0)  # nothing is ever rented
    up.start()
    attached = up.cli(
        "instances", "attach", "--pool", "default", "--name", "desk-4090", "--price-per-hour", "0.1",
        "--server", up.url, "--comfyui", comfy_url, "--comfy-dir", str(comfy_dir), "--json",
    )  # fmt: skip
    assert attached.returncode == 0, attached.stderr
    data = json.loads(attached.stdout)
    assert set(data) == {"instance_id", "token", "command"}
    argv = shlex.split(data["command"])
    assert argv[:2] == ["swarmstation", "worker"]
    assert argv[argv.index("--token") + 1] == data["token"]
    assert argv[argv.index("--comfy-dir") + 1] == str(comfy_dir)

    worker_log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen([str(BIN), *argv[1:]], stdout=worker_log, stderr=subprocess.STDOUT)
    try:
        http = up.client()

        def attached_state() -> str | None:
            inst = http.get(f"/v1/admin/instances/{data['instance_id']}").json()
            return str(inst["state"]) if inst["state"] == "IDLE" else None

        wait_for(attached_state, 60, "the attached instance to be IDLE")
        status = json.loads(up.cli("status", "--json").stdout)
        shown = next(i for i in status["instances"] if i["id"] == data["instance_id"])
        assert shown["provider"] == "static" and shown["info"]["name"] == "desk-4090"

        made = up.cli(
            "generate", "a fox on a desk", "--tool", "sdxl-txt2img", "--out", "fox.png", timeout=180
        )
        assert made.returncode == 0, made.stdout + made.stderr + (tmp_path / "worker.log").read_text()
        assert (up.folder / "fox.png").read_bytes()[:4] == b"\x89PNG"
        jobs = http.get("/v1/admin/instances/" + data["instance_id"]).json()
        assert jobs["state"] in ("IDLE", "BUSY")

        # a leaked token is replaced: the old one is refused at once (and its worker stops)
        rotated = up.cli("instances", "rotate-token", data["instance_id"], "--json")
        assert rotated.returncode == 0, rotated.stderr
        new = json.loads(rotated.stdout)
        assert new["token"] != data["token"]
        assert heartbeat_status(up, data["token"]) == 401
        assert worker.wait(timeout=60) != 0
        assert heartbeat_status(up, new["token"]) == 200

        detached = up.cli("instances", "detach", data["instance_id"])
        assert detached.returncode == 0 and "detached" in detached.stdout, detached.stderr
        assert heartbeat_status(up, new["token"]) in (401, 410)
        assert http.get(f"/v1/admin/instances/{data['instance_id']}").json()["state"] == "TERMINATED"
        assert not list((up.data_dir / "instances").glob("*/state.json"))  # nothing was launched
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
