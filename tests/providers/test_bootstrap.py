"""The onstart bootstrap (providers/bootstrap.py), run for real with bash on this machine against a
real control plane (`swarmstation serve`), with the ComfyUI emulator standing in for ComfyUI; and the
worker image's Dockerfile, which cannot be built here (no Docker), checked as text."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import swarmstation
from swarmstation.config import Settings
from swarmstation.domain.states import InstanceState
from swarmstation.providers.bootstrap import (
    MODES,
    ONSTART_MAX_BYTES,
    ComfyMode,
    compact_onstart,
    compress_onstart,
    render_onstart,
)
from swarmstation.providers.install import constraints_from_lock, default_install_spec
from swarmstation.store.db import make_engine, make_sessionmaker, transaction
from swarmstation.store.models import utcnow
from tests.helpers import add_instance

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "swarmstation"
TOKEN_RE = re.compile(r"sst_[A-Za-z0-9_-]{20,}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


# -- the script as text ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_is_valid_bash(mode: ComfyMode, tmp_path: Path) -> None:
    script = render_onstart(comfyui_mode=mode, extra_pip_args="--index-url https://example.org/simple")
    path = tmp_path / "onstart.sh"
    path.write_text(script)
    checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert script.startswith("#!/usr/bin/env bash\n") and "set -Eeuo pipefail" in script
    assert f"MODE={mode} " in script and "main </dev/null" in script
    assert "set -x" not in script.replace("|| set -x", "")  # only the restore of a caller's trace


def test_compressed_form_decodes_to_the_script() -> None:
    script = render_onstart(comfyui_mode="emulator")
    line = compress_onstart(script)
    assert "\n" not in line and line.startswith("echo ") and line.endswith(" | base64 -d | gunzip | bash")
    decoded = subprocess.run(
        ["bash", "-c", line.removesuffix(" | bash")], capture_output=True, text=True, check=True
    )
    assert decoded.stdout == script
    assert compress_onstart(script) == line  # deterministic: no gzip timestamp
    assert compact_onstart("echo hi\n") == "echo hi\n"
    assert compact_onstart(script) == line  # the full script is over the ~4 KB that Vast likes


@pytest.mark.parametrize("mode", MODES)
def test_the_compact_form_fits_what_vast_takes(mode: ComfyMode) -> None:
    script = render_onstart(
        comfyui_mode=mode,
        swarmstation_spec="swarmstation @ https://downloads.example.org/swarmstation-0.1.0-py3-none-any.whl",
        extra_pip_args="--extra-index-url https://download.pytorch.org/whl/cu124",
    )
    assert len(compact_onstart(script)) <= ONSTART_MAX_BYTES <= 4048
    with pytest.raises(ValueError, match="even compressed"):
        compact_onstart(render_onstart(comfyui_mode=mode, swarmstation_spec=secrets.token_hex(2000)))


def test_values_are_quoted_and_checked() -> None:
    script = render_onstart(comfyui_dir="/data/my ComfyUI", swarmstation_spec="swarmstation==1.2; rm -rf /")
    assert "COMFY_DIR=${SWARMSTATION_COMFYUI_DIR:-'/data/my ComfyUI'}" in script
    assert "SPEC='swarmstation==1.2; rm -rf /'" in script
    with pytest.raises(ValueError):
        render_onstart(comfyui_mode="docker")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        render_onstart(port=0)
    with pytest.raises(ValueError):
        render_onstart(comfyui_ref="v1\nrm -rf /")


def test_install_mode_pins_the_image_torch() -> None:
    script = render_onstart(comfyui_mode="install")
    pip_lines = [ln for ln in script.splitlines() if "-m pip install" in ln]
    assert len(pip_lines) == 2 and all('-c "$pins"' in ln for ln in pip_lines)
    assert '-r "$COMFY_DIR/requirements.txt"' in pip_lines[0]
    assert '"torch", "torchvision", "torchaudio"' in script
    assert "--system-site-packages" in script
    assert 'git clone -q --depth 1 --branch "$COMFY_REF"' in script


def test_no_secret_in_the_script() -> None:
    for mode in MODES:
        script = render_onstart(comfyui_mode=mode)
        assert not TOKEN_RE.search(script)
        # the token is only ever read from the environment, and only in these places
        uses = [ln.strip() for ln in script.splitlines() if "SWARMSTATION_WORKER_TOKEN" in ln]
        allowed = ("Bearer %s", 'os.environ["SWARMSTATION_WORKER_TOKEN"]', "unset", "must be", "if [ -z")
        assert all(any(a in u for a in allowed) or u.startswith(("#", "export ")) for u in uses), uses


# -- a real control plane --------------------------------------------------------------------------
@dataclass
class Plane:
    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=30
        )

    def add_instance(self) -> tuple[str, str]:
        """A PROVISIONING instance row, as the pool controller writes before it launches one."""
        engine = make_engine(f"sqlite:///{(self.data_dir / 'swarmstation.db').resolve()}")
        try:
            with transaction(make_sessionmaker(engine)) as s:
                inst, token = add_instance(s, utcnow(), state=InstanceState.PROVISIONING)
                return inst.id, token
        finally:
            engine.dispose()

    def instance(self, instance_id: str) -> dict[str, Any]:
        with self.client() as c:
            resp = c.get(f"/v1/admin/instances/{instance_id}")
            resp.raise_for_status()
            data: dict[str, Any] = resp.json()
            return data


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    folder = tmp_path_factory.mktemp("plane")
    data_dir = folder / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSTATION_")}
    log = folder / "serve.log"
    proc = subprocess.Popen(
        [str(BIN), "serve", "--provider", "none", "--port", str(port), "--data-dir", str(data_dir)],
        cwd=folder,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    p = Plane(f"http://127.0.0.1:{port}", data_dir, proc, log)
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"swarmstation serve exited: {log.read_text()}")
            try:
                return httpx.get(f"{p.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, "the control plane")
        yield p
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Run:
    proc: subprocess.Popen[bytes]
    log: Path  # the bootstrap's own log file
    out: Path  # what the script printed

    def text(self) -> str:
        return (
            (self.log.read_text() if self.log.exists() else "(no log)")
            + "\n== stdout\n"
            + self.out.read_text()
        )

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def session_processes(self) -> dict[int, list[str]]:
        """pid → argv of every live process the script started (they share its session)."""
        found: dict[int, list[str]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            fields = stat.rsplit(") ", 1)[1].split()
            if int(fields[3]) == self.proc.pid and fields[0] != "Z":  # session id; not a zombie
                found[int(entry.name)] = [a.decode(errors="replace") for a in argv if a]
        return found

    def worker_pid(self) -> int | None:
        for pid, argv in self.session_processes().items():
            if "worker" in argv and "--server" in argv:
                return pid
        return None


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def start(onstart: str, *, plane: Plane, token: str, as_file: bool = False, **env: str) -> Run:
        full = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSTATION_")}
        full.update(
            SWARMSTATION_SERVER_URL=plane.url,
            SWARMSTATION_WORKER_TOKEN=token,
            SWARMSTATION_SKIP_INSTALL="1",
            SWARMSTATION_BIN=str(BIN),
            SWARMSTATION_BOOTSTRAP_LOG=str(tmp_path / "bootstrap.log"),
            SWARMSTATION_HOME=str(tmp_path / "home"),
        )
        full.update(env)
        out = tmp_path / f"onstart-{len(runs)}.out"
        if as_file:  # how an image's entrypoint runs it
            script = tmp_path / "onstart.sh"
            script.write_text(onstart)
            argv = ["bash", str(script)]
        else:  # how Vast runs an onstart command
            argv = ["bash", "-c", onstart]
        proc = subprocess.Popen(
            argv,
            env={k: v for k, v in full.items() if v is not None},
            stdout=out.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=tmp_path,
        )
        run = Run(proc, tmp_path / "bootstrap.log", out)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()


def _submit(plane: Plane) -> str:
    with plane.client() as c:
        resp = c.post("/v1/jobs", json={"tool": "sd15-txt2img", "inputs": {"prompt": "a red fox"}})
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"])


def _job_state(plane: Plane, job_id: str) -> str:
    with plane.client() as c:
        return str(c.get(f"/v1/jobs/{job_id}").json()["state"])


def _finished(plane: Plane, job_id: str) -> str | None:
    state = _job_state(plane, job_id)
    return state if state in ("COMPLETED", "FAILED", "CANCELLED") else None


@pytest.mark.slow
def test_onstart_turns_this_machine_into_a_worker(
    plane: Plane, launch: Callable[..., Run], tmp_path: Path
) -> None:
    instance_id, token = plane.add_instance()
    comfy_dir = tmp_path / "ComfyUI"
    port = free_port()
    # The pool's startup script puts a checkpoint in place (the emulator checks that model files
    # exist); it must not see the worker token.
    startup = (
        'test -z "${SWARMSTATION_WORKER_TOKEN:-}"\n'
        'mkdir -p "$COMFYUI_DIR/models/checkpoints"\n'
        # a valid, empty safetensors file: an 8-byte header length (8), then the header `{}` padded
        "printf '\\010\\0\\0\\0\\0\\0\\0\\0{}      ' "
        '>"$COMFYUI_DIR/models/checkpoints/v1-5-pruned-emaonly.safetensors"\n'
    )
    # The folder and port come from the environment, over the rendered defaults, as when several
    # instances share one host.
    onstart = compact_onstart(render_onstart(comfyui_mode="emulator", startup_script=startup))
    assert onstart.startswith("echo ")  # what Vast gets: the piped, compressed form
    run = launch(
        onstart,
        plane=plane,
        token=token,
        SWARMSTATION_COMFYUI_DIR=str(comfy_dir),
        SWARMSTATION_COMFYUI_PORT=str(port),
        SWARMSTATION_BIN=f"{sys.executable} -m swarmstation.cli",  # a command with arguments
        PUBLIC_IPADDR="203.0.113.7",
        **{f"VAST_TCP_PORT_{port}": "41234"},
    )
    try:
        wait_for(lambda: plane.instance(instance_id)["state"] == "IDLE", 40, "the instance to be IDLE")
        inst = plane.instance(instance_id)
        reasons = [t["reason"] for t in inst["transitions"]]
        assert "bootstrap: install" in reasons and "ComfyUI ready" in reasons, reasons
        assert inst["info"]["bootstrap"]["ok"] is True
        assert inst["comfyui_url"] == f"http://127.0.0.1:{port}"
        log = run.log.read_text()
        assert "stage install: ok=true: skipped" in log and "stage startup: ok=true" in log
        assert f"ComfyUI answers on 127.0.0.1:{port} (public 203.0.113.7:41234)" in log

        job = _submit(plane)
        assert wait_for(lambda: _finished(plane, job), 30, "the first job") == "COMPLETED"

        # The worker and ComfyUI got no token in their arguments; ComfyUI not even in its environment.
        procs = run.session_processes()
        assert not any(token in " ".join(argv) for argv in procs.values())
        emulator = next(pid for pid, argv in procs.items() if "comfy-emulator" in argv)
        assert b"SWARMSTATION_WORKER_TOKEN" not in Path(f"/proc/{emulator}/environ").read_bytes()

        # A crashed worker comes back and takes the next job.
        first = run.worker_pid()
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: "restarting it" in run.log.read_text(), 10, "the restart")
        second = wait_for(run.worker_pid, 15, "a new worker")
        assert second != first
        job = _submit(plane)
        assert wait_for(lambda: _finished(plane, job), 30, "the second job") == "COMPLETED"
        assert run.proc.poll() is None  # still supervising

        # SIGTERM (docker stop) ends the script, and it takes ComfyUI and the worker with it.
        script_pid = min(pid for pid, argv in run.session_processes().items() if argv == ["bash"])
        os.kill(script_pid, signal.SIGTERM)
        assert run.proc.wait(timeout=15) == 143
        wait_for(
            lambda: (
                not any(
                    "comfy-emulator" in argv or "worker" in argv for argv in run.session_processes().values()
                )
            ),
            10,
            "ComfyUI and the worker to stop",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{run.text()[-6000:]}") from exc
    finally:
        run.kill()
    text = run.text()
    assert token not in text and not TOKEN_RE.search(text)  # never in the log or the output


def _expect_unhealthy(plane: Plane, run: Run, instance_id: str, prefix: str) -> dict[str, Any]:
    try:
        run.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the script did not stop\n{run.text()[-4000:]}") from None
    assert run.proc.returncode == 1, run.text()[-4000:]
    inst = plane.instance(instance_id)
    assert inst["state"] == "UNHEALTHY", (inst, run.text()[-4000:])
    assert inst["state_reason"].startswith(prefix), inst["state_reason"]
    assert inst["info"]["bootstrap"]["ok"] is False
    return inst


@pytest.mark.slow
def test_comfyui_port_taken_fails_the_comfyui_stage(
    plane: Plane, launch: Callable[..., Run], tmp_path: Path
) -> None:
    instance_id, token = plane.add_instance()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        script = render_onstart(comfyui_mode="emulator", comfyui_dir=str(tmp_path / "c"), port=port)
        run = launch(script, plane=plane, token=token, as_file=True)
        inst = _expect_unhealthy(
            plane, run, instance_id, f"bootstrap failed at comfyui: port {port} is already in use"
        )
    assert "stage install: ok=true" in inst["info"]["bootstrap"]["message"]  # the log's tail came along
    assert token not in run.text()


@pytest.mark.slow
def test_missing_swarmstation_fails_the_comfyui_stage(
    plane: Plane, launch: Callable[..., Run], tmp_path: Path
) -> None:
    instance_id, token = plane.add_instance()
    script = render_onstart(comfyui_mode="emulator", comfyui_dir=str(tmp_path / "c"), port=free_port())
    run = launch(script, plane=plane, token=token, SWARMSTATION_BIN="/nonexistent/swarmstation")
    _expect_unhealthy(
        plane,
        run,
        instance_id,
        "bootstrap failed at comfyui: no swarmstation command '/nonexistent/",
    )


@pytest.mark.slow
def test_existing_comfyui_that_crashes_fails_the_comfyui_stage(
    plane: Plane, launch: Callable[..., Run], tmp_path: Path
) -> None:
    """`existing` mode starts main.py with the expected flags, without the token in its environment,
    and reports a ComfyUI that dies before it answers."""
    instance_id, token = plane.add_instance()
    comfy_dir = tmp_path / "ComfyUI"
    comfy_dir.mkdir()
    seen = tmp_path / "seen.txt"
    (comfy_dir / "main.py").write_text(
        "import os, sys\n"
        f"open({str(seen)!r}, 'w').write(' '.join(sys.argv[1:]) + '\\n' + "
        "str('SWARMSTATION_WORKER_TOKEN' in os.environ))\n"
        "sys.exit(3)\n"
    )
    port = free_port()
    script = render_onstart(
        comfyui_mode="existing", comfyui_dir=str(comfy_dir), port=port, python=sys.executable
    )
    run = launch(script, plane=plane, token=token, SWARMSTATION_COMFYUI_ARGS="--disable-api-nodes")
    _expect_unhealthy(
        plane, run, instance_id, "bootstrap failed at comfyui: ComfyUI exited (code 3) before it answered"
    )
    args, has_token = seen.read_text().splitlines()
    assert args == f"--listen 127.0.0.1 --port {port} --disable-auto-launch --disable-api-nodes"
    assert has_token == "False"


@pytest.mark.slow
def test_a_failing_startup_script_reports_its_own_stage(
    plane: Plane, launch: Callable[..., Run], tmp_path: Path
) -> None:
    instance_id, token = plane.add_instance()
    script = render_onstart(
        comfyui_mode="emulator",
        comfyui_dir=str(tmp_path / "c"),
        port=free_port(),
        startup_script="echo installing custom nodes\nfalse\nexit 7\n",
    )
    run = launch(script, plane=plane, token=token)
    inst = _expect_unhealthy(plane, run, instance_id, "bootstrap failed at startup: exit code 7 at line")
    assert "installing custom nodes" in inst["info"]["bootstrap"]["message"]
    assert "comfy-emulator" not in run.text()  # it stopped before ComfyUI


@pytest.mark.slow
def test_a_failing_install_reports_the_install_stage(
    plane: Plane, launch: Callable[..., Run], tmp_path: Path
) -> None:
    """The real install stage up to pip: a venv over the image's packages, the pins of the image's
    torch build, then a package that cannot be found (offline index) fails through the ERR trap."""
    instance_id, token = plane.add_instance()
    image_packages = tmp_path / "image-site-packages"  # stands in for the image's CUDA torch
    dist_info = image_packages / "torch-2.5.1+cu124.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.5.1+cu124\n")
    (image_packages / "torch").mkdir()
    (image_packages / "torch" / "__init__.py").write_text("")
    script = render_onstart(
        comfyui_mode="emulator",
        comfyui_dir=str(tmp_path / "c"),
        swarmstation_spec="swarmstation-no-such-package",
        python=sys.executable,
        extra_pip_args="--no-index --quiet --disable-pip-version-check",
    )
    run = launch(
        script, plane=plane, token=token, SWARMSTATION_SKIP_INSTALL=None, PYTHONPATH=str(image_packages)
    )
    inst = _expect_unhealthy(plane, run, instance_id, "bootstrap failed at install: exit code 1 at line")
    assert "pip install" in inst["state_reason"]
    assert '-c "$pins" -c "$lock" "$SPEC"' in inst["state_reason"]  # the lock constrains the worker
    home = tmp_path / "home"
    assert (home / "venv" / "bin" / "python").exists()
    assert (home / "torch-constraints.txt").read_text() == "torch==2.5.1+cu124\n"
    # fetched from the control plane with the token: its lock's pins, without hashes
    fetched = (home / "constraints.txt").read_text()
    assert fetched == constraints_from_lock((ROOT / "requirements.lock").read_text())
    assert "boto3==" in fetched and "--hash" not in fetched


# -- what instances install -------------------------------------------------------------------------
def test_instances_install_the_control_planes_version(tmp_path: Path) -> None:
    spec = f"swarmstation=={swarmstation.__version__}"
    assert default_install_spec() == spec
    assert Settings(data_dir=tmp_path).worker_install_spec == spec
    assert f"SPEC={spec} " in render_onstart()
    assert "SPEC=swarmstation " not in render_onstart()  # never an unpinned install


def test_constraints_are_the_locks_pins_without_hashes() -> None:
    lock = (
        "# a comment\n"
        "boto3==1.44.8 \\\n"
        "    --hash=sha256:aaaa \\\n"
        "    --hash=sha256:bbbb\n"
        "    # via swarmstation (pyproject.toml)\n"
        "uvicorn[standard]==0.35.0 \\\n"
        "    --hash=sha256:cccc\n"
        'uvloop==0.21.0 ; sys_platform != "win32" \\\n'
        "    --hash=sha256:dddd\n"
        "--index-url https://example.org/simple\n"
    )
    assert constraints_from_lock(lock) == (
        'boto3==1.44.8\nuvicorn[standard]==0.35.0\nuvloop==0.21.0 ; sys_platform != "win32"\n'
    )
    pins = constraints_from_lock((ROOT / "requirements.lock").read_text())
    assert len(pins.splitlines()) == (ROOT / "requirements.lock").read_text().count("==")


def test_the_control_plane_serves_its_lock_to_its_instances(plane: Plane) -> None:
    _, token = plane.add_instance()
    url = f"{plane.url}/worker/v1/constraints"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer sst_not-a-token"}, timeout=10).status_code == 401
    resp = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    assert resp.text == constraints_from_lock((ROOT / "requirements.lock").read_text())


# -- the prebuilt worker image ------------------------------------------------------------------
def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """Instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword, args.strip()))
    assert not pending, "a continuation line runs off the end"
    return out


