"""The `local` provider: each instance is a ComfyUI emulator and a worker agent, as local processes.

Each instance gets a folder `<root>/<instance_id>/` holding the emulator's ComfyUI tree, the two
processes' logs and `state.json` (pids, ports). The processes run in their own sessions, so a
control plane that is restarted finds them again through `list()` and can adopt or sweep them.

Emulated instances have no real weights. Preloading writes small placeholder files under the
model names so that the emulator's validation, which checks that files exist, passes as it would
on an instance whose cache holds the model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from swarmstation.domain.workflow import normalise_model_name
from swarmstation.providers.base import LaunchSpec, ProviderError, ProviderInstance

PLACEHOLDER_WEIGHTS = b"swarmstation emulator placeholder weights\n"


def write_placeholder_models(comfy_dir: Path, models: Iterable[tuple[str, str]]) -> None:
    """Placeholder weight files for an emulated ComfyUI, which checks that files exist but loads
    nothing. Never used with a real ComfyUI."""
    for model_folder, model_name in models:
        target = comfy_dir / "models" / normalise_model_name(model_folder) / normalise_model_name(model_name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.write_bytes(PLACEHOLDER_WEIGHTS)


def preload_env(models: Iterable[tuple[str, str]]) -> str:
    """The preload list as the instance environment carries it (SWARMSTATION_PRELOAD_MODELS)."""
    return json.dumps([{"folder": f, "name": n} for f, n in models])


def parse_preload_env(value: str) -> list[tuple[str, str]]:
    try:
        items = json.loads(value)
    except ValueError:
        return []
    return [
        (str(i["folder"]), str(i["name"]))
        for i in items
        if isinstance(items, list) and isinstance(i, dict) and i.get("folder") and i.get("name")
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def _stop_group(pid: int, grace: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return
        except ChildProcessError:
            if not _alive(pid):
                return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


class LocalProvider:
    name = "local"

    def __init__(
        self,
        root: Path,
        *,
        emulator_step_seconds: float = 0.05,
        emulator_model_load_seconds: float = 0.2,
        python: str = sys.executable,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.step_seconds = emulator_step_seconds
        self.model_load_seconds = emulator_model_load_seconds
        self.python = python

    def _dir(self, instance_id: str) -> Path:
        return self.root / instance_id

    def launch(self, spec: LaunchSpec) -> str:
        folder = self._dir(spec.instance_id)
        comfy_dir = folder / "comfyui"
        for name in ("input", "output", "temp"):
            (comfy_dir / name).mkdir(parents=True, exist_ok=True)
        write_placeholder_models(comfy_dir, spec.preload_models)
        port = free_port()
        env = {**os.environ, **spec.env}
        emulator = subprocess.Popen(
            [
                self.python,
                "-m",
                "swarmstation.cli",
                "comfy-emulator",
                "--port",
                str(port),
                "--base-dir",
                str(comfy_dir),
                "--step-seconds",
                str(self.step_seconds),
                "--model-load-seconds",
                str(self.model_load_seconds),
            ],
            stdout=open(folder / "emulator.log", "ab"),  # noqa: SIM115 - the child owns it
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        worker_env = {**env, "SWARMSTATION_WORKER_TOKEN": spec.worker_token}
        worker = subprocess.Popen(
            [
                self.python,
                "-m",
                "swarmstation.cli",
                "worker",
                "--server",
                spec.server_url,
                "--comfyui",
                f"http://127.0.0.1:{port}",
                "--comfy-dir",
                str(comfy_dir),
            ],
            stdout=open(folder / "worker.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=worker_env,
        )
        state = {
            "instance_id": spec.instance_id,
            "pool": spec.pool,
            "emulator_pid": emulator.pid,
            "worker_pid": worker.pid,
            "comfyui_port": port,
        }
        (folder / "state.json").write_text(json.dumps(state))
        return spec.instance_id

    def _state(self, provider_id: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self._dir(provider_id) / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def worker_pid(self, provider_id: str) -> int:
        state = self._state(provider_id)
        if state is None:
            raise ProviderError(f"no local instance {provider_id}")
        return int(state["worker_pid"])

    def list(self) -> list[ProviderInstance]:
        found: list[ProviderInstance] = []
        if not self.root.exists():
            return found
        for folder in sorted(self.root.iterdir()):
            state = self._state(folder.name)
            if state is None:
                continue
            pids = [int(state["emulator_pid"]), int(state["worker_pid"])]
            found.append(ProviderInstance(folder.name, str(state["instance_id"]), all(map(_alive, pids))))
        return found

    def destroy(self, provider_id: str) -> None:
        state = self._state(provider_id)
        if state is None:
            return
        for key in ("worker_pid", "emulator_pid"):
            _stop_group(int(state[key]), grace=3.0)
        (self._dir(provider_id) / "state.json").unlink(missing_ok=True)
