"""The control plane's background loops, run on the replica that holds the leader lock.

Passes proportional to change. `poke()` says something changed (a job submitted, finished or
failed, an instance registered, another replica's poke); `poke(change=False)` only asks for an
assignment pass (a long poll that is free for work). The scheduler's sweep (instance health,
expired leases, prefetch planning) runs every `scheduler_interval_seconds` while things change,
and otherwise only when the clock reaches the earliest deadline the last sweep saw (a heartbeat
or provisioning deadline, a lease's expiry; capped so that a deadline made after that sweep is
not passed) or `SAFETY_SWEEP_SECONDS` have gone by (what changed in the database unseen here:
another replica, a restart, an edit by hand). An assignment pass is skipped when the last pass
found the queue empty and nothing changed since. The other leader loops that changes feed
(`CHANGE_DRIVEN`) run on their cadence for `QUIET_AFTER_SECONDS` after a change, then every
`QUIET_INTERVAL_SECONDS` until the next change wakes them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from swarmstation.config import Settings
from swarmstation.control.leader import LeaderLock
from swarmstation.control.notify import SCHEDULER_IDLE_KEY, SCHEDULER_KEY, Notifier
from swarmstation.control.pools import PoolController
from swarmstation.control.scheduler import PassResult, scheduler_pass
from swarmstation.store.db import transaction

log = logging.getLogger(__name__)

#: A sweep runs at least this often, whatever the deadlines say.
SAFETY_SWEEP_SECONDS = 5.0
#: The extra loops keep their cadence this long after the last change...
QUIET_AFTER_SECONDS = 10.0
#: ...and then run this often (or at once on the next change).
QUIET_INTERVAL_SECONDS = 5.0
#: The extra loops whose work comes from what pokes: pipeline runs (their jobs finish, they are
#: submitted), local tools (their jobs are submitted, or queued by runs), ComfyDeploy dispatch,
#: LoRA staging (an approval pokes). The others (deposit scans: the chain does not poke) keep
#: their cadence.
CHANGE_DRIVEN = frozenset({"runs", "local-tools", "comfydeploy", "lora-staging"})


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
        self.sweeps = 0
        self.next_due: datetime | None = None  # when the next sweep is due (clock time)
        # Changes signalled (`poke()`), and when the last one was (time.monotonic()).
        self.changes = 0
        self._last_change = time.monotonic()
        self._extra_wakes: list[asyncio.Event] = []
        # Other leader-only work, each on its own cadence: (name, interval seconds, function; a
        # function that returns True changed something, see `_every`).
        self.extra: list[tuple[str, float, Callable[[], object]]] = []

    def poke(self, *, change: bool = True) -> None:
        """Ask for a scheduler pass soon; safe from any thread. A replica that does not lead asks
        the leader too (on PostgreSQL the leader hears it through notify.PgBridge). `change=False`:
        nothing was enqueued or changed (a free instance asks for work), so the pass is skipped
        when the queue was empty at the last one."""
        if change:
            self.changes += 1
            self._last_change = time.monotonic()
        if not self.leader.held:
            self.notifier.publish(SCHEDULER_KEY if change else SCHEDULER_IDLE_KEY)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)
            if change:
                for ev in self._extra_wakes:
                    self._loop.call_soon_threadsafe(ev.set)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()  # of this event loop (a lifespan may run more than once)
        self._extra_wakes = [asyncio.Event() for _ in self.extra]
        self._tasks = [
            asyncio.create_task(self._scheduler_loop(), name="scheduler"),
            asyncio.create_task(self._pool_loop(), name="pools"),
            *(
                asyncio.create_task(self._every(name, interval, fn, wake), name=name)
                for (name, interval, fn), wake in zip(self.extra, self._extra_wakes, strict=True)
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

    async def _lead(self) -> bool:
        """Whether this replica leads (taking the lock when it is free). A held file lock
        (SQLite) needs no check, so no thread hop; a PostgreSQL lock is checked on its
        connection, in a thread."""
        if self.leader.held and self.leader.engine.dialect.name != "postgresql":
            return True
        return await asyncio.to_thread(self.leader.try_acquire)

    def _deadline_cap(self) -> timedelta:
        """A deadline made after a sweep (a heartbeat, a lease, a launch) is at least this far
        from it: the next sweep is never later than that."""
        st = self.settings
        return timedelta(
            seconds=min(st.heartbeat_timeout_seconds, st.lease_seconds, st.provisioning_timeout_seconds)
        )

    async def _scheduler_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.scheduler_interval_seconds
        safety = max(interval, SAFETY_SWEEP_SECONDS)
        next_sweep = 0.0  # loop.time() of the next safety sweep
        last_sweep = float("-inf")
        due: datetime | None = None  # clock time of the earliest deadline the last sweep saw
        swept_changes = passed_changes = -1  # `changes` at the last sweep, at the last pass
        queue_empty = False
        led = False
        while True:
            try:
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            now = loop.time()
            changes = self.changes
            sweep = (
                not led
                or now >= next_sweep
                or (due is not None and self.clock() >= due)
                or (changes != swept_changes and now >= last_sweep + interval)
            )
            if not sweep and queue_empty and changes == passed_changes:
                continue  # nothing due, nothing changed, no job waiting to be assigned
            try:
                if not await self._lead():
                    led = False
                    continue
                result = await asyncio.to_thread(self._run_pass, sweep)
                self.passes += 1
            except Exception:
                log.exception("scheduler pass failed")
                await asyncio.sleep(1.0)
                continue
            led = True
            passed_changes = changes
            queue_empty = result.queue_empty
            if sweep:
                self.sweeps += 1
                swept_changes = changes
                last_sweep = now
                next_sweep = now + safety
                cap = self.clock() + self._deadline_cap()
                due = cap if result.next_due is None else min(result.next_due, cap)
                self.next_due = due
            for instance_id in result.woken_instances:
                self.notifier.wake(f"instance:{instance_id}")
            for job_id in result.changed_jobs:
                self.notifier.wake(f"job:{job_id}")

    async def _every(self, name: str, interval: float, fn: Callable[[], object], wake: asyncio.Event) -> None:
        """`fn` returns True when it changed something (a pipeline run queued its next jobs): that
        counts as a change (`poke()`)."""
        while True:
            wake.clear()
            try:
                if await self._lead() and await asyncio.to_thread(fn) is True:
                    self.poke()
            except Exception:
                log.exception("%s failed", name)
            if name not in CHANGE_DRIVEN or time.monotonic() - self._last_change < QUIET_AFTER_SECONDS:
                await asyncio.sleep(interval)
                continue
            try:  # quiet: a safety pass now and then, or at once when something changes
                async with asyncio.timeout(max(interval, QUIET_INTERVAL_SECONDS)):
                    await wake.wait()
            except TimeoutError:
                pass

    async def _pool_loop(self) -> None:
        while True:
            try:
                if await self._lead():
                    await asyncio.to_thread(self.pools.tick)
                    self.poke(change=False)  # an instance it made ready asks for work itself
            except Exception:
                log.exception("pool tick failed")
            await asyncio.sleep(self.settings.control_interval_seconds)
