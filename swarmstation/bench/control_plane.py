"""`swarmstation bench`: control-plane throughput, per-job overhead, CPU and memory.

The control plane runs as its own process (`swarmstation serve --provider none`), as in
production. This process runs the workers and C clients that each submit a job, follow its event
stream to the end, and submit the next (a closed loop, so no job waits for a busy worker).
Overhead per job is submit → completed minus the ComfyUI run, from the control plane's own
timestamps.

Two modes:

* ``full``: N real worker agents (swarmstation/worker), each beside an in-process ComfyUI
  emulator that takes no time per step. The agents, emulators and clients cost about as much CPU
  as the control plane, which caps what this mode can show on a small machine.
* ``lean`` (``--lean``): one asyncio task per instance plays the worker protocol over real HTTP
  against the same serve process (register, heartbeats, long-poll, reports with the fencing token,
  the presigned upload, complete), with no emulator and no ComfyUI, so that the control plane is
  what saturates.

* ``memory`` (``--memory``): the database seeded directly with ``--finished`` finished and
  ``--queued`` queued jobs, ``--workers`` lean instances heartbeating (they take no jobs), and
  one real worker agent beside an emulator running jobs; the control plane's resident memory
  loaded and idle, at the peak of a burst of large reads (job lists of 500), 15 s after it, and the
  worker's.

* ``replicas`` (``--lean --replicas N --database-url postgresql://...``): the lean load through one
  address, a round-robin TCP proxy (bench/proxy.py, its own process), in front of N serve
  processes on a fresh schema of that database; with N > 1 a one-replica run behind the same proxy
  first and the ratio. Each run prints the CPU of every replica, the proxy, this process, every
  postgres process and the machine as a whole (what bounds it), ``leaders`` (replicas whose
  scheduler passes grew, from their /metrics) and ``jobs_assigned_twice`` (`assignment_counts`).

Both print the control plane's CPU per job (user + system time of the serve process over the
run, divided by the jobs completed), this process's CPU per job, and the serve process's
resident memory: idle before the run, its peak during it, and after the burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx
from rich.console import Console
from rich.progress import Progress
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from swarmstation import __version__
from swarmstation.api.app import build
from swarmstation.auth import WORKER_TOKEN_PREFIX, hash_secret, new_secret
from swarmstation.comfy.emulator import EmulatorConfig, running_emulator
from swarmstation.config import Settings
from swarmstation.control import ledger
from swarmstation.control.bootstrap import create_user_with_key
from swarmstation.control.pools import preload_models
from swarmstation.domain.states import InstanceState, JobState
from swarmstation.domain.stats import percentile
from swarmstation.providers.local import PLACEHOLDER_WEIGHTS
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, Job, utcnow
from swarmstation.worker.agent import ControlPlaneClient, LeaseLost, Worker, WorkerConfig

TOOL = "sd15-txt2img"
INPUTS = {"prompt": "benchmark", "width": 64, "height": 64, "steps": 1}
#: What a lean instance uploads as the job's one output (a PNG's signature and a few bytes).
LEAN_OUTPUT = b"\x89PNG\r\n\x1a\n" + bytes(56)


@dataclass
class Options:
    workers: int = 16
    jobs: int = 2000
    concurrency: int = 16
    database_url: str | None = None
    lean: bool = False
    #: idle mode: the lean instances register, heartbeat and long-poll with nothing queued, for
    #: this many seconds; the figure is the control plane's CPU share of one core over them
    idle_seconds: float | None = None
    #: memory mode: jobs seeded into the database before the control plane starts
    finished: int = 100_000
    queued: int = 10_000
    #: replicas mode: with more than one replica, run one replica behind the same proxy first
    baseline: bool = True
    #: replicas mode: the clients submit as this many users in turn (each with its own account)
    users: int = 1
    #: floor mode: requests of each kind
    requests: int = 2000


P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def fresh_database(database_url: str | None) -> Iterator[str | None]:
    """The URL to run on: on PostgreSQL a new schema of `database_url`, dropped afterwards, so
    that a run starts from nothing and leaves nothing behind (the instances and the replica
    registry of an earlier run would otherwise be there); anything else unchanged (SQLite's file
    is the run's own)."""
    if database_kind(database_url) != "postgresql":
        yield database_url
        return
    assert database_url is not None
    from sqlalchemy import text

    from swarmstation.store.db import make_engine

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(database_url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
            conn.commit()
        yield _schema_url(database_url, schema)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            conn.commit()
        admin.dispose()


def on_fresh_database(
    fn: Callable[Concatenate[Options, P], R],
) -> Callable[Concatenate[Options, P], R]:
    """Run `fn` with its options' database URL replaced by a `fresh_database`."""

    @functools.wraps(fn)
    def on_fresh(config: Options, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with fresh_database(config.database_url) as url:
            return fn(dataclasses.replace(config, database_url=url), *args, **kwargs)

    return on_fresh


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prepare(settings: Settings, workers: int) -> tuple[str, list[str], list[tuple[str, str]]]:
    plane = build(settings, provider=None)
    now = utcnow()
    tokens: list[str] = []
    with transaction(plane.state.sessions) as s:
        key = _funded_user(s, f"bench-{int(time.time())}", now)
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


def _heartbeats_now(settings: Settings) -> None:
    """The prepared instances' last heartbeat is now: seeded before the control plane starts,
    they would otherwise be past the heartbeat timeout at its first sweep when the preparation
    took that long, and answered 410 (unhealthy) when they register."""
    plane = build(settings, provider=None)
    with transaction(plane.state.sessions) as s:
        s.execute(update(Instance).values(last_heartbeat_at=utcnow()))
    plane.state.engine.dispose()


def _funded_user(s: Session, name: str, now: datetime) -> str:
    """A bench user's API key, the user granted credits: jobs are charged as for any user (quote,
    hold, capture), so the bench measures that too."""
    user, key = create_user_with_key(s, name, "user", now)
    ledger.grant(
        s, user_id=user.id, amount=10**12, reason="bench", actor_id=None, key=f"bench:{uuid.uuid4()}", now=now
    )
    return key


def _more_users(settings: Settings, n: int) -> list[str]:
    """API keys of `n` more bench users, each granted credits as `_prepare`'s."""
    plane = build(settings, provider=None)
    now = utcnow()
    with transaction(plane.state.sessions) as s:
        keys = [_funded_user(s, f"bench-{int(time.time())}-{k}", now) for k in range(n)]
    plane.state.engine.dispose()
    return keys


async def _clients(
    http: httpx.AsyncClient, config: Options, progress: Console | None, keys: list[str] | None = None
) -> tuple[list[str], float]:
    """C clients in a closed loop: submit, follow the job's events to the end, submit the next.
    With `keys`, client n submits as the user of keys[n % len(keys)] (else as `http`'s)."""
    remaining = config.jobs
    ids: list[str] = []
    bar = Progress(console=progress, disable=progress is None, transient=True)
    task = bar.add_task("jobs", total=config.jobs)

    async def client(n: int) -> None:
        nonlocal remaining
        auth = {"Authorization": f"Bearer {keys[n % len(keys)]}"} if keys else {}
        while remaining > 0:
            remaining -= 1
            # Idempotent, so that a submission retried after a dropped connection is one job.
            key = {"Idempotency-Key": str(uuid.uuid4()), **auth}
            for attempt in range(5):
                try:
                    r = await http.post("/v1/jobs", json={"tool": TOOL, "inputs": INPUTS}, headers=key)
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.2 * (attempt + 1))
            else:
                raise RuntimeError("a submission failed 5 times")
            r.raise_for_status()
            job_id = r.json()["id"]
            ids.append(job_id)
            last_id: str | None = None
            for attempt in range(5):
                resume = {"Last-Event-ID": last_id, **auth} if last_id else auth
                try:
                    async with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=resume) as events:
                        async for line in events.aiter_lines():
                            if line.startswith("id: "):
                                last_id = line[4:]
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.2 * (attempt + 1))
            bar.advance(task)

    with bar:
        started = time.monotonic()
        await asyncio.gather(*(client(n) for n in range(config.concurrency)))
        return ids, time.monotonic() - started


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
            ids, elapsed = await _clients(http, config, progress)
        for t in worker_tasks:
            t.cancel()
        await asyncio.gather(*worker_tasks, return_exceptions=True)
        return ids, elapsed


