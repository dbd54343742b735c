"""The Alembic migrations on SQLite and PostgreSQL (the `database_url` fixture runs each test on
both): head matches the models, the whole chain goes down to base and up again, every revision
goes down and up on its own, and the revisions that change existing rows keep them as they say."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text

from swarmstation.store.db import alembic_config, make_engine, migrate
from swarmstation.store.models import Base


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = make_engine(database_url)
    yield made
    made.dispose()


def revisions(cfg: Config) -> list[str]:
    """Every revision, oldest first."""
    return [r.revision for r in reversed(list(ScriptDirectory.from_config(cfg).walk_revisions()))]


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def columns(engine: Engine, table: str) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns(table)}


def test_the_chain_is_one_line() -> None:
    cfg = alembic_config(create_engine("sqlite://"))  # the scripts only; no database is touched
    script = ScriptDirectory.from_config(cfg)
    assert len(script.get_heads()) == 1 and len(script.get_bases()) == 1
    ids = revisions(cfg)
    assert ids == sorted(ids) and ids[0] == "0001"


def test_head_matches_the_models_and_the_chain_goes_down_to_base_and_up(engine: Engine) -> None:
    migrate(engine)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == []
    cfg = alembic_config(engine)
    command.downgrade(cfg, "base")
    assert current(engine) is None
    assert tables(engine) <= {"alembic_version"}
    migrate(engine)  # nothing left behind (a PostgreSQL enum type, an index) is in the way
    assert tables(engine) == set(Base.metadata.tables) | {"alembic_version"}


def test_every_revision_goes_down_and_up_on_its_own(engine: Engine) -> None:
    cfg = alembic_config(engine)
    for revision in revisions(cfg):
        command.upgrade(cfg, revision)
        command.downgrade(cfg, "-1")
        command.upgrade(cfg, revision)
        assert current(engine) == revision


# ------------------------------------------------------------------ revisions that keep rows


OLD_POOL = (
    "INSERT INTO pools (name, provider, min_instances, max_instances, "
    "scale_up_queue_threshold, idle_minutes, slots_per_instance, created_at) "
    "VALUES ('old', 'vastai', 0, 2, 1, 5, 1, CURRENT_TIMESTAMP)"
)


def old_pool_row(engine: Engine, *names: str) -> tuple[object, ...]:
    with engine.connect() as conn:
        return tuple(conn.execute(text(f"SELECT {', '.join(names)} FROM pools WHERE name = 'old'")).one())


@dataclass(frozen=True)
class Revision:
    """One revision with what it must do: `rows` run just before it (as SQL), `upgraded` checks
    after it, `downgraded` checks after going back below it."""

    revision: str
    upgraded: Callable[[Engine], None]
    downgraded: Callable[[Engine], None]
    rows: tuple[str, ...] = ()


def _parking_added(engine: Engine) -> None:
    # pools that existed before get parking off (none parked, 24 h)
    assert old_pool_row(engine, "max_parked", "park_max_hours") == (0, 24)
    assert "parked_at" in columns(engine, "instances")


def _parking_removed(engine: Engine) -> None:
    assert not columns(engine, "pools") & {"max_parked", "park_max_hours"}
    assert "parked_at" not in columns(engine, "instances")
    assert old_pool_row(engine, "name") == ("old",)


def _rental_added(engine: Engine) -> None:
    # pools that existed before stay on-demand, with a margin of 1.1
    assert old_pool_row(engine, "rental", "bid_margin") == ("on-demand", 1.1)


def _rental_removed(engine: Engine) -> None:
    assert not columns(engine, "pools") & {"rental", "bid_margin"}
    assert old_pool_row(engine, "name") == ("old",)


def _idempotency_added(engine: Engine) -> None:
    assert "idempotency_keys" in tables(engine)


def _idempotency_removed(engine: Engine) -> None:
    assert "idempotency_keys" not in tables(engine)


STAGING_COLUMNS = {"staging_bytes_done", "staging_bytes_total", "failure_reason"}


def _staging_added(engine: Engine) -> None:
    assert columns(engine, "loras") >= STAGING_COLUMNS


def _staging_removed(engine: Engine) -> None:
    assert not columns(engine, "loras") & STAGING_COLUMNS


REVISIONS = [
    Revision("0007", _parking_added, _parking_removed, rows=(OLD_POOL,)),
    Revision("0008", _rental_added, _rental_removed, rows=(OLD_POOL,)),
    Revision("0011", _idempotency_added, _idempotency_removed),
    Revision("0014", _staging_added, _staging_removed),
]


@pytest.mark.parametrize("step", REVISIONS, ids=[r.revision for r in REVISIONS])
def test_a_revision_keeps_the_rows_and_goes_back(engine: Engine, step: Revision) -> None:
    cfg = alembic_config(engine)
    ids = revisions(cfg)
    below = ids[ids.index(step.revision) - 1]
    command.upgrade(cfg, below)
    with engine.begin() as conn:
        for sql in step.rows:
            conn.execute(text(sql))
    command.upgrade(cfg, step.revision)
    step.upgraded(engine)
    command.downgrade(cfg, below)
    step.downgraded(engine)
    migrate(engine)  # and up to head again
    assert current(engine) == ids[-1]
