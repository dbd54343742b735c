"""What an idle control plane does (issue 17): a heartbeat that reports nothing new writes its
time and nothing else, a worker sends its inventory only when the control plane does not hold
it, a leader's long poll reads the database when it is woken and not whenever a wait runs out,
and the scheduler's sweep runs when something changed or a deadline came, with a slower safety
sweep, leases still expiring on time. SQLite and PostgreSQL (the `settings` fixture)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from swarmstation.api import worker as worker_api
from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.control import loops as loops_mod
from swarmstation.control.notify import SCHEDULER_IDLE_KEY, SCHEDULER_KEY
from swarmstation.control.scheduler import scheduler_pass
from swarmstation.domain.heartbeats import inventory_digest
from swarmstation.domain.states import JobState
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, Job
from swarmstation.worker.agent import Worker, WorkerConfig
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user, heartbeat_at, submit

MODELS = [f"checkpoints/model-{i:04d}.safetensors" for i in range(300)]


@pytest.fixture
def plane(settings: Settings, clock: FakeClock) -> Iterator[ControlPlane]:
    cp = build(settings, provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


def _worker(plane: ControlPlane, clock: FakeClock) -> tuple[str, dict[str, str]]:
    with transaction(plane.state.sessions) as s:
        inst, token = add_instance(s, clock())
        return inst.id, {"Authorization": f"Bearer {token}"}


def _statements(plane: ControlPlane) -> list[str]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split()).upper())

    event.listen(plane.state.engine, "before_cursor_execute", record)
    return seen


async def _beat(plane: ControlPlane, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=plane.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://plane") as http:
        r = await http.post("/worker/v1/heartbeat", headers=headers, json=body)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def test_an_unchanged_heartbeat_writes_its_time_and_not_the_inventory(
    plane: ControlPlane, clock: FakeClock
) -> None:
    inst_id, headers = _worker(plane, clock)
    body = {"running": [], "models": MODELS, "disk_free_bytes": 10**10, "comfyui_ok": True}
    first = asyncio.run(_beat(plane, headers, body))
    assert first["inventory_digest"] == inventory_digest(MODELS) and not first["send_inventory"]
    seen = _statements(plane)
    clock.advance(5)
    again = asyncio.run(_beat(plane, headers, body))
    assert again["inventory_digest"] == inventory_digest(MODELS)
    updates = [st for st in seen if st.startswith("UPDATE INSTANCES")]
    assert len(updates) == 1 and "INFO" not in updates[0].split(" WHERE ")[0], updates
    with transaction(plane.state.sessions) as s:
        inst = s.get(Instance, inst_id)
        assert inst is not None and inst.last_heartbeat_at == clock()
        assert inst.info["models"] == MODELS
    # a report that changed is written in full
    seen.clear()
    asyncio.run(_beat(plane, headers, {**body, "disk_free_bytes": 10**9}))
    assert any(st.startswith("UPDATE INSTANCES") and "INFO" in st for st in seen)
    with transaction(plane.state.sessions) as s:
        inst = s.get(Instance, inst_id)
        assert inst is not None and inst.info["disk_free_bytes"] == 10**9


def test_a_digest_stands_for_the_inventory_the_control_plane_holds(
    plane: ControlPlane, clock: FakeClock
) -> None:
    inst_id, headers = _worker(plane, clock)
    digest = inventory_digest(MODELS)
    # a row that holds no inventory yet (a new instance, a reset): the digest is refused
    asked = asyncio.run(_beat(plane, headers, {"inventory_digest": digest}))
    assert asked["send_inventory"] and asked["inventory_digest"] is None
    asyncio.run(_beat(plane, headers, {"models": MODELS}))
    clock.advance(5)
    kept = asyncio.run(_beat(plane, headers, {"inventory_digest": digest, "loaded_checkpoint": "a.ckpt"}))
    assert not kept["send_inventory"] and kept["inventory_digest"] == digest
    with transaction(plane.state.sessions) as s:
        inst = s.get(Instance, inst_id)
        assert inst is not None and inst.info["models"] == MODELS
        assert inst.info["loaded_checkpoint"] == "a.ckpt" and inst.last_heartbeat_at == clock()
    # a digest of another inventory: the one held stays, and the worker is asked for the new one
    other = asyncio.run(_beat(plane, headers, {"inventory_digest": inventory_digest(MODELS[:5])}))
    assert other["send_inventory"]
    with transaction(plane.state.sessions) as s:
        inst = s.get(Instance, inst_id)
        assert inst is not None and inst.info["models"] == MODELS
    # an older worker sends neither: it has no models
    asyncio.run(_beat(plane, headers, {"running": []}))
    with transaction(plane.state.sessions) as s:
        inst = s.get(Instance, inst_id)
        assert inst is not None and inst.info["models"] == []


class _RecordingControlPlane:
    """The worker's ControlPlaneClient, answering as a control plane that holds the last
    inventory it was sent (or, `forget`, none)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.held: str | None = None
        self.forget = False

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        body: dict[str, Any] = kwargs["json"]
        self.bodies.append(body)
        if self.forget:
            self.held, self.forget = None, False
        if "models" in body:
            self.held = inventory_digest(body["models"])
        answer = {"drain": False, "cancel": [], "stale": [], "prefetch": []}
        if "inventory_digest" in body and body["inventory_digest"] != self.held:
            answer["send_inventory"] = True
        else:
            answer["inventory_digest"] = self.held
        return httpx.Response(200, json=answer)


