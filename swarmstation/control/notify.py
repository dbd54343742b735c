"""Wake-ups between threads and the event loop inside one control-plane process.

Database rows are the truth; these events only shorten waits. Every waiter also re-reads the
database after a timeout, so several replicas on one PostgreSQL still make progress.
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

    async def wait(self, key: str, timeout: float) -> bool:
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
