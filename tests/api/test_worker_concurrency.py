"""Many workers at once against a control plane whose thread pool is smaller than the crowd.

FastAPI validates a sync handler's answer in its thread pool while the request's session is
still open: a handler that returned without committing kept SQLite's one connection while it
waited for a thread, and the threads were all held by requests waiting for that connection, a
stall that only the pool's 60 s timeout ended (503s). Here the pool has 3 threads and 12
instances heartbeat, fetch their preloads and reserve outputs at once."""

from __future__ import annotations

import asyncio

import anyio.to_thread
import httpx
import pytest

from swarmstation.api.app import ControlPlane
from swarmstation.control.scheduler import scheduler_pass
from swarmstation.store.db import transaction
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user

CROWD = 12
THREADS = 3
Call = tuple[str, str, dict[str, str], object]


def _crowd(plane: ControlPlane, clock: FakeClock) -> list[dict[str, str]]:
    with transaction(plane.state.sessions) as s:
        tokens = [add_instance(s, clock())[1] for _ in range(CROWD)]
    return [{"Authorization": f"Bearer {t}"} for t in tokens]


async def _all_at_once(
    plane: ControlPlane, calls: list[tuple[str, str, dict[str, str], object]]
) -> list[int]:
    anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
    transport = httpx.ASGITransport(app=plane.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://plane") as http:
        async with asyncio.timeout(30):  # a stall waits for the pool's 60 s timeout
            answers = await asyncio.gather(
                *(http.request(m, path, headers=h, json=body) for m, path, h, body in calls)
            )
    return [r.status_code for r in answers]


@pytest.mark.parametrize("route", ["heartbeat", "preload"])
def test_a_crowd_of_workers_does_not_stall_on_the_thread_pool(
    plane: ControlPlane, clock: FakeClock, route: str
) -> None:
    workers = _crowd(plane, clock)
    calls: list[tuple[str, str, dict[str, str], object]] = [
        ("POST", "/worker/v1/heartbeat", w, {"running": [], "comfyui_ok": True})
        if route == "heartbeat"
        else ("GET", "/worker/v1/preload", w, None)
        for w in workers
    ]
    assert asyncio.run(_all_at_once(plane, calls)) == [200] * CROWD


def test_a_crowd_reserving_outputs_does_not_stall(plane: ControlPlane, clock: FakeClock) -> None:
    workers = _crowd(plane, clock)
    with transaction(plane.state.sessions) as s:
        _, key = add_user(s, clock(), "alice")
    from fastapi.testclient import TestClient

    leases = []
    with TestClient(plane.app) as api:
        for _ in workers:
            r = api.post(
                "/v1/jobs",
                headers={"Authorization": f"Bearer {key}"},
                json={"tool": "sd15-txt2img", "inputs": {"prompt": "p"}},
            )
            assert r.status_code == 201, r.text
        with transaction(plane.state.sessions) as s:
            scheduler_pass(s, plane.state.settings, clock())
        for w in workers:
            a = api.get("/worker/v1/jobs/next", headers=w, params={"wait": 0, "start": "true"}).json()
            leases.append((a["job_id"], a["lease_token"]))
    files = [{"filename": "x.png", "size": 4}]
    calls: list[tuple[str, str, dict[str, str], object]] = [
        ("POST", f"/worker/v1/jobs/{job}/outputs", w, {"lease_token": lease, "files": files})
        for w, (job, lease) in zip(workers, leases, strict=True)
    ]
    assert asyncio.run(_all_at_once(plane, calls)) == [200] * CROWD


def test_a_crowd_listing_jobs_does_not_stall(plane: ControlPlane, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        _, key = add_user(s, clock(), "alice")
    user = {"Authorization": f"Bearer {key}"}
    calls: list[Call] = [("GET", "/v1/jobs", user, None) for _ in range(CROWD)]
    assert asyncio.run(_all_at_once(plane, calls)) == [200] * CROWD


def test_the_app_runs_its_handlers_on_more_threads_than_anyio_gives(plane: ControlPlane) -> None:
    """Beside the routes that commit first, the pool is far larger than anyio's 40: the stall
    needs as many requests waiting at once as there are threads."""
    from swarmstation.api.app import REQUEST_THREADS

    async def started() -> float:
        async with plane.app.router.lifespan_context(plane.app):
            return anyio.to_thread.current_default_thread_limiter().total_tokens

    assert REQUEST_THREADS >= 500
    assert asyncio.run(started()) == REQUEST_THREADS