def test_the_worker_sends_its_inventory_only_when_it_is_not_held() -> None:
    async def scenario() -> list[dict[str, Any]]:
        worker = Worker(
            WorkerConfig(server_url="http://cp.invalid", token="t", comfyui_url="http://c.invalid")
        )
        cp = _RecordingControlPlane()
        worker.cp = cp  # type: ignore[assignment]
        models = list(MODELS)
        worker._inventory = lambda: (10**10, list(models))  # type: ignore[method-assign]
        await worker.heartbeat_once()  # full: nothing held yet
        await worker.heartbeat_once()  # the digest
        models.append("loras/new.safetensors")
        await worker.heartbeat_once()  # full: the inventory changed
        await worker.heartbeat_once()  # the digest
        cp.forget = True
        await worker.heartbeat_once()  # the digest, refused
        assert worker._heartbeat_now.is_set()  # the next heartbeat goes at once...
        await worker.heartbeat_once()  # ...in full
        return cp.bodies

    bodies = asyncio.run(scenario())
    assert ["models" in b for b in bodies] == [True, False, True, False, False, True]
    assert all(("inventory_digest" in b) != ("models" in b) for b in bodies)


def test_a_leaders_long_poll_reads_the_database_when_woken_not_when_a_wait_ends(
    plane: ControlPlane, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_api, "LEADER_RECHECK_SECONDS", 0.1)
    assert plane.state.loops.leader.try_acquire()
    _, headers = _worker(plane, clock)
    seen = _statements(plane)

    async def poll() -> int:
        plane.state.notifier.bind(asyncio.get_running_loop())
        transport = httpx.ASGITransport(app=plane.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://plane") as http:
            r = await http.get("/worker/v1/jobs/next", headers=headers, params={"wait": 1.0, "start": "true"})
        return r.status_code

    try:
        assert asyncio.run(poll()) == 204
    finally:
        plane.state.loops.leader.release()
    # one read when the poll came, none for the ten waits that ran out (1 s at 0.1 s each)
    reads = [st for st in seen if st.startswith("SELECT INSTANCES.STATE")]
    assert len(reads) == 1, seen


def test_a_poll_is_woken_by_an_assignment_made_while_it_reads(
    plane: ControlPlane, settings: Settings, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wake that comes between the poll's read and its wait is not lost (the poll listens
    before it reads)."""
    assert plane.state.loops.leader.try_acquire()
    _, headers = _worker(plane, clock)
    with transaction(plane.state.sessions) as s:
        user, _ = add_user(s, clock())
        job_id = submit(s, user, clock()).id
    real = worker_api._assignment_for
    reads = 0

    def assign_after_the_first_read(*args: Any, **kwargs: Any) -> object:
        nonlocal reads
        found = real(*args, **kwargs)
        reads += 1
        if reads == 1:  # the scheduler assigns right after this read, before the poll waits
            with transaction(plane.state.sessions) as s:
                result = scheduler_pass(s, settings, clock())
            for woken in result.woken_instances:
                plane.state.notifier.wake(f"instance:{woken}")
        return found

    monkeypatch.setattr(worker_api, "_assignment_for", assign_after_the_first_read)

    async def poll() -> tuple[int, float, dict[str, Any]]:
        plane.state.notifier.bind(asyncio.get_running_loop())
        transport = httpx.ASGITransport(app=plane.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://plane") as http:
            t0 = asyncio.get_running_loop().time()
            r = await http.get("/worker/v1/jobs/next", headers=headers, params={"wait": 10, "start": "true"})
            return r.status_code, asyncio.get_running_loop().time() - t0, r.json()

    try:
        status, took, answer = asyncio.run(poll())
    finally:
        plane.state.loops.leader.release()
    assert status == 200 and answer["job_id"] == job_id and took < 3.0  # not the 5 s recheck


def _run_loops(plane: ControlPlane, seconds: float, during: Any = None) -> None:
    async def scenario() -> None:
        plane.state.notifier.bind(asyncio.get_running_loop())
        plane.state.loops.start()
        try:
            await asyncio.sleep(seconds)
            if during is not None:
                await during()
        finally:
            await plane.state.loops.stop()

    asyncio.run(scenario())


@pytest.fixture
def fast_plane(settings: Settings, clock: FakeClock) -> Iterator[ControlPlane]:
    quick = settings.model_copy(update={"scheduler_interval_seconds": 0.05, "control_interval_seconds": 3600})
    cp = build(quick, provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


def test_the_sweep_waits_for_a_change_or_a_deadline_and_still_runs_for_safety(
    fast_plane: ControlPlane, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loops_mod, "SAFETY_SWEEP_SECONDS", 0.5)
    _worker(fast_plane, clock)
    loops = fast_plane.state.loops
    _run_loops(fast_plane, 1.3)
    # at 0.05 s a pass the old loop swept 26 times; here: the first, and the safety sweeps
    assert 2 <= loops.sweeps <= 5, loops.sweeps
    passes = loops.passes

    async def changes() -> None:
        for _ in range(5):
            loops.poke()
            await asyncio.sleep(0.1)

    _run_loops(fast_plane, 0.0, changes)
    assert loops.passes - passes >= 5  # every change is looked at


def test_a_lease_still_expires_on_time_without_a_sweep_for_safety(
    fast_plane: ControlPlane, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loops_mod, "SAFETY_SWEEP_SECONDS", 3600)
    settings = fast_plane.state.settings
    inst_id, _ = _worker(fast_plane, clock)
    with transaction(fast_plane.state.sessions) as s:
        user, _ = add_user(s, clock())
        job_id = submit(s, user, clock()).id
    with transaction(fast_plane.state.sessions) as s:
        scheduler_pass(s, settings, clock())
        job = s.get(Job, job_id)
        assert job is not None and job.state == JobState.ASSIGNED
        token = job.lease_token

    def token_now() -> int:
        with transaction(fast_plane.state.sessions) as s:
            job = s.get(Job, job_id)
            assert job is not None
            return job.lease_token

    async def lease_runs_out() -> None:
        await asyncio.sleep(0.3)  # quiet: no sweep is due
        loops = fast_plane.state.loops
        sweeps = loops.sweeps
        # The instance stays healthy; only the lease's time runs out. Its heartbeat is written
        # for the time the clock jumps to before the jump: the lease (60 s) outlasts the
        # heartbeat timeout (30 s), and a sweep between a jump and a heartbeat written after it
        # declared the instance unhealthy (its job requeued, not assigned again: CI, PostgreSQL).
        later = clock() + timedelta(seconds=settings.lease_seconds + 1)
        await asyncio.to_thread(heartbeat_at, fast_plane, inst_id, later)
        clock.advance(settings.lease_seconds + 1)
        for _ in range(100):  # the pass comes within one interval (0.05 s); a loaded machine is slower
            await asyncio.sleep(0.05)
            if await asyncio.to_thread(token_now) != token:
                break
        assert loops.sweeps > sweeps

    _run_loops(fast_plane, 0.2, lease_runs_out)
    with transaction(fast_plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        # expired, requeued and assigned again (the same pass), with a new fencing token
        assert job.lease_token != token and job.attempt == 2, (job.state, job.attempt)


def test_a_free_instance_on_another_replica_asks_the_leader_without_counting_as_a_change(
    plane: ControlPlane,
) -> None:
    """A poll's poke on a replica that does not lead reaches the leader as an idle poke, which
    its empty-queue skip honours; a submission's poke reaches it as a change."""
    loops, notifier = plane.state.loops, plane.state.notifier
    published: list[str] = []
    notifier.attach(published.append)
    assert not loops.leader.held
    loops.poke(change=False)
    loops.poke()
    assert published == [SCHEDULER_IDLE_KEY, SCHEDULER_KEY]

    # the same keys heard on the leader (what PgBridge delivers from the other replica)
    assert loops.leader.try_acquire()
    try:
        changes = loops.changes
        notifier.wake_remote(SCHEDULER_IDLE_KEY)
        assert loops.changes == changes
        notifier.wake_remote(SCHEDULER_KEY)
        assert loops.changes == changes + 1
    finally:
        loops.leader.release()