class LeanInstance:
    """One instance's worker protocol, without ComfyUI: what swarmstation/worker/agent.py sends
    for a job whose run takes no time and writes one small image, through the worker's own
    ControlPlaneClient (retries on connection errors, 429 and 5xx; 409: the lease moved on, the
    job is dropped as the worker drops it)."""

    def __init__(self, http: httpx.AsyncClient, token: str, *, take_jobs: bool = True) -> None:
        self.http = http
        self.take_jobs = take_jobs
        self.cp = ControlPlaneClient(http, retry_for=120.0)
        self.headers = {"Authorization": f"Bearer {token}", "User-Agent": f"swarmstation-lean/{__version__}"}
        self.running: dict[str, int] = {}
        self.jobs_done = 0
        self.leases_lost = 0
        self.heartbeats = 0
        self.polls = 0

    async def _post(self, path: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return await self.cp.call("POST", path, json=body, headers=self.headers, **kwargs)

    async def run(self) -> None:
        reg = await self._post(
            "/worker/v1/register",
            {"comfyui_url": "http://lean.invalid", "version": __version__},
            params={"ready": "true"},
        )
        beats = asyncio.create_task(self._heartbeats(float(reg.json()["heartbeat_seconds"])))
        try:
            if not self.take_jobs:  # heartbeats only (memory mode)
                await beats
            while True:
                r = await self.cp.call(
                    "GET",
                    "/worker/v1/jobs/next",
                    params={"wait": 20, "start": "true", "holding": list(self.running)},
                    headers=self.headers,
                )
                self.polls += 1
                if r.status_code == 204:
                    continue
                try:
                    await self._job(r.json())
                except LeaseLost:
                    self.leases_lost += 1
        finally:
            beats.cancel()
            await asyncio.gather(beats, return_exceptions=True)

    async def _heartbeats(self, every: float) -> None:
        while True:
            running = [{"job_id": j, "lease_token": t} for j, t in self.running.items()]
            await self._post("/worker/v1/heartbeat", {"running": running, "comfyui_ok": True})
            self.heartbeats += 1
            await asyncio.sleep(every)

    async def _upload(self, url: str) -> None:
        for attempt in range(5):
            try:
                put = await self.http.put(url, content=LEAN_OUTPUT)
            except httpx.TransportError:
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if put.status_code == 403:  # the upload URL ended with the lease
                raise LeaseLost(put.text[:300])
            put.raise_for_status()
            return
        raise RuntimeError(f"upload failed 5 times: {url}")

    async def _job(self, assignment: dict[str, Any]) -> None:
        job_id, lease = str(assignment["job_id"]), int(assignment["lease_token"])
        self.running[job_id] = lease
        base = f"/worker/v1/jobs/{job_id}"
        try:
            if not assignment.get("started"):
                await self._post(f"{base}/started", {"lease_token": lease})
            await self._post(
                f"{base}/progress", {"lease_token": lease, "progress": 0.95, "stage": "sampling"}
            )
            files = [{"filename": "lean_00001_.png", "size": len(LEAN_OUTPUT), "node_id": "9"}]
            uploads = (await self._post(f"{base}/outputs", {"lease_token": lease, "files": files})).json()
            ids = []
            for upload in uploads["uploads"]:
                await self._upload(upload["upload_url"])
                ids.append(upload["output_id"])
            timings = {"run_seconds": 0.0, "model_fetch_seconds": 0.0, "upload_seconds": 0.0}
            await self._post(f"{base}/complete", {"lease_token": lease, "outputs": ids, "timings": timings})
            self.jobs_done += 1
        finally:
            self.running.pop(job_id, None)


@dataclass
class LeanTally:
    """What a lean run counts besides its jobs: reports refused because the job's lease had moved
    on (409), and the HTTP requests the lean instances and the clients sent."""

    leases_lost: int = 0
    worker_requests: int = 0
    client_requests: int = 0

    async def count_worker(self, request: httpx.Request) -> None:
        self.worker_requests += 1

    async def count_client(self, request: httpx.Request) -> None:
        self.client_requests += 1

    def requests_per_job(self, jobs: int) -> dict[str, float]:
        """Per completed job: every request counts (heartbeats and polls answered 204 included)."""
        per = max(1, jobs)
        return {
            "worker": round(self.worker_requests / per, 2),
            "client": round(self.client_requests / per, 2),
            "total": round((self.worker_requests + self.client_requests) / per, 2),
        }


async def _run_lean(
    config: Options,
    url: str,
    key: str,
    tokens: list[str],
    progress: Console | None,
    tally: LeanTally,
    keys: list[str] | None = None,
) -> tuple[list[str], float]:
    """The lean run; `tally` gets the leases lost and the requests sent."""
    # keep-alive shorter than the server's 5 s: a connection is not reused as the server closes it
    limits = httpx.Limits(max_connections=config.concurrency * 2 + 2 * len(tokens) + 8, keepalive_expiry=3.0)
    timeout = httpx.Timeout(60.0)
    worker_hooks = {"request": [tally.count_worker]}
    async with httpx.AsyncClient(
        base_url=url, timeout=timeout, limits=limits, event_hooks=worker_hooks
    ) as workers_http:
        instances = [LeanInstance(workers_http, token) for token in tokens]
        tasks = [asyncio.create_task(i.run()) for i in instances]
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            base_url=url,
            headers=headers,
            timeout=timeout,
            limits=limits,
            event_hooks={"request": [tally.count_client]},
        ) as http:
            clients = asyncio.create_task(_clients(http, config, progress, keys))
            # An instance that fails ends the run at once (its jobs would wait for their leases).
            await asyncio.wait([clients, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in [clients, *tasks]:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            errors = [r for r in results if isinstance(r, Exception)]
            if errors:
                raise RuntimeError(f"a lean instance failed: {errors[0]!r}")
            ids, elapsed = await clients
            tally.leases_lost = sum(i.leases_lost for i in instances)
            return ids, elapsed


async def _run_idle(
    url: str, tokens: list[str], warmup: float, seconds: float, pid: int
) -> tuple[float, int, int]:
    """The serve process's CPU seconds over `seconds` while every lean instance waits for work,
    and the heartbeats and answered polls in that time."""
    limits = httpx.Limits(max_connections=2 * len(tokens) + 8, keepalive_expiry=3.0)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(60.0), limits=limits) as http:
        instances = [LeanInstance(http, token) for token in tokens]
        tasks = [asyncio.create_task(i.run()) for i in instances]
        try:
            await asyncio.sleep(warmup)  # registered, first heartbeats and polls in
            for t in tasks:
                if t.done():
                    t.result()
            before = _cpu_seconds(pid)
            beats = sum(i.heartbeats for i in instances)
            polls = sum(i.polls for i in instances)
            await asyncio.sleep(seconds)
            for t in tasks:
                if t.done():
                    t.result()
            return (
                _cpu_seconds(pid) - before,
                sum(i.heartbeats for i in instances) - beats,
                sum(i.polls for i in instances) - polls,
            )
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@on_fresh_database
def run_idle(config: Options) -> dict[str, Any]:
    """`swarmstation bench --idle`: what a control plane with idle instances and an empty queue costs."""
    assert config.idle_seconds is not None
    folder = Path(tempfile.mkdtemp(prefix="swarmstation-bench-"))
    port = _free_port()
    settings = Settings(
        data_dir=folder / "data", port=port, provider="none", database_url=config.database_url
    )
    _, tokens, _ = _prepare(settings, config.workers)
    with serving(settings, folder, config.database_url) as server:
        url = f"http://127.0.0.1:{port}"
        cpu, beats, polls = asyncio.run(_run_idle(url, tokens, 5.0, config.idle_seconds, server.pid))
        rss = rss_mb(server.pid)
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "mode": "idle",
        "database": database_kind(config.database_url),
        "instances": config.workers,
        "queued": 0,
        "seconds": config.idle_seconds,
        "heartbeats": beats,
        "polls_answered": polls,
        "control_plane_cpu_percent_of_core": round(100 * cpu / config.idle_seconds, 2),
        "control_plane_rss_mb": rss,
        "cpu_count": os.cpu_count(),
    }


