"""The control plane's background loops, run on the replica that holds the leader lock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from swarmstation.config import Settings
from swarmstation.control.leader import LeaderLock
from swarmstation.control.notify import SCHEDULER_KEY, Notifier
from swarmstation.control.pools import PoolController
from swarmstation.control.scheduler import PassResult, scheduler_pass
from swarmstation.store.db import transaction

log = logging.getLogger(__name__)


class ControlLoops:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        notifier: Notifier,
        leader: LeaderLock,
        pools: PoolController,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.notifier = notifier
        self.leader = leader
        self.pools = pools
        self.clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.passes = 0
        # Other leader-only work, each on its own cadence: (name, interval seconds, function).
        self.extra: list[tuple[str, float, Callable[[], None]]] = []

    def poke(self) -> None:
        """Ask for a scheduler pass soon; safe from any thread. A replica that does not lead asks
        the leader too (on PostgreSQL the leader hears it through notify.PgBridge)."""
        if not self.leader.held:
            self.notifier.publish(SCHEDULER_KEY)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._scheduler_loop(), name="scheduler"),
            asyncio.create_task(self._pool_loop(), name="pools"),
            *(
                asyncio.create_task(self._every(name, interval, fn), name=name)
                for name, interval, fn in self.extra
            ),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        await asyncio.to_thread(self.leader.release)

    def _run_pass(self, sweep: bool) -> PassResult:
        with transaction(self.sessions) as s:
            # The pass's time is read once it holds the database, not before waiting for it: on
            # SQLite (one writer) a pass that read the clock first stamped jobs submitted while it
            # waited with an assignment time before their submission.
            s.connection()
            return scheduler_pass(s, self.settings, self.clock(), sweep=sweep)

    async def _scheduler_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = 0.0
        while True:
            try:
                async with asyncio.timeout(self.settings.scheduler_interval_seconds):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            sweep = loop.time() >= next_sweep
            if sweep:
                next_sweep = loop.time() + self.settings.scheduler_interval_seconds
            try:
                if not await asyncio.to_thread(self.leader.try_acquire):
                    continue
                result = await asyncio.to_thread(self._run_pass, sweep)
                self.passes += 1
            except Exception:
                log.exception("scheduler pass failed")
                await asyncio.sleep(1.0)
                continue
            for instance_id in result.woken_instances:
                self.notifier.wake(f"instance:{instance_id}")
            for job_id in result.changed_jobs:
                self.notifier.wake(f"job:{job_id}")

    async def _every(self, name: str, interval: float, fn: Callable[[], None]) -> None:
        while True:
            try:
                if await asyncio.to_thread(self.leader.try_acquire):
                    await asyncio.to_thread(fn)
            except Exception:
                log.exception("%s failed", name)
            await asyncio.sleep(interval)

    async def _pool_loop(self) -> None:
        while True:
            try:
                if await asyncio.to_thread(self.leader.try_acquire):
                    await asyncio.to_thread(self.pools.tick)
                    self.poke()
            except Exception:
                log.exception("pool tick failed")
            await asyncio.sleep(self.settings.control_interval_seconds)
