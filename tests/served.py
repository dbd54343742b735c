"""A control plane as a real process (`swarmstation serve` or `up`) for tests of the CLI and of
what each command defaults to."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.e2e.conftest import BIN, free_port, wait_for


@dataclass(frozen=True)
class Served:
    url: str
    data_dir: Path

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    def cli(self, *args: str, api_key: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSTATION_")}
        env.update(
            {
                "SWARMSTATION_URL": self.url,
                "SWARMSTATION_API_KEY": api_key or self.admin_key,
                "COLUMNS": "200",
            }
        )
        return subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=60, cwd="/")


@contextmanager
def served(folder: Path, command: str = "serve", env: dict[str, str] | None = None) -> Iterator[Served]:
    folder.mkdir(parents=True, exist_ok=True)
    data_dir = folder / "data"
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSTATION_")}
    log = folder / f"{command}.log"
    args = [str(BIN), command, "--port", str(port), "--data-dir", str(data_dir)]
    if command == "serve":
        args += ["--provider", "none"]
    proc = subprocess.Popen(
        args,
        cwd=folder,
        env={**clean, **(env or {})},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    plane = Served(f"http://127.0.0.1:{port}", data_dir)
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"swarmstation {command} exited: {log.read_text()}")
            try:
                return httpx.get(f"{plane.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, "the control plane")
        yield plane
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