#: The floor mode's requests: the cheapest of each kind a job's requests are made of.
FLOOR_REQUESTS: dict[str, tuple[str, str]] = {
    # no authentication; a thread hop and a database ping
    "healthz": ("GET", "/healthz"),
    # a user's API key checked, the account read (a client's read of its job is at least this)
    "user_read": ("GET", "/v1/account"),
    # an instance's token checked, its heartbeat written (the quick form: nothing changed)
    "worker_write": ("POST", "/worker/v1/heartbeat"),
}


async def _run_floor(url: str, key: str, token: str, n: int, pid: int) -> dict[str, float]:
    """The serve process's CPU milliseconds per request of each FLOOR_REQUESTS kind, `n` of each
    from 8 concurrent senders."""
    headers = {
        "healthz": {},
        "user_read": {"Authorization": f"Bearer {key}"},
        "worker_write": {"Authorization": f"Bearer {token}"},
    }
    bodies: dict[str, Any] = {"worker_write": {"running": [], "comfyui_ok": True}}
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(60.0)) as http:
        registered = await http.post(
            "/worker/v1/register",
            json={"comfyui_url": "http://lean.invalid", "version": __version__},
            params={"ready": "true"},
            headers=headers["worker_write"],
        )
        registered.raise_for_status()
        figures: dict[str, float] = {}
        senders = asyncio.Semaphore(8)
        for name, (method, path) in FLOOR_REQUESTS.items():

            async def one(name: str = name, method: str = method, path: str = path) -> None:
                async with senders:
                    r = await http.request(method, path, headers=headers[name], json=bodies.get(name))
                    r.raise_for_status()

            await asyncio.gather(*(one() for _ in range(min(n, 100))))  # warm
            before = _cpu_seconds(pid)
            await asyncio.gather(*(one() for _ in range(n)))
            figures[name] = round(1000 * (_cpu_seconds(pid) - before) / n, 3)
        return figures


