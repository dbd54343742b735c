"""Stop and start at the providers: the `vastai` provider against the fake Vast.ai (protocols.md
§2.6: `PUT /instances/{id}/ {"state": ...}`), the fake's stopped instances keeping their disk and
running their onstart again, a start that never comes up, and the `local` provider stopping an
instance's processes while its folder stays."""

from __future__ import annotations

import json
import os
import random
import stat
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from swarmstation.domain.offers import OfferFilters
from swarmstation.providers.base import LaunchSpec, ProviderError
from swarmstation.providers.local import LocalProvider, _alive
from swarmstation.providers.vastai.instances import instance_from_json
from swarmstation.providers.vastai.provider import VastAIProvider
from tests.fakes.vastai import FakeVastAI, make_offer

SPEC = LaunchSpec(
    instance_id="inst-1",
    pool="gpu",
    server_url="http://control.example:8000",
    worker_token="worker-secret-token-abc",
    env={"SWARMSTATION_PRELOAD_MODELS": "[]"},
    image="nvidia/cuda:12.4.1-runtime-ubuntu22.04",
    onstart="echo starting",
    filters=OfferFilters(max_price_per_hour=1.0),
)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture
def servers() -> Iterator[Callable[..., FakeVastAI]]:
    started: list[FakeVastAI] = []

    def make(**options: Any) -> FakeVastAI:
        options.setdefault("offers", [make_offer(1), make_offer(2, dph_total=0.5)])
        fake = FakeVastAI(**options).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


def connect(fake: FakeVastAI) -> VastAIProvider:
    return VastAIProvider(fake.api_key, base_url=fake.url, sleep=lambda _: None, rng=random.Random(3))


def test_vastai_stop_and_start(servers: Callable[..., FakeVastAI]) -> None:
    fake = servers()
    provider = connect(fake)
    try:
        provider_id = provider.launch(SPEC)
        [running] = provider.list()
        assert running.running and not running.stopped
        provider.stop(provider_id)
        [stopped] = provider.list()
        assert (stopped.running, stopped.stopped, stopped.status) == (True, True, "stopped")
        shown = fake.instance(int(provider_id))
        assert shown is not None and shown["intended_status"] == "stopped" and "ports" not in shown
        provider.stop(provider_id)  # idempotent
        provider.start(provider_id)
        [again] = provider.list()
        assert again.running and not again.stopped and again.status == "running"
        assert fake.starts(int(provider_id)) == 1 and len(fake.create_bodies) == 1
        bodies = [c.path for c in fake.calls if c.endpoint == "manage"]
        assert bodies == [f"/api/v0/instances/{provider_id}/"] * 3
        # retried like any idempotent call; an unknown instance is a clear error
        fake.fail("manage", 502, times=2)
        provider.stop(provider_id)
        assert fake.count("manage", 502) == 2 and provider.list()[0].stopped
        with pytest.raises(ProviderError, match="404"):
            provider.start("424242")
        with pytest.raises(ProviderError, match=r"not a Vast\.ai instance id"):
            provider.stop("local-1")
    finally:
        provider.close()


def test_vastai_a_start_that_never_comes_up(servers: Callable[..., FakeVastAI]) -> None:
    fake = servers()
    provider = connect(fake)
    try:
        provider_id = provider.launch(SPEC)
        provider.stop(provider_id)
        fake.fail_next_start()
        provider.start(provider_id)  # Vast says yes; the GPU is gone all the same
        shown = fake.instance(int(provider_id))
        assert shown is not None
        assert (shown["actual_status"], shown["intended_status"]) == ("stopped", "running")
        [stuck] = provider.list()
        assert stuck.running and stuck.stopped  # not lost: the resume timeout decides
        assert fake.instance(int(provider_id))["actual_status"] == "stopped"  # type: ignore[index]
        provider.start(provider_id)  # the next start finds a GPU
        assert provider.list()[0].status == "running"
    finally:
        provider.close()


def test_vastai_stopped_instances_in_listings() -> None:
    base = {"id": 7, "label": "swarmstation-a", "machine_id": 3}
    parked = instance_from_json({**base, "actual_status": "stopped", "intended_status": "stopped"})
    stopping = instance_from_json({**base, "actual_status": "running", "intended_status": "stopped"})
    starting = instance_from_json({**base, "actual_status": "stopped", "intended_status": "running"})
    assert parked is not None and (parked.running, parked.stopped) == (True, True)
    assert stopping is not None and (stopping.running, stopping.stopped) == (True, True)
    assert starting is not None and (starting.running, starting.stopped) == (True, True)
    # a parked instance is not judged by the message of its last start; one being started is
    msg = {"status_msg": "Error: unable to start container: no GPU available"}
    old_msg = instance_from_json({**base, **msg, "actual_status": "stopped", "intended_status": "stopped"})
    failed = instance_from_json({**base, **msg, "actual_status": "stopped", "intended_status": "running"})
    assert old_msg is not None and old_msg.running and old_msg.stopped
    assert failed is not None and not failed.running
    for terminal in ("exited", "unknown", "offline"):
        dead = instance_from_json({**base, "actual_status": terminal, "intended_status": "stopped"})
        assert dead is not None and not dead.running


