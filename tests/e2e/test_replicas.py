"""Several control-plane replicas on one PostgreSQL. Workers keep the URL they were launched with,
so beside another replica they must be given an address that survives one replica
(`SWARMSTATION_PUBLIC_URL`): a second replica without it refuses to start, and a leader without it
launches nothing while another replica runs. With it (here a failover TCP proxy in front of both
`serve` replicas, as a load balancer would be), SIGKILLing the leader loses nothing: jobs keep
completing within seconds and no instance is declared unhealthy or replaced."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from swarmstation.api.app import build
from swarmstation.config import Settings
from swarmstation.control.replicas import ReplicaPresence
from swarmstation.providers.vastai.provider import VastAIProvider
from swarmstation.store.db import make_engine, transaction
from swarmstation.store.models import Instance, Pool
from tests.conftest import FakeClock
from tests.e2e.conftest import BIN, FailureLogs, free_port, wait_for
from tests.fakes.vastai import FakeVastAI, make_offer
from tests.helpers import add_user, submit

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SECRET = "one-secret-for-every-replica"


@pytest.fixture
def pg_url(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("replicas share a PostgreSQL database")
    return database_url


@pytest.fixture
def fake(failure_logs: FailureLogs) -> Iterator[FakeVastAI]:
    offers = [make_offer(i, dph_total=0.30 + i / 100) for i in range(1, 8)]
    env = {"SWARMSTATION_SKIP_INSTALL": "1", "SWARMSTATION_BIN": str(BIN)}
    with FakeVastAI(
        offers=offers,
        run_onstart=True,
        consume_offers=True,
        provision_seconds=0.3,
        load_seconds=0.3,
        onstart_env=env,
    ) as f:
        failure_logs.add("the fake Vast.ai's machines", f.dump_logs)
        yield f


class FailoverProxy:
    """A TCP proxy that sends each new connection to the first backend that accepts it: what a
    load balancer in front of the replicas does when one of them dies."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        for port in self.backends:
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                continue
            upstream.settimeout(None)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            self._pump(upstream, client)
            return
        client.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()


