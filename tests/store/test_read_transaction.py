"""Read-only transactions on SQLite (store/db.py `make_read_engine`): a read does not wait for the
writer's transaction, sees only what was committed, and cannot write."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from swarmstation.store.db import make_engine, make_read_engine, make_sessionmaker, migrate, read_transaction
from swarmstation.store.models import Tool


def test_a_read_neither_waits_for_the_writer_nor_sees_what_it_has_not_committed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    engine = make_engine(url)
    migrate(engine)
    reader = make_read_engine(url)
    assert reader is not None
    writes, reads = make_sessionmaker(engine), make_sessionmaker(reader)
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with writes() as s, s.begin():  # BEGIN IMMEDIATE: the write lock, held until `release`
            s.execute(text("INSERT INTO meta (key, value) VALUES ('probe', '1')"))
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        with read_transaction(reads) as s:
            seen = s.scalar(text("SELECT value FROM meta WHERE key = 'probe'"))
            tools = list(s.scalars(select(Tool.slug)))
        assert time.monotonic() - started < 1.0  # not the busy timeout's 30 s, nor the pool's 60
        assert seen is None and tools == []
    finally:
        release.set()
        thread.join(10)
    with read_transaction(reads) as s:
        assert s.scalar(text("SELECT value FROM meta WHERE key = 'probe'")) == "1"
    with pytest.raises(OperationalError, match="readonly"), read_transaction(reads) as s:
        s.execute(text("INSERT INTO meta (key, value) VALUES ('nope', '1')"))
    reader.dispose()
    engine.dispose()


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "postgresql://postgres@127.0.0.1:5432/test"]
)
def test_no_read_engine_where_the_writer_serves_reads(url: str) -> None:
    assert make_read_engine(url) is None