@on_fresh_database
def run_floor(config: Options) -> dict[str, Any]:
    """`swarmstation bench --floor`: what one request costs the control plane at least, by kind: the
    floor under `control_plane_cpu_ms_per_job`, which is some number of such requests (the lean
    mode's `requests_per_job`) plus the work of each."""
    folder = Path(tempfile.mkdtemp(prefix="swarmstation-bench-"))
    port = _free_port()
    settings = Settings(
        data_dir=folder / "data", port=port, provider="none", database_url=config.database_url
    )
    key, tokens, _ = _prepare(settings, 1)
    with serving(settings, folder, config.database_url) as server:
        url = f"http://127.0.0.1:{port}"
        figures = asyncio.run(_run_floor(url, key, tokens[0], config.requests, server.pid))
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "mode": "floor",
        "database": database_kind(config.database_url),
        "requests_each": config.requests,
        "control_plane_cpu_ms_per_request": figures,
        "cpu_count": os.cpu_count(),
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB, from /proc (Linux); NaN where unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, IndexError, ValueError):
        pass
    return float("nan")


class RssSampler:
    """The peak resident memory of a process over a stretch of time, sampled every `every` s."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        self.pid = pid
        self.every = every
        self.peak = rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            value = rss_mb(self.pid)
            if value == value:  # not NaN
                self.peak = max(self.peak, value)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def serve_process(
    settings: Settings,
    folder: Path,
    database_url: str | None,
    *,
    public_url: str | None = None,
    log_name: str = "serve.log",
) -> subprocess.Popen[bytes]:
    """`swarmstation serve` on `settings.port`, answering /healthz (raises when it does not).
    `public_url`: the address in front of every replica (SWARMSTATION_PUBLIC_URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSTATION_")}
    if database_url:
        env["SWARMSTATION_DATABASE_URL"] = database_url
    if public_url:
        env["SWARMSTATION_PUBLIC_URL"] = public_url
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "swarmstation.cli",
            "serve",
            "--provider",
            "none",
            "--port",
            str(settings.port),
            "--data-dir",
            str(settings.data_dir),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(folder / log_name).open("wb"),
    )
    url = f"http://127.0.0.1:{settings.port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.terminate()
            raise RuntimeError(f"control plane did not start: {(folder / log_name).read_text()[-2000:]}")
        time.sleep(0.2)


@contextlib.contextmanager
def serving(settings: Settings, folder: Path, database_url: str | None) -> Iterator[subprocess.Popen[bytes]]:
    """A `serve_process` for the block, stopped after it."""
    server = serve_process(settings, folder, database_url)
    try:
        yield server
    finally:
        server.terminate()
        server.wait(timeout=30)