def test_fake_stop_keeps_the_disk_and_start_runs_onstart_again(servers: Callable[..., FakeVastAI]) -> None:
    fake = servers(run_onstart=True, load_seconds=0.1)
    provider = connect(fake)
    onstart = 'echo "$VAST_TCP_PORT_8188" >> boots.txt\nexec sleep 60\n'
    try:
        provider_id = provider.launch(replace(SPEC, onstart=onstart))
        pid = int(provider_id)
        first = wait_until(lambda: fake.process(pid))
        workdir = fake.instance_workdir(pid)
        assert workdir is not None
        wait_until(lambda: (workdir / "boots.txt").exists())
        (workdir / "ComfyUI").mkdir()
        (workdir / "ComfyUI" / "model.safetensors").write_bytes(b"weights")  # the disk's contents
        provider.stop(provider_id)
        assert first.poll() is not None and fake.process(pid) is None
        time.sleep(0.3)
        assert fake.process(pid) is None  # a stopped instance runs nothing
        old_port = fake.host_port(pid)
        provider.start(provider_id)
        second = wait_until(lambda: fake.process(pid))
        assert second is not first and second.poll() is None
        assert fake.instance_workdir(pid) == workdir
        assert (workdir / "ComfyUI" / "model.safetensors").read_bytes() == b"weights"
        boots = wait_until(lambda: len((workdir / "boots.txt").read_text().split()) == 2 and workdir)
        ports = (boots / "boots.txt").read_text().split()
        assert ports == [str(old_port), str(fake.host_port(pid))]  # the bootstrap sees the new port
        # a start that fails runs no onstart
        provider.stop(provider_id)
        fake.fail_next_start()
        provider.start(provider_id)
        time.sleep(0.3)
        assert fake.process(pid) is None
    finally:
        provider.close()


FAKE_PYTHON = """#!/usr/bin/env bash
# stands in for `python -m swarmstation.cli ...`: records what it was started with, then waits
printf '%s|%s|%s\\n' "$3" "${SWARMSTATION_WORKER_TOKEN:-}" "${SWARMSTATION_PRELOAD_MODELS:-}" \\
  >> "$(dirname "$0")/started.txt"
exec sleep 60
"""


def test_local_stop_keeps_the_folder_and_start_runs_the_same_worker(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    provider = LocalProvider(tmp_path / "instances", python=str(python))
    folder = tmp_path / "instances" / SPEC.instance_id
    try:
        provider.launch(replace(SPEC, preload_models=(("checkpoints", "a.safetensors"),)))
        state = json.loads((folder / "state.json").read_text())
        assert SPEC.worker_token not in (folder / "state.json").read_text()  # no secret in state.json
        token_file = folder / "worker.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        [listed] = provider.list()
        assert listed.running and not listed.stopped
        pids = [int(state["worker_pid"]), int(state["emulator_pid"])]
        assert all(map(_alive, pids))
        started_txt = tmp_path / "started.txt"
        wait_until(lambda: started_txt.exists() and len(started_txt.read_text().splitlines()) == 2)

        provider.stop(SPEC.instance_id)
        assert not any(map(_alive, pids))
        [parked] = provider.list()
        assert parked.running and parked.stopped and parked.status == "stopped"
        assert (folder / "comfyui" / "models" / "checkpoints" / "a.safetensors").exists()  # the cache
        provider.stop(SPEC.instance_id)  # idempotent

        provider.start(SPEC.instance_id)
        again = json.loads((folder / "state.json").read_text())
        new_pids = [int(again["worker_pid"]), int(again["emulator_pid"])]
        assert set(new_pids).isdisjoint(pids) and all(map(_alive, new_pids))
        [back] = provider.list()
        assert back.running and not back.stopped
        provider.start(SPEC.instance_id)  # running already: nothing new
        assert json.loads((folder / "state.json").read_text())["worker_pid"] == again["worker_pid"]
        started = wait_until(lambda: len(lines := started_txt.read_text().splitlines()) == 4 and lines)
        workers = [line for line in started if line.startswith("worker|")]
        emulators = [line for line in started if line.startswith("comfy-emulator|")]
        # the same token and environment both times; ComfyUI never gets the token
        assert workers == [f"worker|{SPEC.worker_token}|[]"] * 2
        assert emulators == ["comfy-emulator||[]"] * 2

        provider.destroy(SPEC.instance_id)
        assert not any(map(_alive, new_pids)) and provider.list() == [] and not token_file.exists()
        with pytest.raises(ProviderError):
            provider.start(SPEC.instance_id)
    finally:
        for p in provider.list():
            provider.destroy(p.provider_id)


def test_local_start_of_an_unknown_instance_is_an_error(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "instances", python=sys.executable)
    with pytest.raises(ProviderError):
        provider.stop("nope")
    with pytest.raises(ProviderError):
        provider.start("nope")
    assert os.listdir(tmp_path / "instances") == []
