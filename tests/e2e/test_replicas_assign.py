"""Two `serve` replicas on one PostgreSQL: one leader runs the scheduler, a job submitted on one
replica is handed to a worker polling the other at once (LISTEN/NOTIFY carries the poke to the
leader and the assignment's wake back, notify.PgBridge), and no job is assigned twice.

The scheduler's and the pool loop's timers are set to 30 s here, so that only a notification can
answer a poll within a second: without one the poll on the leader would wait for a pass that no
timer runs, while the job waited on the other replica."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from swarmstation import __version__
from swarmstation.api.app import build
from swarmstation.bench.control_plane import INPUTS, TOOL, _prepare, assignment_counts
from swarmstation.config import Settings
from swarmstation.store.db import transaction
from swarmstation.store.models import JobEvent
from tests.e2e.conftest import FailureLogs
from tests.e2e.test_replicas import SECRET, Replica

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def pg_url(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("replicas share a PostgreSQL database")
    return database_url


@pytest.fixture
def two(tmp_path: Path, pg_url: str, failure_logs: FailureLogs) -> Iterator[tuple[Replica, Replica]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSTATION_")}
    values = {
        "database_url": pg_url,
        "secret_key": SECRET,
        "public_url": "http://lb.invalid:8000",  # the address in front of both (unused here)
        "scheduler_interval_seconds": 30,
        "control_interval_seconds": 30,
        "heartbeat_timeout_seconds": 300,
        "lease_seconds": 120,
        "default_gpu_price_per_hour": 0,
        "min_price_credits": 0,
    }
    env.update({f"SWARMSTATION_{k.upper()}": str(v) for k, v in values.items()})
    a, b = Replica(tmp_path / "a", env), Replica(tmp_path / "b", env)
    for r in (a, b):
        failure_logs.add(f"replica {r.folder.name}", r.dump_log)
    yield a, b
    for r in (a, b):
        r.stop()


def passes(replica: Replica) -> int:
    for line in httpx.get(f"{replica.url}/metrics", timeout=10).text.splitlines():
        if line.startswith("swarmstation_scheduler_passes "):
            return int(float(line.split()[1]))
    raise AssertionError("no swarmstation_scheduler_passes in /metrics")


def test_one_leader_jobs_cross_replicas_at_once_and_none_is_assigned_twice(
    tmp_path: Path, pg_url: str, two: tuple[Replica, Replica]
) -> None:
    a, b = two
    settings = Settings(
        data_dir=tmp_path / "prep", database_url=pg_url, provider="none", public_url="http://lb.invalid:8000"
    )
    key, [token], _ = _prepare(settings, 1)
    user = {"Authorization": f"Bearer {key}"}
    worker = {"Authorization": f"Bearer {token}"}
    a.start()  # alone: the leader
    r = httpx.post(
        f"{a.url}/worker/v1/register",
        json={"comfyui_url": "http://comfy.invalid", "version": __version__},
        params={"ready": "true"},
        headers=worker,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    b.start()
    leader_passes = passes(a)

    def poll(replica: Replica) -> httpx.Response:
        return httpx.get(
            f"{replica.url}/worker/v1/jobs/next",
            params={"wait": 20, "start": "true"},
            headers=worker,
            timeout=40,
        )

    def cross(poll_on: Replica, submit_on: Replica, complete_on: Replica) -> tuple[str, float]:
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(poll, poll_on)
            time.sleep(1.0)  # the poll waits
            assert not answer.done(), answer.result().text
            submitted = time.monotonic()
            r = httpx.post(f"{submit_on.url}/v1/jobs", json={"tool": TOOL, "inputs": INPUTS}, headers=user)
            assert r.status_code == 201, r.text
            job_id = str(r.json()["id"])
            got = answer.result(timeout=40)
            seconds = time.monotonic() - submitted
        assert got.status_code == 200, f"no assignment ({got.status_code}) after {seconds:.1f}s"
        body = got.json()
        assert body["job_id"] == job_id and body["started"] is True
        done = httpx.post(
            f"{complete_on.url}/worker/v1/jobs/{job_id}/complete",
            json={"lease_token": body["lease_token"], "outputs": [], "timings": {"run_seconds": 0.0}},
            headers=worker,
            timeout=30,
        )
        assert done.status_code == 204, done.text
        return job_id, seconds

    # submitted on the replica that does not lead, polled on the leader: the leader hears the poke
    first, seconds = cross(poll_on=a, submit_on=b, complete_on=b)
    assert seconds < 1.0, f"the poll on the leader answered {seconds:.2f}s after the submission on the other"
    # submitted on the leader, polled on the other: it hears the assignment's wake
    second, seconds = cross(poll_on=b, submit_on=a, complete_on=a)
    assert seconds < 1.0, f"the poll on the other replica answered {seconds:.2f}s after the submission"

    for job_id in (first, second):
        job = httpx.get(f"{b.url}/v1/jobs/{job_id}", headers=user, timeout=30).json()
        assert job["state"] == "COMPLETED", job
    assert passes(b) == 0, "the replica that does not lead ran scheduler passes"
    assert passes(a) > leader_passes, "the leader ran no pass for the jobs"
    plane = build(settings, provider=None)
    try:
        with transaction(plane.state.sessions) as s:
            events = [
                (str(job_id), (data or {}).get("state"), trigger.value if trigger else None)
                for job_id, data, trigger in s.execute(
                    select(JobEvent.job_id, JobEvent.data, JobEvent.trigger)
                    .where(JobEvent.job_id.in_([first, second]), JobEvent.type == "state")
                    .order_by(JobEvent.id)
                )
            ]
    finally:
        plane.state.engine.dispose()
    assert assignment_counts(events) == (0, 0), events
    assert sum(1 for _, _, trigger in events if trigger == "ASSIGN") == 2