def database_kind(database_url: str | None) -> str:
    return "postgresql" if database_url and database_url.startswith("postgresql") else "sqlite"


@on_fresh_database
def run(config: Options, progress: Console | None = None) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="swarmstation-bench-"))
    port = _free_port()
    settings = Settings(
        data_dir=folder / "data", port=port, provider="none", database_url=config.database_url
    )
    key, tokens, models = _prepare(settings, config.workers)
    server = serve_process(settings, folder, config.database_url)
    try:
        url = f"http://127.0.0.1:{port}"
        time.sleep(1.0)  # past the start-up work, so that "idle" is idle
        rss_idle = rss_mb(server.pid)
        server_cpu_before = _cpu_seconds(server.pid)
        own_before = time.process_time()
        tally = LeanTally()
        with RssSampler(server.pid) as sampler:
            if config.lean:
                ids, elapsed = asyncio.run(_run_lean(config, url, key, tokens, progress, tally))
            else:
                ids, elapsed = asyncio.run(_run(config, url, key, tokens, folder / "comfy", models, progress))
            server_cpu = _cpu_seconds(server.pid) - server_cpu_before
            own_cpu = time.process_time() - own_before
        time.sleep(2.0)  # the burst is over: what the process keeps
        rss_after = rss_mb(server.pid)
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
    per_job = max(1, len(done))
    slowest = sorted(done, key=lambda j: (j.finished_at or j.created_at) - j.created_at, reverse=True)
    slowest = slowest[:SLOWEST_SHOWN]
    return {
        "mode": "lean" if config.lean else "full",
        "database": database_kind(config.database_url),
        "workers": config.workers,
        "clients": config.concurrency,
        "jobs": config.jobs,
        "completed": len(done),
        "failed": len(jobs) - len(done),
        # lean mode: reports refused because the job's lease had moved on (requeued, reassigned)
        "leases_lost": tally.leases_lost,
        "elapsed_seconds": round(elapsed, 3),
        "jobs_per_second": round(len(done) / elapsed, 1) if elapsed else 0.0,
        # lean mode: HTTP requests per job (the full mode's workers are not counted)
        **({"requests_per_job": tally.requests_per_job(len(done))} if config.lean else {}),
        "overhead_ms": {
            "p50": round(statistics.median(overhead_ms), 1) if overhead_ms else None,
            "p99": round(percentile(overhead_ms, 0.99), 1),
            "max": round(max(overhead_ms), 1) if overhead_ms else None,
        },
        "submit_to_assign_ms_p50": round(statistics.median(queue_ms), 1) if queue_ms else None,
        "submit_to_assign_ms_min": round(min(queue_ms), 1) if queue_ms else None,
        "emulated_run_ms_p50": round(statistics.median(run_ms), 1) if run_ms else None,
        # where the slowest jobs' time went, so that a tail can be told from a slow path
        "slowest_jobs_ms": [job_phases_ms(j) for j in slowest],
        # Where the CPU went: the control plane, and this process (workers or lean instances,
        # emulators in the full mode, clients).
        "control_plane_cpu_ms_per_job": round(1000 * server_cpu / per_job, 2),
        "bench_cpu_ms_per_job": round(1000 * own_cpu / per_job, 2),
        "control_plane_rss_mb": {
            "idle": rss_idle,
            "peak": max(sampler.peak, rss_after),
            "after_burst": rss_after,
        },
        "cpu_count": os.cpu_count(),
    }


#: How many of the slowest jobs the result breaks down into phases.
SLOWEST_SHOWN = 5


def job_phases_ms(job: Job) -> dict[str, float | None]:
    """A finished job's time from submission to queueing, to assignment, to its start and to its
    end, in milliseconds (None where the job has no such time)."""
    marks = [job.created_at, job.queued_at, job.assigned_at, job.started_at, job.finished_at]
    names = ["queued", "assigned", "started", "finished"]
    phases: dict[str, float | None] = {}
    for name, before, after in zip(names, marks[:-1], marks[1:], strict=True):
        gap = None if before is None or after is None else (after - before).total_seconds() * 1000
        phases[name] = None if gap is None else round(gap, 1)
    return phases


# -- replicas -------------------------------------------------------------------------------------
#: Each replica's count of scheduler passes it ran (api/metrics.py): only the leader's grows.
_METRIC_PASSES = "swarmstation_scheduler_passes"


def _schema_url(database_url: str, schema: str) -> str:
    sep = "&" if "?" in database_url else "?"
    return f"{database_url}{sep}options=-csearch_path%3D{schema}"


