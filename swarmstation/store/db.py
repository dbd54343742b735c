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
        # Each transaction takes the write lock at its start: a deferred transaction that later
        # writes can fail at once with "database is locked" instead of waiting for busy_timeout.
        return _sqlite_engine(
            url,
            connections=1,
            pragmas=("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000"),
            begin="BEGIN IMMEDIATE",
        )
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
    # One snapshot for a transaction's reads, taken at its first read; no write lock. A write
    # through this engine fails (query_only), it never locks.
    return _sqlite_engine(
        url,
        connections=SQLITE_READERS,
        pragmas=("foreign_keys=ON", "busy_timeout=30000", "query_only=ON"),
        begin="BEGIN",
    )


def _sqlite_engine(url: str, *, connections: int, pragmas: tuple[str, ...], begin: str) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=connections,
        max_overflow=0,
        pool_timeout=60,
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling is off so that `begin` below is ours.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        for pragma in pragmas:
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    @event.listens_for(engine, "checkin")
    def _sqlite_end_leftover_transaction(dbapi_conn: Any, _record: Any) -> None:
        # A COMMIT that failed (SQLITE_BUSY, an I/O error) leaves SQLite's transaction open,
        # and the pool skips its reset after a commit: the one connection would keep the write
        # lock and fail every later BEGIN with "cannot start a transaction within a transaction".
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
