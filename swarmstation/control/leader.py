"""Which control-plane replica runs the singleton loops (scheduler, pools).

PostgreSQL: a session-level advisory lock held on a dedicated connection. SQLite: an exclusive
`flock` on a file beside the database, since only processes on the same host share it.

The loops ask on every pass and tick. `check_seconds` (the leader: how long a check that its lock
connection is alive holds) and `retry_seconds` (a replica that does not lead: how long a refusal
holds) spare the database those round trips: on PostgreSQL a replica that does not lead was
asked on every poke, several times per job. Either delays a takeover by at most its time; the
default of 0 asks every time.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, text

log = logging.getLogger(__name__)
# PostgreSQL's advisory locks are per database, not per schema: the second key is the schema's
# hash, so that deployments in different schemas of one database each elect their own leader.
_LOCK_ID = 0x5357_4152  # "SWAR"
_LOCK_KEYS = "CAST(:id AS integer), (hashtext(current_schema()) & 2147483647)"
#: What the control loops use (api/app.py): a takeover within half a second of the leader's loss
#: (past the database's noticing it), and the leader's connection checked at most once a second.
LOOP_CHECK_SECONDS = 1.0
LOOP_RETRY_SECONDS = 0.5
_TRY_LOCK = text(f"SELECT pg_try_advisory_lock({_LOCK_KEYS})")
_UNLOCK = text(f"SELECT pg_advisory_unlock({_LOCK_KEYS})")
# Whether this session still holds the lock: a connection that answers may be a new one (one
# that SQLAlchemy reconnected after an invalidation), without the lock.
_HOLDS = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND pid = pg_backend_pid() AND classid = CAST(:id AS oid)"
    " AND objid = CAST((hashtext(current_schema()) & 2147483647) AS oid) AND objsubid = 2)"
)


class LeaderLock:
    def __init__(
        self, engine: Engine, lock_file: Path, *, check_seconds: float = 0.0, retry_seconds: float = 0.0
    ) -> None:
        self.engine = engine
        self.lock_file = lock_file
        self.check_seconds = check_seconds
        self.retry_seconds = retry_seconds
        self._conn: Any = None
        self._fh: IO[str] | None = None
        self._mutex = threading.Lock()
        self._checked_at = float("-inf")  # time.monotonic() of the last check or refusal

    @property
    def held(self) -> bool:
        return self._conn is not None or self._fh is not None

    def try_acquire(self) -> bool:
        with self._mutex:
            return self._try_acquire()

    def _try_acquire(self) -> bool:
        now = time.monotonic()
        if self.held:
            if now - self._checked_at < self.check_seconds:
                return True
            self._checked_at = now
            return self._still_held()
        if now - self._checked_at < self.retry_seconds:
            return False
        self._checked_at = now
        if self.engine.dialect.name == "postgresql":
            conn = self.engine.connect()
            got = bool(conn.execute(_TRY_LOCK, {"id": _LOCK_ID}).scalar())
            conn.commit()
            if got:
                self._conn = conn
            else:
                conn.close()
            return got
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.lock_file, "a+")  # noqa: SIM115 - held open while we lead
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        self._fh = fh
        return True

    def _still_held(self) -> bool:
        if self._conn is None:
            return True
        try:
            holds = bool(self._conn.execute(_HOLDS, {"id": _LOCK_ID}).scalar())
            self._conn.commit()
        except Exception:
            log.warning("lost the database connection that held the leader lock")
            self.release()
            return False
        if not holds:
            log.warning("the leader lock's session ended (a new connection holds no lock)")
            self.release()
        return holds

    def release(self) -> None:
        self._checked_at = float("-inf")
        if self._conn is not None:
            try:
                self._conn.execute(_UNLOCK, {"id": _LOCK_ID})
                self._conn.commit()
                self._conn.close()
            except Exception:
                pass
            self._conn = None
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
