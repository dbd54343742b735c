"""Wakes between replicas on one PostgreSQL (notify.PgBridge, LISTEN/NOTIFY): a wake on one
replica's notifier wakes the waiters of another's at once, a replica does not hear itself, and a
deployment in another schema of the same database hears nothing."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import pytest
from sqlalchemy import Engine, create_engine, text

from swarmstation.control.notify import SCHEDULER_KEY, Notifier, PgBridge
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.postgres


@pytest.fixture
def schemas() -> Iterator[list[Engine]]:
    if os.environ.get("SWARMSTATION_SKIP_POSTGRES") == "1":
        pytest.skip("SWARMSTATION_SKIP_POSTGRES=1")
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    names = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f"CREATE SCHEMA {name}"))
    sep = "&" if "?" in POSTGRES_URL else "?"
    engines = [create_engine(f"{POSTGRES_URL}{sep}options=-csearch_path%3D{name}") for name in names]
    yield engines
    for engine in engines:
        engine.dispose()
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
    admin.dispose()


class Replica:
    """A notifier bound to its own event loop (a thread), bridged to PostgreSQL."""

    def __init__(self, engine: Engine, others: Callable[[], int] | None = None) -> None:
        self.notifier = Notifier()
        self.loop = asyncio.new_event_loop()
        self.notifier.bind(self.loop)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.bridge = PgBridge(engine, self.notifier, others=others, others_every=0.5)
        self.bridge.start()
        assert self.bridge.listening.wait(10), "the bridge did not LISTEN"

    def wait(self, key: str, timeout: float) -> Future[tuple[bool, float]]:
        """Start waiting on `key` now; the future answers (woken, seconds waited)."""
        started = time.monotonic()

        async def waiting() -> tuple[bool, float]:
            woke = await self.notifier.wait(key, timeout)
            return woke, time.monotonic() - started

        future = asyncio.run_coroutine_threadsafe(waiting(), self.loop)
        time.sleep(0.1)  # the waiter is registered
        return future

    def close(self) -> None:
        self.bridge.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_a_wake_on_one_replica_wakes_the_waiters_of_another_and_no_other_deployment(
    schemas: list[Engine],
) -> None:
    first, second = schemas
    a, b, elsewhere = Replica(first), Replica(first), Replica(second)
    try:
        on_b = b.wait("job:1", 10.0)
        on_elsewhere = elsewhere.wait("job:1", 1.5)
        a.notifier.wake("job:1")
        woke, seconds = on_b.result(15)
        assert woke and seconds < 1.0, f"woken={woke} after {seconds:.2f}s (the timer was 10 s)"
        assert on_elsewhere.result(15)[0] is False
        time.sleep(0.2)
        assert a.bridge.received == 0, "a replica heard its own notification"
        assert b.bridge.received >= 1 and elsewhere.bridge.received == 0
    finally:
        for r in (a, b, elsewhere):
            r.close()


def test_subscribers_hear_other_replicas_and_publish_is_not_heard_at_home(schemas: list[Engine]) -> None:
    a, b = Replica(schemas[0]), Replica(schemas[0])
    heard_a, heard_b = threading.Event(), threading.Event()
    a.notifier.subscribe(SCHEDULER_KEY, heard_a.set)
    b.notifier.subscribe(SCHEDULER_KEY, heard_b.set)
    try:
        at_home = a.wait(SCHEDULER_KEY, 1.0)
        b.notifier.publish(SCHEDULER_KEY)  # a replica that does not lead asks the leader
        assert heard_a.wait(5), "the other replica's subscriber was not called"
        assert not heard_b.wait(0.5), "the publishing replica heard itself"
        assert at_home.result(5)[0] is True
        # many keys at once: batches under NOTIFY's 8000-byte payload limit, every key delivered
        keys = [f"job:{uuid.uuid4()}" for _ in range(600)]
        batches = a.bridge._batches(keys)
        assert len(batches) >= 2 and all(len(p.encode()) < 8000 for p in batches)
        assert [k for p in batches for k in p.split("\n")[1:]] == keys
        last = b.wait(keys[-1], 10.0)
        for key in keys:
            a.notifier.wake(key)
        assert last.result(15)[0] is True
    finally:
        a.close()
        b.close()


def test_a_replica_alone_sends_nothing_and_starts_when_another_comes(schemas: list[Engine]) -> None:
    """`others` (ReplicaPresence.others in the app) counts the other replicas: while it says none,
    wakes are not sent (a single PostgreSQL replica pays nothing for the bridge); within
    `others_every` of another replica's arrival they are."""
    count = [0]
    a = Replica(schemas[0], others=lambda: count[0])
    b = Replica(schemas[0])
    try:
        a.notifier.wake("job:first")  # counts the others: none
        time.sleep(0.2)
        for n in range(50):
            a.notifier.wake(f"job:{n}")
        time.sleep(0.2)
        assert a.bridge.sent == 0 and b.bridge.received == 0
        count[0] = 1  # another replica came
        time.sleep(0.6)  # past others_every
        a.notifier.wake("job:counts-again")
        on_b = b.wait("job:late", 10.0)
        a.notifier.wake("job:late")
        woke, seconds = on_b.result(15)
        assert woke and seconds < 1.0
        assert a.bridge.sent >= 1
    finally:
        a.close()
        b.close()


def test_a_bridge_that_cannot_connect_leaves_the_replica_on_its_timers() -> None:
    """A URL that libpq refuses does not stop the control plane from starting: no bridge, the
    notifier wakes this process's waiters as before."""
    if os.environ.get("SWARMSTATION_SKIP_POSTGRES") == "1":
        pytest.skip("SWARMSTATION_SKIP_POSTGRES=1")
    engine = create_engine(POSTGRES_URL.rsplit("/", 1)[0] + "/no_such_database_here")
    notifier = Notifier()
    bridge = PgBridge(engine, notifier)
    try:
        bridge.start()  # logs a warning, raises nothing
        assert notifier._publish is None and bridge._threads == []
        notifier.wake("job:1")  # nothing to send, no error
    finally:
        bridge.stop()
        engine.dispose()


def test_stopping_ends_the_listening_wait_at_once(schemas: list[Engine]) -> None:
    """`stop` wakes the listening thread out of its 5 s wait for notifications (every
    PostgreSQL control plane's shutdown waited for it: about 5 s a test)."""
    replica = Replica(schemas[0])
    time.sleep(0.3)  # the listener is inside its wait
    threads = list(replica.bridge._threads)
    started = time.monotonic()
    replica.close()
    took = time.monotonic() - started
    assert took < 2.0, took
    assert len(threads) == 2 and not any(t.is_alive() for t in threads)
