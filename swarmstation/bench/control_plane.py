"""`swarmstation bench`: control-plane throughput and per-job overhead with emulated workers.

The control plane runs as its own process (`swarmstation serve --provider none`), as in
production. This process runs N worker agents, each beside an in-process ComfyUI emulator that
takes no time per step, and C clients that each submit a job, follow its event stream to the
end, and submit the next (a closed loop, so no job waits for a busy worker). Overhead per job is
submit → completed minus the emulated ComfyUI run, from the control plane's own timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from sqlalchemy import select

from swarmstation.api.app import build
from swarmstation.auth import WORKER_TOKEN_PREFIX, hash_secret, new_secret
from swarmstation.comfy.emulator import EmulatorConfig, running_emulator
from swarmstation.config import Settings
from swarmstation.control import ledger
from swarmstation.control.bootstrap import create_user_with_key
from swarmstation.control.pools import preload_models
from swarmstation.domain.states import InstanceState
from swarmstation.domain.stats import percentile
from swarmstation.providers.local import PLACEHOLDER_WEIGHTS
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, Job, utcnow
from swarmstation.worker.agent import Worker, WorkerConfig

TOOL = "sd15-txt2img"
INPUTS = {"prompt": "benchmark", "width": 64, "height": 64, "steps": 1}


@dataclass
class Options:
    workers: int = 16
    jobs: int = 2000
    concurrency: int = 16
    database_url: str | None = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prepare(settings: Settings, workers: int) -> tuple[str, list[str], list[tuple[str, str]]]:
    plane = build(settings, provider=None)
    now = utcnow()
    tokens: list[str] = []
    with transaction(plane.state.sessions) as s:
        user, key = create_user_with_key(s, f"bench-{int(time.time())}", "user", now)
        # Jobs are charged as for any user (quote, hold, capture): the bench measures that too.
        ledger.grant(
            s,
            user_id=user.id,
            amount=10**12,
            reason="bench",
            actor_id=None,
            key=f"bench:{uuid.uuid4()}",
            now=now,
        )
        for _ in range(workers):
            token = new_secret(WORKER_TOKEN_PREFIX)
            tokens.append(token)
            s.add(
                Instance(
                    id=str(uuid.uuid4()),
                    pool="default",
                    provider="none",
                    provider_instance_id=None,
                    state=InstanceState.INITIALIZING,
                    state_reason="bench",
                    token_hash=hash_secret(token),
                    created_at=now,
                    state_changed_at=now,
                    last_heartbeat_at=now,
                    info={},
                )
            )
        models = list(preload_models(s, "default"))
    plane.state.engine.dispose()
    return key, tokens, models


async def _run(
    config: Options,
    url: str,
    key: str,
    tokens: list[str],
    comfy_root: Path,
    models: list[tuple[str, str]],
    progress: Console | None,
) -> tuple[list[str], float]:
    async with contextlib.AsyncExitStack() as stack:
        workers: list[Worker] = []
        for n, token in enumerate(tokens):
            base = comfy_root / f"w{n}"
            for folder, name in models:
                target = base / "models" / folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(PLACEHOLDER_WEIGHTS)
            comfy_url = await stack.enter_async_context(running_emulator(EmulatorConfig(base_dir=base)))
            workers.append(
                Worker(
                    WorkerConfig(server_url=url, token=token, comfyui_url=comfy_url, progress_interval=0.25)
                )
            )
        worker_tasks = [asyncio.create_task(w.run()) for w in workers]
        headers = {"Authorization": f"Bearer {key}"}
        limits = httpx.Limits(max_connections=config.concurrency * 2 + 8)
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as http:
            remaining = config.jobs
            ids: list[str] = []
            bar = Progress(console=progress, disable=progress is None, transient=True)
            task = bar.add_task("jobs", total=config.jobs)

            async def client() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    r = await http.post("/v1/jobs", json={"tool": TOOL, "inputs": INPUTS})
                    r.raise_for_status()
                    job_id = r.json()["id"]
                    ids.append(job_id)
                    async with http.stream("GET", f"/v1/jobs/{job_id}/events") as events:
                        async for _ in events.aiter_lines():
                            pass
                    bar.advance(task)

            with bar:
                started = time.monotonic()
                await asyncio.gather(*(client() for _ in range(config.concurrency)))
                elapsed = time.monotonic() - started
        for t in worker_tasks:
            t.cancel()
        await asyncio.gather(*worker_tasks, return_exceptions=True)
        return ids, elapsed


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def run(config: Options, progress: Console | None = None) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="swarmstation-bench-"))
    port = _free_port()
    settings = Settings(
        data_dir=folder / "data", port=port, provider="none", database_url=config.database_url
    )
    key, tokens, models = _prepare(settings, config.workers)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSTATION_")}
    if config.database_url:
        env["SWARMSTATION_DATABASE_URL"] = config.database_url
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "swarmstation.cli",
            "serve",
            "--provider",
            "none",
            "--port",
            str(port),
            "--data-dir",
            str(settings.data_dir),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(folder / "serve.log").open("wb"),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(
                    f"control plane did not start: {(folder / 'serve.log').read_text()[-2000:]}"
                )
            time.sleep(0.2)
        server_cpu_before = _cpu_seconds(server.pid)
        own_before = time.process_time()
        ids, elapsed = asyncio.run(_run(config, url, key, tokens, folder / "comfy", models, progress))
        server_cpu = _cpu_seconds(server.pid) - server_cpu_before
        own_cpu = time.process_time() - own_before
    finally:
        server.terminate()
        server.wait(timeout=30)

    plane = build(settings, provider=None)
    with transaction(plane.state.sessions) as s:
        jobs = list(s.scalars(select(Job).where(Job.id.in_(ids))))
    plane.state.engine.dispose()
    done = [j for j in jobs if j.state == "COMPLETED" and j.finished_at is not None]
    overhead_ms, run_ms, queue_ms = [], [], []
    for j in done:
        assert j.finished_at is not None and j.assigned_at is not None
        total = (j.finished_at - j.created_at).total_seconds()
        run = float(j.timings.get("run_seconds", 0.0))
        overhead_ms.append((total - run) * 1000)
        run_ms.append(run * 1000)
        queue_ms.append((j.assigned_at - j.created_at).total_seconds() * 1000)
    shutil.rmtree(folder, ignore_errors=True)
    db = "postgresql" if config.database_url and config.database_url.startswith("postgresql") else "sqlite"
    return {
        "database": db,
        "workers": config.workers,
        "clients": config.concurrency,
        "jobs": config.jobs,
        "completed": len(done),
        "failed": len(jobs) - len(done),
        "elapsed_seconds": round(elapsed, 3),
        "jobs_per_second": round(len(done) / elapsed, 1) if elapsed else 0.0,
        "overhead_ms": {
            "p50": round(statistics.median(overhead_ms), 1) if overhead_ms else None,
            "p99": round(percentile(overhead_ms, 0.99), 1),
            "max": round(max(overhead_ms), 1) if overhead_ms else None,
        },
        "submit_to_assign_ms_p50": round(statistics.median(queue_ms), 1) if queue_ms else None,
        "emulated_run_ms_p50": round(statistics.median(run_ms), 1) if run_ms else None,
        # Where the CPU went: the control plane, and this process (workers, emulators, clients).
        "control_plane_cpu_ms_per_job": round(1000 * server_cpu / max(1, len(done)), 2),
        "workers_emulators_clients_cpu_ms_per_job": round(1000 * own_cpu / max(1, len(done)), 2),
        "cpu_count": os.cpu_count(),
    }
