"""Real workers and emulators (subprocesses) against a control plane served over real HTTP in this
process, with no provider: nothing outside the worker sees its ComfyUI die, as on a rented
machine (issue 11, items 16 and 18)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from swarmstation.api.app import ControlPlane, build
from swarmstation.catalog import bundled_tools
from swarmstation.config import Settings
from swarmstation.domain.states import TERMINAL_JOB_STATES, InstanceState, JobState
from swarmstation.domain.tools import bind_inputs
from swarmstation.providers.local import write_placeholder_models
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, Job, utcnow
from tests.e2e.conftest import free_port, wait_for
from tests.helpers import add_instance, add_user, submit


@dataclass
class Served:
    """A control plane on a real port, in a thread of this process."""

    plane: ControlPlane
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.plane.begin_shutdown()
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.plane.state.engine.dispose()


def serve(data_dir: Path, port: int | None = None, **overrides: Any) -> Served:
    port = port or free_port()
    settings = Settings(
        data_dir=data_dir,
        port=port,  # the local object store's URLs name it
        provider="none",
        heartbeat_timeout_seconds=10,
        lease_seconds=30,
        max_attempts=2,
        scheduler_interval_seconds=0.2,
        **overrides,
    )
    plane = build(settings, provider=None)
    server = uvicorn.Server(uvicorn.Config(plane.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the control plane to listen")
    return Served(plane, port, server, thread)


@dataclass
class Machine:
    """An emulated ComfyUI and its worker, as processes of their own."""

    folder: Path
    emulator: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    instance_id: str = ""

    @property
    def worker_log(self) -> str:
        return (self.folder / "worker.log").read_text(errors="replace")


@dataclass
class Machines:
    root: Path
    started: list[Machine] = field(default_factory=list)

    def start(self, served: Served, token: str, instance_id: str = "", *worker_args: str) -> Machine:
        folder = self.root / f"m{len(self.started)}"
        comfy = folder / "comfyui"
        for name in ("input", "output", "temp"):
            (comfy / name).mkdir(parents=True, exist_ok=True)
        write_placeholder_models(comfy, _sd15_models())
        port = free_port()
        cli = [sys.executable, "-m", "swarmstation.cli"]
        emulator = subprocess.Popen(
            [*cli, "comfy-emulator", "--port", str(port), "--base-dir", str(comfy), "--step-seconds", "0.02"],
            stdout=(folder / "emulator.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        worker = subprocess.Popen(
            [
                *cli,
                "worker",
                "--server",
                served.url,
                "--token",
                token,
                "--comfyui",
                f"http://127.0.0.1:{port}",
                "--comfy-dir",
                str(comfy),
                *worker_args,
            ],
            stdout=(folder / "worker.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        machine = Machine(folder, emulator, worker, instance_id)
        self.started.append(machine)
        return machine

    def stop_all(self) -> None:
        for m in self.started:
            for proc in (m.worker, m.emulator):
                if proc.poll() is None:
                    proc.kill()
                proc.wait()


def _sd15_models() -> list[tuple[str, str]]:
    spec = next(t for t in bundled_tools() if t.slug == "sd15-txt2img")
    return [(m.folder, m.name) for m in bind_inputs(spec, {"prompt": "x"}, random_seed=1).required_models]


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    m = Machines(tmp_path / "machines")
    yield m
    m.stop_all()


@pytest.fixture
def served_factory(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    running: list[Served] = []

    def factory(name: str = "plane", port: int | None = None, **overrides: Any) -> Served:
        s = serve(tmp_path / name, port, **overrides)
        running.append(s)
        return s

    yield factory
    for s in running:
        if s.thread.is_alive():
            s.stop()


def _new_instance(served: Served) -> tuple[str, str]:
    with transaction(served.plane.state.sessions) as s:
        inst, token = add_instance(s, utcnow(), state=InstanceState.PROVISIONING)
        return inst.id, token


def _instance_state(served: Served, instance_id: str) -> Instance:
    with transaction(served.plane.state.sessions) as s:
        inst = s.get(Instance, instance_id)
        assert inst is not None
        s.expunge(inst)
        return inst


def _wait_idle(served: Served, *machines: Machine) -> None:
    for m in machines:
        try:
            wait_for(
                lambda m=m: _instance_state(served, m.instance_id).state == InstanceState.IDLE,  # type: ignore[misc]
                60,
                f"instance {m.instance_id} to be IDLE",
            )
        except AssertionError:
            raise AssertionError(m.worker_log) from None


def test_a_worker_whose_comfyui_died_fails_no_job_and_the_jobs_go_elsewhere(served_factory, machines) -> None:  # type: ignore[no-untyped-def]
    served = served_factory()
    broken = machines.start(served, *reversed(_new_instance(served)))
    healthy = machines.start(served, *reversed(_new_instance(served)))
    _wait_idle(served, broken, healthy)
    broken.emulator.send_signal(signal.SIGKILL)  # the provider does not see it: nothing does
    broken.emulator.wait()
    with transaction(served.plane.state.sessions) as s:
        user, _ = add_user(s, utcnow())
        ids = [submit(s, user, utcnow(), prompt=f"fox {n}", max_attempts=2).id for n in range(8)]
    served.plane.state.loops.poke()

    def finished() -> list[Job] | None:
        with transaction(served.plane.state.sessions) as s:
            jobs = [s.get(Job, i) for i in ids]
            for j in jobs:
                s.expunge(j)
        return jobs if all(j.state in TERMINAL_JOB_STATES for j in jobs) else None  # type: ignore[union-attr]

    try:
        jobs = wait_for(finished, 90, "every job to end")
    except AssertionError:
        raise AssertionError(broken.worker_log[-3000:]) from None
    assert [j.state for j in jobs] == [JobState.COMPLETED] * len(ids), [j.error for j in jobs]
    assert {j.instance_id for j in jobs} == {healthy.instance_id}
    assert "is not answering; taking no jobs" in broken.worker_log
    # out of routing: it says its ComfyUI is down, and is declared unhealthy soon after
    inst = _instance_state(served, broken.instance_id)
    assert inst.info.get("comfyui_down_since") or inst.state == InstanceState.UNHEALTHY
    assert broken.worker.poll() is None or broken.worker.returncode == 0  # no crash


def test_a_worker_exits_when_its_control_plane_stays_unreachable(served_factory, machines) -> None:  # type: ignore[no-untyped-def]
    served = served_factory()
    instance_id, token = _new_instance(served)
    m = machines.start(served, token, instance_id, "--unreachable-timeout", "3")
    _wait_idle(served, m)
    served.stop()
    stopped_at = time.monotonic()
    try:
        m.worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker kept running:\n{m.worker_log[-2000:]}") from None
    assert m.worker.returncode == 1
    assert time.monotonic() - stopped_at < 20
    assert "exiting: the control plane has not answered for 3s" in m.worker_log
    assert "Traceback" not in m.worker_log


def test_a_worker_exits_when_the_control_plane_does_not_know_it(served_factory, machines) -> None:  # type: ignore[no-untyped-def]
    served = served_factory()
    instance_id, token = _new_instance(served)
    m = machines.start(served, token, instance_id)
    _wait_idle(served, m)
    # a new control plane with a new database at the same address: this instance is unknown there
    served.stop()
    served_factory("other-plane", port=served.port)
    try:
        m.worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker kept running:\n{m.worker_log[-2000:]}") from None
    assert m.worker.returncode == 1
    assert "exiting: the control plane does not know this instance: invalid worker token" in m.worker_log
    assert "Traceback" not in m.worker_log
    with httpx.Client() as http:  # it said so once, and stopped asking
        assert http.get(f"{served.url}/healthz").status_code == 200


def test_progress_is_coalesced_to_one_report_an_interval_and_only_when_it_moved() -> None:
    from swarmstation.worker.agent import ProgressCoalescer

    c = ProgressCoalescer(interval=0.25, started=100.0)
    # ComfyUI's steps, 0.1 s apart: the first an interval after the start, then one per interval
    sent = [(t, c.offer(step, 20, 100.0 + t)) for step, t in enumerate([0.1 * n for n in range(1, 21)], 1)]
    times = [round(t, 1) for t, fraction in sent if fraction is not None]
    assert times == [0.3, 0.6, 0.9, 1.2, 1.5, 1.8]
    assert [f for _, f in sent if f is not None] == [0.1425, 0.285, 0.4275, 0.57, 0.7125, 0.855]
    # a job that ends within the first interval reports nothing; an unchanged fraction is dropped
    quick = ProgressCoalescer(interval=0.25, started=0.0)
    assert quick.offer(20, 20, 0.2) is None
    still = ProgressCoalescer(interval=0.25, started=0.0)
    assert still.offer(5, 10, 1.0) == 0.475
    assert still.offer(5, 10, 2.0) is None and still.offer(10, 10, 3.0) == 0.95
