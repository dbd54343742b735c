"""The `local` provider: each instance is a ComfyUI emulator and a worker agent, as local processes.

Each instance gets a folder `<root>/<instance_id>/` holding the emulator's ComfyUI tree, the two
processes' logs, `state.json` (pids, ports, what a restart needs; no secret) and `worker.token`
(mode 0600). The processes run in their own sessions, so a control plane that is restarted finds
them again through `list()` and can adopt or sweep them.

The children get a small environment of their own (`child_env`), never the control plane's: it
holds secrets (the secret key, S3 keys, the VastAI key, Civitai and Hugging Face tokens) that a
worker has no use for. With `die_with_parent` (what `swarmstation up` asks for, since it owns
its instances) each child is started with `PR_SET_PDEATHSIG`, so that a control plane killed with
SIGKILL does not leave workers and emulators behind. The kernel sends that signal when the
*thread* that forked the child ends, not the process: children are therefore forked from one
long-lived thread of this module (`_spawn_thread`), never from a passing worker thread.

`stop` ends both processes and keeps the folder, model cache included, as a stopped rented machine
keeps its disk; `start` runs them again with the same token and environment, on a new port.

Emulated instances have no real weights. Preloading writes small placeholder files under the
model names so that the emulator's validation, which checks that files exist, passes as it would
on an instance whose cache holds the model.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from swarmstation.comfy.emulator.nodes import minimal_safetensors
from swarmstation.domain.workflow import normalise_model_name
from swarmstation.providers.base import LaunchSpec, ProviderError, ProviderInstance

# A valid (tiny) safetensors file: the emulator, like ComfyUI, refuses one whose header does not parse.
PLACEHOLDER_WEIGHTS = minimal_safetensors(b"swarmstation emulator placeholder weights\n")
TOKEN_FILE = "worker.token"  # the instance's worker token, for a start after a stop (mode 0600)

# What a worker or an emulator inherits from the control plane's environment: enough to run Python
# (and find this package) and to read files in the user's locale; nothing else. Settings the
# child needs are passed explicitly (the launch spec's env, the worker token).
_INHERITED_NAMES = ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "TZ", "USER", "LOGNAME")
_INHERITED_PREFIXES = ("LC_",)
# Non-secret settings that a worker applies too (which model hosts it may fetch from, its disk budget).
_FORWARDED_SETTINGS = (
    "SWARMSTATION_OUTBOUND_ALLOW_HOSTS",
    "SWARMSTATION_S3_ENDPOINT_URL",  # an object store on a private address is allowed to its workers
    "SWARMSTATION_CACHE_BUDGET_GB",
)

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def child_env(parent: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of an instance's processes: the allow-listed part of `parent` plus `extra`."""
    env = {
        k: v
        for k, v in parent.items()
        if k in _INHERITED_NAMES or k in _FORWARDED_SETTINGS or k.startswith(_INHERITED_PREFIXES)
    }
    env.update({str(k): str(v) for k, v in extra.items()})
    return env


def _pdeathsig_setter() -> Callable[[], None] | None:
    """A preexec_fn that asks the kernel to SIGKILL the child when its parent thread ends; None
    where prctl is not available (not Linux). libc is loaded here, in the parent: the child only
    calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl = libc.prctl

    def set_pdeathsig() -> None:
        # SIGKILL, not SIGTERM: nobody is left to wait for a graceful exit, and a child stuck in a
        # long request would ignore nothing else.
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return set_pdeathsig


# One thread, alive as long as the process, forks every child (see the module docstring). A
# ThreadPoolExecutor never retires an idle worker thread, so its single thread stays.
_spawn_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-provider-spawn")


def _write_private(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    os.chmod(path, 0o600)


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
        die_with_parent: bool = False,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.step_seconds = emulator_step_seconds
        self.model_load_seconds = emulator_model_load_seconds
        self.python = python
        # `up` owns its instances: they end with it, even when it is killed (see the docstring).
        # `serve` leaves them running for the next replica to adopt.
        self.die_with_parent = die_with_parent

    def _dir(self, instance_id: str) -> Path:
        return self.root / instance_id

    def launch(self, spec: LaunchSpec) -> str:
        folder = self._dir(spec.instance_id)
        comfy_dir = folder / "comfyui"
        for name in ("input", "output", "temp"):
            (comfy_dir / name).mkdir(parents=True, exist_ok=True)
        write_placeholder_models(comfy_dir, spec.preload_models)
        # What a restart after a stop needs; the token goes to a file of its own, readable by this
        # user only, so that state.json (which tools and tests read) carries no secret.
        _write_private(folder / TOKEN_FILE, spec.worker_token)
        self._spawn(
            folder,
            {
                "instance_id": spec.instance_id,
                "pool": spec.pool,
                "server_url": spec.server_url,
                "env": spec.env,
            },
            spec.worker_token,
        )
        return spec.instance_id

    def _spawn(self, folder: Path, state: dict[str, Any], token: str) -> None:
        """Start the emulator and the worker of an instance (on a fresh port) and record them."""
        _spawn_thread.submit(self._spawn_here, folder, state, token).result()

    def _spawn_here(self, folder: Path, state: dict[str, Any], token: str) -> None:
        comfy_dir = folder / "comfyui"
        port = free_port()
        env = child_env(os.environ, state.get("env") or {})
        preexec = _pdeathsig_setter() if self.die_with_parent else None
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
            preexec_fn=preexec,
        )
        worker_env = {**env, "SWARMSTATION_WORKER_TOKEN": token}
        worker = subprocess.Popen(
            [
                self.python,
                "-m",
                "swarmstation.cli",
                "worker",
                "--server",
                str(state["server_url"]),
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
            preexec_fn=preexec,
        )
        state = {
            **state,
            "emulator_pid": emulator.pid,
            "worker_pid": worker.pid,
            "comfyui_port": port,
            "stopped": False,
        }
        self._write_state(folder, state)

    @staticmethod
    def _write_state(folder: Path, state: dict[str, Any]) -> None:
        tmp = folder / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, folder / "state.json")  # list() never reads half a file

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
            if state.get("stopped"):
                found.append(
                    ProviderInstance(
                        folder.name, str(state["instance_id"]), True, status="stopped", stopped=True
                    )
                )
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
        (self._dir(provider_id) / TOKEN_FILE).unlink(missing_ok=True)

    def stop(self, provider_id: str) -> None:
        """Stop the instance's processes and keep its folder: its model cache stays on disk."""
        state = self._state(provider_id)
        if state is None:
            raise ProviderError(f"no local instance {provider_id}")
        for key in ("worker_pid", "emulator_pid"):
            _stop_group(int(state[key]), grace=3.0)
        self._write_state(self._dir(provider_id), {**state, "stopped": True})

    def start(self, provider_id: str) -> None:
        """Run a stopped instance's processes again, with its token and environment, on a new port."""
        folder = self._dir(provider_id)
        state = self._state(provider_id)
        if state is None:
            raise ProviderError(f"no local instance {provider_id}")
        if not state.get("stopped"):
            return  # running already: idempotent
        try:
            token = (folder / TOKEN_FILE).read_text().strip()
        except OSError as exc:
            raise ProviderError(f"local instance {provider_id} cannot be started again: no token") from exc
        if "server_url" not in state:
            raise ProviderError(
                f"local instance {provider_id} cannot be started again: launched by an older version"
            )
        self._spawn(folder, state, token)
