"""Wake-ups between threads and the event loop inside one control-plane process.

Database rows are the truth; these events only shorten waits. Every waiter also re-reads the
database after a timeout, so several replicas on one PostgreSQL still make progress.

`close` (on shutdown) wakes every waiter and sets `closed`, so that long polls answer "nothing
yet, come back" at once instead of holding the server's shutdown for their whole wait.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict


class Notifier:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._lock = threading.Lock()
        self.closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def wake(self, key: str) -> None:
        """Safe to call from any thread."""
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

    async def wait(self, key: str, timeout: float) -> bool:
        """True when woken before `timeout`. After `close` it still waits (a caller that loops on
        it must not spin): callers that should end on shutdown check `closed`."""
        ev = asyncio.Event()
        with self._lock:
            self._events[key].add(ev)
        try:
            async with asyncio.timeout(timeout):
                await ev.wait()
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._events[key].discard(ev)
                if not self._events[key]:
                    del self._events[key]
