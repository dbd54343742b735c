"""The leader lock: one leader per deployment, and a deployment is a database schema on PostgreSQL
(advisory locks are per database, so the schema is part of the key)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from swarmstation.control.leader import LeaderLock
from tests.conftest import POSTGRES_URL


@pytest.fixture
def schemas() -> Iterator[list[Engine]]:
    if os.environ.get("SWARMSTATION_SKIP_POSTGRES") == "1":
        pytest.skip("SWARMSTATION_SKIP_POSTGRES=1")
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    names = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    engines: list[Engine] = []
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f"CREATE SCHEMA {name}"))
    for name in names:
        sep = "&" if "?" in POSTGRES_URL else "?"
        engines.append(create_engine(f"{POSTGRES_URL}{sep}options=-csearch_path%3D{name}"))
    yield engines
    for engine in engines:
        engine.dispose()
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
    admin.dispose()


@pytest.mark.postgres
def test_one_leader_per_schema_and_each_schema_has_its_own(schemas: list[Engine], tmp_path: Path) -> None:
    first, second = schemas
    a, b = LeaderLock(first, tmp_path / "a"), LeaderLock(first, tmp_path / "b")
    other = LeaderLock(second, tmp_path / "c")
    try:
        assert a.try_acquire()
        assert not b.try_acquire(), "two leaders in one schema"
        assert other.try_acquire(), "a deployment in another schema was blocked by this one's leader"
        a.release()
        assert b.try_acquire(), "the lock was not given up on release"
    finally:
        for lock in (a, b, other):
            lock.release()


def test_one_leader_per_sqlite_database(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    a, b = LeaderLock(engine, tmp_path / "leader.lock"), LeaderLock(engine, tmp_path / "leader.lock")
    try:
        assert a.try_acquire()
        assert not b.try_acquire()
    finally:
        a.release()
        b.release()
        engine.dispose()


@pytest.mark.postgres
def test_a_refusal_and_the_leaders_check_hold_for_their_time_then_a_takeover(
    schemas: list[Engine], tmp_path: Path
) -> None:
    """The loops ask on every pass: a replica that does not lead asks the database at most every
    `retry_seconds`, the leader checks its connection at most every `check_seconds`."""
    first = schemas[0]
    a = LeaderLock(first, tmp_path / "a", check_seconds=60.0)
    b = LeaderLock(first, tmp_path / "b", retry_seconds=0.5)
    try:
        assert a.try_acquire()
        assert not b.try_acquire()
        a._conn.invalidate()  # its lock ends with its database session, unseen by `a` for 60 s
        assert a.try_acquire(), "the leader re-checked within check_seconds"
        assert not b.try_acquire(), "a refusal did not hold for retry_seconds"
        time.sleep(0.6)
        assert b.try_acquire(), "no takeover after retry_seconds once the leader's connection closed"
        a.check_seconds = 0.0
        assert not a.try_acquire(), "the old leader still believed it led after its check"
    finally:
        for lock in (a, b):
            lock.release()