def test_worker_dockerfile_reads_right() -> None:
    text = (ROOT / "deploy" / "worker.Dockerfile").read_text()
    assert "Docker does not run" in text.split("FROM", 1)[0]  # says up front it was never built here
    instructions = _dockerfile_instructions(text)
    known = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "EXPOSE", "ENTRYPOINT", "CMD", "LABEL"}
    assert all(k in known for k, _ in instructions), [k for k, _ in instructions if k not in known]
    kinds = [k for k, _ in instructions]
    assert kinds.count("FROM") == 1 and kinds.index("FROM") <= 1
    args = dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)
    base = next(a for k, a in instructions if k == "FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+-cuda\d+\.\d+[\w.-]*", base), base  # pinned, with CUDA
    assert re.fullmatch(r"v\d+\.\d+\.\d+", args["COMFYUI_REF"])
    runs = " ".join(a for k, a in instructions if k == "RUN")
    assert "--branch ${COMFYUI_REF}" in runs and "requirements.txt" in runs
    assert runs.count("-c /opt/torch-constraints.txt") >= 2  # ComfyUI's requirements and swarmstation
    assert "pip install" in runs and "/opt/swarmstation" in runs
    assert "sys.version_info >= (3, 11)" in runs
    assert ("EXPOSE", "8188") in instructions
    copies = [a for k, a in instructions if k == "COPY"]
    assert any(a.endswith("/opt/swarmstation/swarmstation") for a in copies)
    # The entrypoint is the same bootstrap, rendered at build time, in existing mode, install skipped.
    assert "render_onstart(comfyui_mode='existing'" in runs
    envs = " ".join(a for k, a in instructions if k == "ENV")
    assert "SWARMSTATION_SKIP_INSTALL=1" in envs
    entry = next(a for k, a in instructions if k == "ENTRYPOINT")
    assert entry == '["bash", "/opt/swarmstation/bootstrap.sh"]'
    # no secret is baked in: the token comes from the environment at run time
    assert not TOKEN_RE.search(text)
    assert not any("SWARMSTATION_WORKER_TOKEN" in a for k, a in instructions if k in ("ENV", "ARG"))
