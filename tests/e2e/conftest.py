"""`swarmstation up` as a real process, with its local instances, for end-to-end tests.

When a test fails, the logs of the processes it ran are shown with its report: every `Up` that
`up_factory` made, and whatever else a test hands to the `failure_logs` fixture (see
`pytest_runtest_makereport`), so that no test needs a try/except to print them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent / "swarmstation"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Up:
    """A running `swarmstation up` in its own folder; restartable."""

    folder: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.folder / ".swarmstation"

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    def start(self) -> None:
        # named by port too: two control planes may share a folder (and its instances)
        log = self.folder / f"up-{self.port}-{len(self.logs)}.log"
        self.logs.append(log)
        self.proc = subprocess.Popen(
            [str(BIN), "up", "--port", str(self.port), "--log-level", "info"],
            cwd=self.folder,
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"swarmstation up exited: {log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("swarmstation up did not answer /healthz")

    def kill(self) -> None:
        """SIGKILL the control plane only; its instances keep running."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=30
        )

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN), *args],
            cwd=self.folder,
            env={**self.env, "SWARMSTATION_URL": self.url},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def instance_state_files(self) -> list[dict[str, object]]:
        return [json.loads(p.read_text()) for p in (self.data_dir / "instances").glob("*/state.json")]

    def cleanup(self) -> None:
        self.stop()
        for state in self.instance_state_files():  # belt and braces: nothing outlives the test
            for key in ("worker_pid", "emulator_pid"):
                try:
                    os.killpg(int(state[key]), signal.SIGKILL)  # type: ignore[call-overload]
                except (ProcessLookupError, PermissionError):
                    pass

    def dump_logs(self) -> str:
        parts = [f"== {p.name}\n{p.read_text()[-4000:]}" for p in self.logs if p.exists()]
        for p in sorted((self.data_dir / "instances").glob("*/*.log")):
            parts.append(f"== {p.parent.name[:8]}/{p.name}\n{p.read_text()[-3000:]}")
        return "\n".join(parts)


def make_up(tmp_path: Path, **settings: object) -> Up:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSTATION_")}
    env.update({f"SWARMSTATION_{k.upper()}": str(v) for k, v in settings.items()})
    return Up(folder=tmp_path, port=free_port(), env=env)


@dataclass
class FailureLogs:
    """Logs to show with a test's report if it fails: (title, a function that reads them)."""

    sources: list[tuple[str, Callable[[], str]]] = field(default_factory=list)
    shown: bool = False

    def add(self, title: str, read: Callable[[], str]) -> None:
        self.sources.append((title, read))

    def sections(self) -> list[tuple[str, str]]:
        found = []
        for title, read in self.sources:
            try:
                text = read()
            except Exception as exc:  # a log that cannot be read must not hide the failure
                text = f"(cannot read: {exc!r})"
            found.append((title, text))
        return found


_FAILURE_LOGS = pytest.StashKey[FailureLogs]()


@pytest.fixture
def failure_logs(request: pytest.FixtureRequest) -> FailureLogs:
    """Register the logs of a process the test runs; they are shown if the test fails."""
    return request.node.stash.setdefault(_FAILURE_LOGS, FailureLogs())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Read while the processes are still there: a failing call is reported before the fixtures'
    # teardown stops them. A failure in setup or teardown shows the logs too, once per test.
    report = yield
    logs = item.stash.get(_FAILURE_LOGS, None)
    if report.failed and logs is not None and not logs.shown:
        logs.shown = True
        report.sections.extend(logs.sections())
    return report


@pytest.fixture
def up_factory(tmp_path: Path, failure_logs: FailureLogs) -> Iterator[Callable[..., Up]]:
    """Makes `Up`s (in `folder`, by default the test's folder) that are cleaned up after the test
    and whose logs a failing test shows."""
    created: list[Up] = []

    def factory(folder: Path | None = None, **settings: object) -> Up:
        up = make_up(folder or tmp_path, **settings)
        created.append(up)
        failure_logs.add(f"swarmstation up on port {up.port}", up.dump_logs)
        return up

    yield factory
    for up in created:
        up.cleanup()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def wait_idle(http: httpx.Client, count: int, timeout: float = 90) -> None:
    """Until `count` instances are IDLE."""
    wait_for(
        lambda: sum(i["state"] == "IDLE" for i in http.get("/v1/admin/instances").json()) == count,
        timeout,
        f"{count} idle instances",
    )
