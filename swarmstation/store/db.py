"""Engine, sessions and migrations for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # One connection: SQLite has one writer anyway, and threads queueing for the pool wake as
        # soon as it is free, where SQLite's own busy handler would sleep in steps of up to 100 ms.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling is off so that BEGIN IMMEDIATE below is ours.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Take the write lock at the start: a deferred transaction that later writes can fail
            # at once with "database is locked" instead of waiting for busy_timeout.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        @event.listens_for(engine, "checkin")
        def _sqlite_end_leftover_transaction(dbapi_conn: Any, _record: Any) -> None:
            # A COMMIT that failed (SQLITE_BUSY, an I/O error) leaves SQLite's transaction open,
            # and the pool skips its reset after a commit: the one connection would keep the write
            # lock and fail every later BEGIN with "cannot start a transaction within a transaction".
            if dbapi_conn is not None and dbapi_conn.in_transaction:
                dbapi_conn.rollback()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)


#: Connections of the SQLite read-only engine (`make_read_engine`): WAL readers do not wait for
#: the writer, nor for each other.
SQLITE_READERS = 4


def make_read_engine(url: str) -> Engine | None:
    """An engine for read-only transactions beside `make_engine`'s, or None where the writer's
    engine serves reads as well. SQLite: a second pool whose transactions are deferred (`BEGIN`,
    not `BEGIN IMMEDIATE`) and `query_only`, so that a read neither takes the write lock nor
    waits for the writer's one connection (WAL readers see the last commit); an in-memory
    database has no second connection to the same data, so None. PostgreSQL: None (its pool
    already reads concurrently)."""
    if not url.startswith("sqlite") or ":memory:" in url or url.rstrip("/") in ("sqlite:", "sqlite:/"):
        return None
    if "mode=memory" in url:
        return None
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=SQLITE_READERS,
        max_overflow=0,
        pool_timeout=60,
    )

    @event.listens_for(engine, "connect")
    def _sqlite_reader_pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA query_only=ON")  # a write through this engine fails, it never locks
        cur.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin_deferred(conn: Any) -> None:
        # One snapshot for the transaction's reads, taken at its first read; no write lock.
        conn.exec_driver_sql("BEGIN")

    @event.listens_for(engine, "checkin")
    def _sqlite_reader_end_leftover(dbapi_conn: Any, _record: Any) -> None:
        if dbapi_conn is not None and dbapi_conn.in_transaction:
            dbapi_conn.rollback()

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session, session.begin():
        yield session


@contextmanager
def read_transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A transaction that only reads (`factory`: from `make_read_engine`'s engine, or the
    writer's where there is none)."""
    with factory() as session, session.begin():
        yield session


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("swarmstation.store") / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    command.upgrade(alembic_config(engine), "head")


def ping(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