@dataclass
class Replica:
    """One `swarmstation serve` process with a data folder of its own (another host, in effect)."""

    folder: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / "serve.log"

    def launch(self) -> subprocess.Popen[bytes]:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--provider", "none", "--port", str(self.port), "--log-level", "info"],
            cwd=self.folder,
            env={**self.env, "SWARMSTATION_DATA_DIR": str(self.folder / "data")},
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        return self.proc

    def start(self) -> None:
        proc = self.launch()

        def healthy() -> bool:
            assert proc.poll() is None, self.log.read_text()
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, f"replica on {self.port}")

    def dump_log(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def replica_env(pg_url: str, fake: FakeVastAI, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSTATION_")}
    values: dict[str, object] = {
        "database_url": pg_url,
        "secret_key": SECRET,
        "worker_comfyui_mode": "emulator",
        "control_interval_seconds": 0.5,
        "heartbeat_timeout_seconds": 6,
        "orphan_grace_seconds": 5,
        "lease_seconds": 20,
        "emulator_step_seconds": 0.02,
        **settings,
    }
    env.update({f"SWARMSTATION_{k.upper()}": str(v) for k, v in values.items()})
    env.update({"VASTAI_API_KEY": fake.api_key, "VASTAI_BASE_URL": fake.url})
    return env


class Replicas(list[Replica]):
    """The replicas a test starts: stopped after it, their logs shown if it fails."""

    def __init__(self, failure_logs: FailureLogs) -> None:
        super().__init__()
        self.failure_logs = failure_logs

    def append(self, replica: Replica) -> None:
        super().append(replica)
        self.failure_logs.add(f"replica {replica.folder.name}", replica.dump_log)

    def extend(self, replicas: Iterable[Replica]) -> None:
        for replica in replicas:
            self.append(replica)


@pytest.fixture
def replicas(fake: FakeVastAI, failure_logs: FailureLogs) -> Iterator[list[Replica]]:
    # after `fake`, so that the replicas stop while the fake Vast.ai still answers
    made = Replicas(failure_logs)
    yield made
    for r in made:
        r.stop()


def test_a_second_replica_without_a_shared_address_refuses_to_start(
    tmp_path: Path, pg_url: str, fake: FakeVastAI, replicas: list[Replica]
) -> None:
    first = Replica(tmp_path / "a", replica_env(pg_url, fake))
    replicas.append(first)
    first.start()
    second = Replica(tmp_path / "b", replica_env(pg_url, fake))
    replicas.append(second)
    proc = second.launch()
    assert proc.wait(timeout=60) == 1
    out = second.log.read_text()
    assert "SWARMSTATION_PUBLIC_URL" in out and "another control-plane replica" in out
    assert "Traceback" not in out
    # with a shared address it joins
    third = Replica(tmp_path / "c", replica_env(pg_url, fake, public_url="http://lb.example:8000"))
    replicas.append(third)
    third.start()


def test_a_leader_without_a_shared_address_launches_nothing_while_another_replica_runs(
    tmp_path: Path, pg_url: str, fake: FakeVastAI, clock: FakeClock
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=pg_url, provider="none", port=8123)
    provider = VastAIProvider(fake.api_key, base_url=fake.url, sleep=lambda _: None, label_lookup_interval=0)
    cp = build(settings, providers={"vastai": provider}, clock=clock)
    other = ReplicaPresence(make_engine(pg_url))
    try:
        with transaction(cp.state.sessions) as s:
            s.add(
                Pool(
                    name="gpu",
                    provider="vastai",
                    min_instances=1,
                    max_instances=1,
                    scale_up_queue_threshold=1,
                    idle_minutes=1,
                    slots_per_instance=1,
                    created_at=clock(),
                    gpu_filters={"max_price_per_hour": 1.0},
                    image="nvidia/cuda:12.4.1-runtime-ubuntu22.04",
                    target_wait_seconds=10,
                    scale_cooldown_seconds=0,
                )
            )
            user, _ = add_user(s, clock())
            submit(s, user, clock())
        other.announce()  # another replica comes up beside this one
        cp.pools.tick()
        assert fake.create_bodies == []
        with transaction(cp.state.sessions) as s:
            assert s.query(Instance).count() == 0
        other.leave()  # alone again: its own address is fine
        cp.pools.tick()
        [body] = fake.create_bodies
        assert "http://127.0.0.1:8123" in str(body)
    finally:
        other.leave()
        other.engine.dispose()
        cp.state.engine.dispose()


def test_killing_the_leader_loses_no_job_and_replaces_no_instance(
    tmp_path: Path, pg_url: str, fake: FakeVastAI, replicas: list[Replica]
) -> None:
    a = Replica(tmp_path / "a", {})
    b = Replica(tmp_path / "b", {})
    proxy = FailoverProxy([a.port, b.port])
    env = replica_env(pg_url, fake, public_url=proxy.url)
    a.env, b.env = env, env
    replicas.extend([a, b])
    try:
        a.start()  # alone: the leader
        key = (a.folder / "data" / "admin.key").read_text().strip()
        http = httpx.Client(base_url=proxy.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        setup_pool(http)

        def instances() -> list[dict[str, Any]]:
            return [i for i in http.get("/v1/admin/instances").json() if i["pool"] == "gpu"]

        wait_for(lambda: [i["state"] for i in instances()] == ["IDLE", "IDLE"], 90, "two idle instances")
        b.start()
        before = {i["id"] for i in instances()}
        first = submit_jobs(http, 6)
        wait_for(lambda: finished(http, first), 60, "jobs before the kill")

        busy = submit_jobs(http, 10)
        a.kill()
        killed_at = time.time()
        http.close()  # its kept-alive connection went to the dead replica
        http = httpx.Client(base_url=proxy.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        after = submit_jobs(http, 10)  # through the proxy, now to the survivor
        jobs = wait_for(lambda: finished(http, busy + after), 90, "jobs after the kill", interval=0.5)
        assert [j["state"] for j in jobs] == ["COMPLETED"] * 20, [j["error"] for j in jobs]
        done_at = sorted(datetime.fromisoformat(j["finished_at"]).timestamp() for j in jobs)
        later = [t for t in done_at if t > killed_at]
        assert later and later[0] - killed_at < 10, f"first completion {later[0] - killed_at:.1f}s after"
        gaps = [b_ - a_ for a_, b_ in zip([killed_at, *later], later, strict=False)]
        assert max(gaps) < 10, gaps

        # past the heartbeat timeout: both instances healthy, none replaced, nothing new rented
        time.sleep(8)
        now = instances()
        assert {i["id"] for i in now} == before
        states = [(i["state"], i["state_reason"]) for i in now]
        assert all(state in ("IDLE", "BUSY") for state, _ in states), states
        assert len(fake.create_bodies) == 2
    finally:
        proxy.close()


def setup_pool(http: httpx.Client) -> None:
    pool = {
        "name": "gpu",
        "provider": "vastai",
        "image": "nvidia/cuda:12.4.1-runtime-ubuntu22.04",
        "min_instances": 2,
        "max_instances": 2,
        "idle_minutes": 30,
        "target_wait_seconds": 5,
        "scale_cooldown_seconds": 1,
        "gpu_filters": {"max_price_per_hour": 1.0},
    }
    r = http.post("/v1/admin/pools", json=pool)
    assert r.status_code == 201, r.text
    tool = http.get("/v1/tools/sd15-txt2img").json()
    body = {k: tool[k] for k in ("name", "description", "category", "base_model", "workflow", "inputs")}
    r = http.post("/v1/admin/tools", json={**body, "slug": "gpu-sd15", "pool": "gpu"})
    assert r.status_code == 201, r.text


def submit_jobs(http: httpx.Client, n: int) -> list[str]:
    ids = []
    for k in range(n):
        r = http.post(
            "/v1/jobs",
            json={"tool": "gpu-sd15", "inputs": {"prompt": f"p{k}", "steps": 4, "width": 64, "height": 64}},
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def finished(http: httpx.Client, ids: list[str]) -> list[dict[str, Any]] | None:
    jobs = [http.get(f"/v1/jobs/{i}").json() for i in ids]
    return jobs if all(j["state"] in ("COMPLETED", "FAILED", "CANCELLED") for j in jobs) else None