def _postgres_cpu_seconds() -> float:
    """User + system CPU of every PostgreSQL process on this machine (the bench's backends and
    anyone else's: the machine is shared), from /proc."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text_ = stat.read_text()
        except OSError:
            continue
        if "(postgres)" in text_ or "(postmaster)" in text_:
            fields = text_.rsplit(") ", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of every core since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return float(sum(fields) - idle), float(sum(fields))


def _scheduler_passes(port: int) -> int:
    """The scheduler passes a replica has run (its /metrics), -1 where it does not answer."""
    try:
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return -1
    for line in body.splitlines():
        if line.startswith(_METRIC_PASSES + " "):
            return int(float(line.split()[1]))
    return -1


def assignment_counts(events: list[tuple[str, str | None, str | None]]) -> tuple[int, int]:
    """(jobs assigned twice, legitimate re-assignments) from each job's state events in order:
    (job id, state, trigger). An assignment is legitimate when it is the job's first or follows
    the job's return to the queue (a retry, an expired lease, a lost instance: a QUEUED event
    after the last assignment); a second assignment while the first still holds, the trace two
    schedulers leave when both hand out the same queued job, counts the job as assigned twice."""
    holding: set[str] = set()
    assigned: set[str] = set()
    twice: set[str] = set()
    again = 0
    for job_id, state, trigger in events:
        if trigger == "ASSIGN":
            if job_id in holding:
                twice.add(job_id)
            elif job_id in assigned:
                again += 1
            holding.add(job_id)
            assigned.add(job_id)
        elif state == "QUEUED":
            holding.discard(job_id)
    return len(twice), again


@on_fresh_database
def _replicas_once(config: Options, replicas: int, progress: Console | None) -> dict[str, Any]:
    """One lean run against `replicas` serve processes on a fresh schema, behind the proxy."""
    from swarmstation.store.models import JobEvent

    database_url = config.database_url
    assert database_url is not None
    folder = Path(tempfile.mkdtemp(prefix="swarmstation-bench-"))
    proxy_port = _free_port()
    url = f"http://127.0.0.1:{proxy_port}"
    ports = [_free_port() for _ in range(replicas)]
    settings = Settings(
        data_dir=folder / "data", port=ports[0], provider="none", database_url=database_url, public_url=url
    )
    servers: list[subprocess.Popen[bytes]] = []
    proxy: subprocess.Popen[bytes] | None = None
    try:
        key, tokens, _ = _prepare(settings, config.workers)
        keys = [key, *_more_users(settings, config.users - 1)] if config.users > 1 else None
        for n, port in enumerate(ports):
            servers.append(
                serve_process(
                    settings.model_copy(update={"port": port}),
                    folder,
                    database_url,
                    public_url=url,
                    log_name=f"serve{n}.log",
                )
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSTATION_")}
        proxy = subprocess.Popen(
            [sys.executable, "-m", "swarmstation.bench.proxy", str(proxy_port), *map(str, ports)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(folder / "proxy.log").open("wb"),
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the proxy did not answer: {(folder / 'proxy.log').read_text()[-2000:]}")
            time.sleep(0.1)
        time.sleep(1.0)  # past the start-up work
        passes_before = [_scheduler_passes(p) for p in ports]
        load_before = os.getloadavg()
        cpu_before = [_cpu_seconds(s.pid) for s in servers]
        proxy_before = _cpu_seconds(proxy.pid)
        pg_before = _postgres_cpu_seconds()
        busy_before, total_before = _machine_cpu()
        own_before = time.process_time()
        tally = LeanTally()
        ids, elapsed = asyncio.run(_run_lean(config, url, key, tokens, progress, tally, keys))
        own_cpu = time.process_time() - own_before
        busy_after, total_after = _machine_cpu()
        pg_cpu = _postgres_cpu_seconds() - pg_before
        proxy_cpu = _cpu_seconds(proxy.pid) - proxy_before
        cpu = [_cpu_seconds(s.pid) - b for s, b in zip(servers, cpu_before, strict=True)]
        load_after = os.getloadavg()
        passes = [_scheduler_passes(p) - b for p, b in zip(ports, passes_before, strict=True)]
    finally:
        if proxy is not None:
            proxy.terminate()
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)
        if proxy is not None:
            proxy.wait(timeout=10)

    plane = build(settings, provider=None)
    try:
        with transaction(plane.state.sessions) as s:
            jobs = list(s.scalars(select(Job).where(Job.id.in_(ids))))
            events = [
                (str(r.job_id), (r.data or {}).get("state"), r.trigger.value if r.trigger else None)
                for r in s.execute(
                    select(JobEvent.job_id, JobEvent.data, JobEvent.trigger)
                    .where(JobEvent.job_id.in_(ids), JobEvent.type == "state")
                    .order_by(JobEvent.id)
                )
            ]
    finally:
        plane.state.engine.dispose()
        shutil.rmtree(folder, ignore_errors=True)
    twice, again = assignment_counts(events)
    done = [j for j in jobs if j.state == "COMPLETED" and j.finished_at is not None]
    overhead_ms, queue_ms = [], []
    for j in done:
        assert j.finished_at is not None and j.assigned_at is not None
        total = (j.finished_at - j.created_at).total_seconds()
        overhead_ms.append((total - float(j.timings.get("run_seconds", 0.0))) * 1000)
        queue_ms.append((j.assigned_at - j.created_at).total_seconds() * 1000)
    per_job = max(1, len(done))
    busy = busy_after - busy_before
    cores = os.cpu_count() or 1
    return {
        "replicas": replicas,
        "completed": len(done),
        "failed": len(jobs) - len(done),
        "leases_lost": tally.leases_lost,
        "elapsed_seconds": round(elapsed, 3),
        "jobs_per_second": round(len(done) / elapsed, 1) if elapsed else 0.0,
        "requests_per_job": tally.requests_per_job(len(done)),
        "overhead_ms": {
            "p50": round(statistics.median(overhead_ms), 1) if overhead_ms else None,
            "p99": round(percentile(overhead_ms, 0.99), 1),
        },
        "submit_to_assign_ms_p50": round(statistics.median(queue_ms), 1) if queue_ms else None,
        # how many replicas ran scheduler passes during the run (each replica's /metrics)
        "leaders": sum(1 for p in passes if p > 0),
        "scheduler_passes": passes,
        # two assignments of one job with no return to the queue between them (assignment_counts)
        "jobs_assigned_twice": twice,
        "reassigned_after_requeue": again,
        "control_plane_cpu_ms_per_job": {
            "per_replica": [round(1000 * c / per_job, 2) for c in cpu],
            "total": round(1000 * sum(cpu) / per_job, 2),
        },
        # each replica's CPU over the run as a share of one core: what bounds it
        "control_plane_cpu_percent_of_core": [round(100 * c / elapsed, 1) for c in cpu] if elapsed else [],
        "proxy_cpu_ms_per_job": round(1000 * proxy_cpu / per_job, 2),
        "bench_cpu_ms_per_job": round(1000 * own_cpu / per_job, 2),
        # every postgres process alive at both ends of the run, the bench's backends and anyone
        # else's (a backend that exits meanwhile takes its CPU with it): a rough figure
        "postgres_cpu_ms_per_job": round(1000 * pg_cpu / per_job, 2),
        # every process on the machine, as a share of all its cores (100 = every core busy)
        "machine_cpu_busy_percent": round(100 * busy / max(1.0, total_after - total_before), 1),
        "machine_cores": cores,
        "load_average_1m": [round(load_before[0], 2), round(load_after[0], 2)],
    }


def run_replicas(config: Options, replicas: int, progress: Console | None = None) -> dict[str, Any]:
    """`swarmstation bench --lean --replicas N --database-url postgresql://...`: the lean load
    through one address (a round-robin TCP proxy, its own process) in front of N `serve`
    processes on one database; with N > 1 a run with one replica behind the same proxy first
    (`baseline`), so that the ratio compares like with like. Each run has a fresh schema."""
    if database_kind(config.database_url) != "postgresql":
        raise ValueError("--replicas needs --database-url postgresql://... (replicas share a PostgreSQL)")
    runs = []
    if replicas > 1 and config.baseline:
        runs.append(_replicas_once(config, 1, progress))
    result = _replicas_once(config, replicas, progress)
    out: dict[str, Any] = {
        "mode": "replicas",
        "database": "postgresql",
        "workers": config.workers,
        "clients": config.concurrency,
        "users": config.users,
        "jobs": config.jobs,
        **result,
    }
    if runs:
        one = runs[0]
        out["one_replica"] = one
        out["ratio_to_one_replica"] = (
            round(result["jobs_per_second"] / one["jobs_per_second"], 3) if one["jobs_per_second"] else None
        )
    out["cpu_count"] = os.cpu_count()
    return out


# -- memory ----------------------------------------------------------------------------------------
#: What the memory mode's burst reads: job lists of the largest page, this many times.
BURST_REQUESTS = 40
#: How long after the burst its resident memory is read: past the control plane's heap trim
#: (api/app.py TRIM_SECONDS, every 10 s).
AFTER_BURST_SECONDS = 15.0


def _seed_jobs(settings: Settings, user_key: str, *, finished: int, queued: int) -> None:
    """`finished` completed and `queued` queued jobs of the bench's user, written with SQL Core
    in batches: copies of one job that went through submission (its workflow, models and inputs
    as the scheduler and the API read them), with their state events."""
    from swarmstation.control import submission
    from swarmstation.control.loras import MatcherCache
    from swarmstation.store.models import ApiKey, JobEvent, User

    plane = build(settings, provider=None)
    now = utcnow()
    with transaction(plane.state.sessions) as s:
        user = s.scalars(
            select(User)
            .join(ApiKey, ApiKey.user_id == User.id)
            .where(ApiKey.key_hash == hash_secret(user_key))
        ).one()
        template = submission.submit(
            s,
            user=user,
            tool_slug=TOOL,
            inputs=INPUTS,
            matchers=MatcherCache(),
            limits=submission.SubmissionLimits.from_settings(settings),
            now=now,
        )
        row = {c.key: getattr(template, c.key) for c in Job.__table__.columns}
        s.delete(template)
    batch = 5000
    made = 0
    with plane.state.engine.begin() as conn:
        while made < finished + queued:
            rows, evs = [], []
            for n in range(made, min(finished + queued, made + batch)):
                job_id = str(uuid.uuid4())
                created = now - timedelta(seconds=(finished + queued - n))
                done = n < finished
                rows.append(
                    {
                        **row,
                        "id": job_id,
                        "state": JobState.COMPLETED if done else JobState.QUEUED,
                        "created_at": created,
                        "queued_at": created,
                        "attempt": 1 if done else 0,
                        "lease_token": 1 if done else 0,
                        "progress": 1.0 if done else 0.0,
                        "assigned_at": created if done else None,
                        "started_at": created if done else None,
                        "finished_at": created + timedelta(seconds=1) if done else None,
                        "timings": {"run_seconds": 1.0, "total_seconds": 1.0} if done else {},
                    }
                )
                evs.append({"job_id": job_id, "type": "state", "data": {"state": "QUEUED"}, "at": created})
                if done:
                    evs.append(
                        {"job_id": job_id, "type": "state", "data": {"state": "COMPLETED"}, "at": created}
                    )
            conn.execute(insert(Job), rows)
            conn.execute(insert(JobEvent), evs)
            made += len(rows)
    plane.state.engine.dispose()


def _worker_process(url: str, token: str, comfy_url: str, folder: Path) -> subprocess.Popen[bytes]:
    """One real worker agent (`swarmstation worker`), its own process, beside `comfy_url`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSTATION_")}
    return subprocess.Popen(
        [sys.executable, "-m", "swarmstation.cli", "worker", "--server", url, "--comfyui", comfy_url],
        env={**env, "SWARMSTATION_WORKER_TOKEN": token},
        stdout=subprocess.DEVNULL,
        stderr=(folder / "worker.log").open("wb"),
    )


