"""Which other control-plane replicas are alive on this database.

PostgreSQL: every replica holds a shared advisory lock on a dedicated connection for as long as it
runs; the other holders of that lock are the other live replicas. A replica that dies loses its
connection, and so its place, at once (no heartbeat table to go stale). The lock's key includes the
schema, so that deployments in separate schemas of one database do not see each other. SQLite is
one host, one replica: there are never others.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Connection, Engine, text

log = logging.getLogger(__name__)

_KEY = 0x5357_5250  # "SWRP"; the second key is the schema's hash
_SCHEMA_KEY = "(hashtext(current_schema()) & 2147483647)"
_ANNOUNCE = text(f"SELECT pg_advisory_lock_shared(CAST(:key AS integer), {_SCHEMA_KEY})")
_LEAVE = text(f"SELECT pg_advisory_unlock_shared(CAST(:key AS integer), {_SCHEMA_KEY})")
_OTHERS = text(
    "SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    f" AND classid = CAST(:key AS oid) AND objid = CAST({_SCHEMA_KEY} AS oid) AND objsubid = 2"
    " AND pid <> pg_backend_pid()"
)


class ReplicaPresence:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None
        self._announced = False
        self._mutex = threading.Lock()

    @property
    def shared(self) -> bool:
        """Whether replicas can share this database (PostgreSQL)."""
        return self.engine.dialect.name == "postgresql"

    def announce(self) -> None:
        """Count this process as a live replica until `leave` (or its death)."""
        if not self.shared:
            return
        with self._mutex:
            if self._conn is None:
                conn = self.engine.connect()
                conn.execute(_ANNOUNCE, {"key": _KEY})
                conn.commit()
                self._conn = conn
                self._announced = True

    def others(self) -> int:
        """How many other replicas are alive on this database now."""
        if not self.shared:
            return 0
        with self._mutex:
            if self._conn is not None:
                try:
                    return self._count(self._conn)
                except Exception as exc:  # the connection died: announce again on a new one
                    log.warning("lost the connection that marks this replica alive: %s", exc)
                    self._drop()
            lost = self._announced and self._conn is None
        if lost:
            self.announce()
        with self.engine.connect() as conn:
            return self._count(conn)

    @staticmethod
    def _count(conn: Connection) -> int:
        count: Any = conn.execute(_OTHERS, {"key": _KEY}).scalar()
        conn.commit()
        return int(count or 0)

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def leave(self) -> None:
        with self._mutex:
            if self._conn is not None:
                try:
                    self._conn.execute(_LEAVE, {"key": _KEY})
                    self._conn.commit()
                except Exception:
                    pass
                self._drop()
            self._announced = False
