"""Which control-plane replica runs the singleton loops (scheduler, pools).

PostgreSQL: a session-level advisory lock held on a dedicated connection. SQLite: an exclusive
`flock` on a file beside the database, since only processes on the same host share it.
"""

from __future__ import annotations

import fcntl
import logging
import threading
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, text

log = logging.getLogger(__name__)
# PostgreSQL's advisory locks are per database, not per schema: the second key is the schema's
# hash, so that deployments in different schemas of one database each elect their own leader.
_LOCK_ID = 0x5357_4152  # "SWAR"
_LOCK_KEYS = "CAST(:id AS integer), (hashtext(current_schema()) & 2147483647)"
_TRY_LOCK = text(f"SELECT pg_try_advisory_lock({_LOCK_KEYS})")
_UNLOCK = text(f"SELECT pg_advisory_unlock({_LOCK_KEYS})")


class LeaderLock:
    def __init__(self, engine: Engine, lock_file: Path) -> None:
        self.engine = engine
        self.lock_file = lock_file
        self._conn: Any = None
        self._fh: IO[str] | None = None
        self._mutex = threading.Lock()

    @property
    def held(self) -> bool:
        return self._conn is not None or self._fh is not None

    def try_acquire(self) -> bool:
        with self._mutex:
            return self._try_acquire()

    def _try_acquire(self) -> bool:
        if self.held:
            return self._still_held()
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
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()
            return True
        except Exception:
            log.warning("lost the database connection that held the leader lock")
            self.release()
            return False

    def release(self) -> None:
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