async def _run_memory(
    url: str,
    key: str,
    tokens: list[str],
    pid: int,
    folder: Path,
    models: list[tuple[str, str]],
    warmup: float,
) -> dict[str, Any]:
    """The lean instances heartbeat (all but the last token) while one real worker (the last)
    runs queued jobs; the control plane's memory loaded and idle, over a burst of job lists, after
    it; the worker's."""
    base = folder / "comfy"
    for folder_name, name in models:
        target = base / "models" / folder_name / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(PLACEHOLDER_WEIGHTS)
    limits = httpx.Limits(max_connections=2 * len(tokens) + 8, keepalive_expiry=3.0)
    async with (
        running_emulator(EmulatorConfig(base_dir=base)) as comfy_url,
        httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(120.0), limits=limits) as http,
    ):
        instances = [LeanInstance(http, token, take_jobs=False) for token in tokens[:-1]]
        tasks = [asyncio.create_task(i.run()) for i in instances]
        worker = _worker_process(url, tokens[-1], comfy_url, folder)
        worker_peak = 0.0
        try:
            await asyncio.sleep(warmup)  # registered, heartbeating; the worker runs jobs
            for t in tasks:
                if t.done():
                    t.result()
            loaded = rss_mb(pid)
            worker_rss = rss_mb(worker.pid)
            headers = {"Authorization": f"Bearer {key}"}
            with RssSampler(pid) as sampler:
                for n in range(BURST_REQUESTS):
                    state = "QUEUED" if n % 2 else "COMPLETED"
                    r = await http.get("/v1/jobs", params={"limit": 500, "state": state}, headers=headers)
                    r.raise_for_status()
                    worker_peak = max(worker_peak, rss_mb(worker.pid))
            await asyncio.sleep(AFTER_BURST_SECONDS)  # the burst is over: what the process keeps
            after = rss_mb(pid)
            worker_after = rss_mb(worker.pid)
            beats = sum(i.heartbeats for i in instances)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            worker.terminate()
            await asyncio.to_thread(worker.wait, 30)
        return {
            "loaded_idle": loaded,
            "burst_peak": max(sampler.peak, after),
            "after_burst": after,
            "after_burst_vs_idle": round(after / loaded, 3) if loaded else None,
            "worker": max(worker_rss, worker_peak, worker_after),
            "heartbeats": beats,
        }


