"""Wake-ups between threads and the event loop inside one control-plane process, and between
replicas on one PostgreSQL (`PgBridge`: LISTEN/NOTIFY).

Database rows are the truth; these events only shorten waits. Every waiter also re-reads the
database after a timeout, so replicas still make progress when a notification is lost.

`close` (on shutdown) wakes every waiter and sets `closed`, so that long polls answer "nothing
yet, come back" at once instead of holding the server's shutdown for their whole wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import queue
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Engine

log = logging.getLogger(__name__)

#: The key a replica that does not lead publishes to ask the leader for a scheduler pass.
SCHEDULER_KEY = "scheduler"
#: A free instance on a replica that does not lead asks the leader for a pass: nothing changed, so
#: the leader skips it while its queue is empty (SCHEDULER_KEY counts as a change).
SCHEDULER_IDLE_KEY = "scheduler-idle"


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """True when `event` is set before `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False


class Notifier:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._lock = threading.Lock()
        self._subscribers: dict[str, list[Callable[[], None]]] = defaultdict(list)
        self._publish: Callable[[str], None] | None = None
        self.closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def attach(self, publish: Callable[[str], None] | None) -> None:
        """Send every `wake` to the other replicas too (`PgBridge.publish`); None detaches."""
        self._publish = publish

    def subscribe(self, key: str, fn: Callable[[], None]) -> None:
        """Call `fn` (on the bridge's thread) when another replica wakes `key`."""
        with self._lock:
            self._subscribers[key].append(fn)

    def publish(self, key: str) -> None:
        """Tell the other replicas only (nothing here waits on it); a no-op without a bridge."""
        publish = self._publish
        if publish is not None:
            publish(key)

    def wake(self, key: str) -> None:
        """Safe to call from any thread. With a bridge attached, the other replicas' waiters on
        `key` wake too."""
        self.publish(key)
        self.wake_local(key)

    def wake_remote(self, key: str) -> None:
        """Another replica woke `key`: this replica's waiters and subscribers, not published again."""
        with self._lock:
            subscribers = list(self._subscribers.get(key, ()))
        for fn in subscribers:
            try:
                fn()
            except Exception:
                log.exception("a subscriber of %s failed", key)
        self.wake_local(key)

    def wake_local(self, key: str) -> None:
        """This process's waiters on `key` only. Safe to call from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._lock:
            events = list(self._events.get(key, ()))
        for ev in events:
            loop.call_soon_threadsafe(ev.set)

    def close(self) -> None:
        """Wake every waiter and mark the notifier closed. Safe to call from any thread and from a
        signal handler."""
        self.closed = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._lock:
            events = [ev for evs in self._events.values() for ev in evs]
        for ev in events:
            loop.call_soon_threadsafe(ev.set)

    @contextlib.contextmanager
    def listening(self, *keys: str) -> Iterator[asyncio.Event]:
        """An event set by every `wake` of one of `keys` (and by `close`) while the block runs: a
        caller that reads the database between waits clears it before each read, and misses no
        wake that came during the read. Use it on the event loop."""
        ev = asyncio.Event()
        with self._lock:
            for key in keys:
                self._events[key].add(ev)
        try:
            yield ev
        finally:
            with self._lock:
                for key in keys:
                    self._events[key].discard(ev)
                    if not self._events[key]:
                        del self._events[key]

    async def wait(self, key: str, timeout: float) -> bool:
        """True when woken before `timeout`. After `close` it still waits (a caller that loops on
        it must not spin): callers that should end on shutdown check `closed`."""
        with self.listening(key) as ev:
            return await wait_set(ev, timeout)


def user_runs_key(user_id: str) -> str:
    """Woken when one of the user's runs changes (a step finished, the next one queued): what a
    conversation's event stream waits on besides its own key, since its runs are the user's."""
    return f"runs-of:{user_id}"


#: A NOTIFY payload is at most 8000 bytes: keys are sent in batches below that.
_PAYLOAD_BYTES = 7000


def channel_for(schema: str) -> str:
    """The channel of one deployment: notifications are per database, deployments per schema."""
    return "swarmstation_" + hashlib.sha256(schema.encode()).hexdigest()[:16]


class PgBridge:
    """Carries a `Notifier`'s wakes between the replicas on one PostgreSQL.

    One listening connection per replica (`LISTEN`, psycopg's notifies, a thread that blocks on
    it) and one sending connection (a thread that batches the keys woken meanwhile into one
    `pg_notify` each). Each payload starts with the sending replica's id, so that a replica skips
    its own. `others` (optional) says how many other replicas there are, read at most every
    `others_every` seconds: with none, nothing is sent.
    """

    def __init__(
        self,
        engine: Engine,
        notifier: Notifier,
        *,
        others: Callable[[], int] | None = None,
        others_every: float = 2.0,
        reconnect_seconds: float = 1.0,
    ) -> None:
        self.engine = engine
        self.notifier = notifier
        self.origin = uuid.uuid4().hex[:12]
        self._others = others
        self._others_every = others_every
        # what the sending thread last counted, and when: while alone, `publish` drops keys
        # without waking that thread, asking it to count again every `others_every` seconds
        self._alone = False
        self._others_at = float("-inf")
        self._reconnect = reconnect_seconds
        self._outbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._channel: str | None = None
        self.listening = threading.Event()
        self.sent = 0
        self.received = 0

    def _connect(self) -> Any:
        import psycopg

        url = self.engine.url.set(drivername="postgresql")
        return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)

    def start(self) -> None:
        """Listen and send from now on; where PostgreSQL cannot be reached this way (a URL that
        libpq refuses), this replica runs without the bridge, its waits on their timers."""
        try:
            conn = self._connect()
            try:
                schema = str(conn.execute("SELECT current_schema()").fetchone()[0])
            finally:
                conn.close()
        except Exception as exc:
            log.warning("no LISTEN/NOTIFY between replicas (%s): waits fall back to their timers", exc)
            return
        self._channel = channel_for(schema)
        self.notifier.attach(self.publish)
        self._threads = [
            threading.Thread(target=self._listen, name="pg-listen", daemon=True),
            threading.Thread(target=self._send, name="pg-notify", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self.notifier.attach(None)
        self._stop.set()
        self._outbox.put(None)
        for t in self._threads:
            t.join(timeout=10)
        self._threads = []

    def publish(self, key: str) -> None:
        if self._alone and time.monotonic() - self._others_at < self._others_every:
            return  # no other replica: nobody to tell
        self._outbox.put(key)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f'LISTEN "{self._channel}"')
                    self.listening.set()
                    while not self._stop.is_set():
                        # returns after the timeout with none: a chance to see `_stop`
                        for note in conn.notifies(timeout=5.0):
                            if self._stop.is_set():
                                break  # `stop` woke this wait (see `_wake_listener`)
                            self._received(note.payload)
            except Exception as exc:
                self.listening.clear()
                if self._stop.is_set():
                    return
                log.warning("LISTEN connection lost (%s): waits fall back to their timers", exc)
                self._stop.wait(self._reconnect)

    def _received(self, payload: str) -> None:
        origin, _, body = payload.partition("\n")
        if origin == self.origin:
            return
        self.received += 1
        for key in dict.fromkeys(body.split("\n")):
            if key:
                self.notifier.wake_remote(key)

    def _batches(self, keys: list[str]) -> list[str]:
        out, batch, size = [], [self.origin], len(self.origin)
        for key in keys:
            if size + len(key) + 1 > _PAYLOAD_BYTES and len(batch) > 1:
                out.append("\n".join(batch))
                batch, size = [self.origin], len(self.origin)
            batch.append(key)
            size += len(key) + 1
        if len(batch) > 1:
            out.append("\n".join(batch))
        return out

    def _wake_listener(self, conn: Any) -> None:
        """A notification of this replica's own (which `_received` ignores) ends the listening
        thread's wait at once: without it, `stop` waited up to its 5 s timeout."""
        try:
            if conn is None or conn.closed:
                conn = self._connect()
            with conn:
                conn.execute("SELECT pg_notify(%s, %s)", (self._channel, self.origin))
        except Exception:
            pass  # the listener still sees `_stop` at its timeout

    def _send(self) -> None:
        conn: Any = None
        while True:
            key = self._outbox.get()
            keys = dict.fromkeys([key] if key is not None else [])
            while True:  # everything woken meanwhile goes in one notification
                try:
                    more = self._outbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    key = None
                else:
                    keys[more] = None
            if key is None and self._stop.is_set():
                self._wake_listener(conn)
                if conn is not None:
                    conn.close()
                return
            if self._others is not None and time.monotonic() - self._others_at > self._others_every:
                try:
                    self._alone = self._others() == 0
                except Exception:
                    self._alone = False
                self._others_at = time.monotonic()
            if not keys or self._alone:
                continue
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                for payload in self._batches(list(keys)):
                    conn.execute("SELECT pg_notify(%s, %s)", (self._channel, payload))
                    self.sent += 1
            except Exception as exc:
                log.warning("NOTIFY failed (%s): the other replicas fall back to their timers", exc)
                try:
                    if conn is not None:
                        conn.close()
                except Exception:
                    pass
                conn = None