@on_fresh_database
def run_memory(config: Options) -> dict[str, Any]:
    """`swarmstation bench --memory`: the control plane's resident memory with a large database and
    many instances, and after a burst of large reads; a worker agent's (without ComfyUI)."""
    folder = Path(tempfile.mkdtemp(prefix="swarmstation-bench-"))
    port = _free_port()
    settings = Settings(
        data_dir=folder / "data", port=port, provider="none", database_url=config.database_url
    )
    key, tokens, models = _prepare(settings, config.workers + 1)
    started = time.monotonic()
    _seed_jobs(settings, key, finished=config.finished, queued=config.queued)
    seed_seconds = time.monotonic() - started
    _heartbeats_now(settings)  # seeding can outlast the heartbeat timeout on a slow machine
    server = serve_process(settings, folder, config.database_url)
    try:
        url = f"http://127.0.0.1:{port}"
        time.sleep(1.0)
        rss_started = rss_mb(server.pid)
        figures = asyncio.run(_run_memory(url, key, tokens, server.pid, folder, models, warmup=15.0))
    finally:
        server.terminate()
        server.wait(timeout=30)
    plane = build(settings, provider=None)
    with transaction(plane.state.sessions) as s:
        completed = s.scalar(select(func.count()).select_from(Job).where(Job.state == JobState.COMPLETED))
    plane.state.engine.dispose()
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "mode": "memory",
        "database": database_kind(config.database_url),
        "finished_jobs": config.finished,
        "queued_jobs": config.queued,
        "instances_heartbeating": config.workers,
        "seed_seconds": round(seed_seconds, 1),
        "heartbeats": figures.pop("heartbeats"),
        "worker_jobs_completed": (completed or 0) - config.finished,
        "control_plane_rss_mb": {
            "started": rss_started,
            **{k: v for k, v in figures.items() if k != "worker"},
        },
        "worker_rss_mb": figures["worker"],
        "cpu_count": os.cpu_count(),
    }
