"""Shared fixtures: databases (SQLite and the PostgreSQL server on the machine), apps, clocks."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from swarmstation.config import Settings
from tests.chain.harness import chain  # noqa: F401 - the local Ethereum node, for any test

# Tests that are not about money run free: a tool without a price model derives a price of 0 (no
# $/hour, no minimum), so a submission holds nothing; this reaches every Settings() of the run and
# the servers tests start as subprocesses. Tests of charging set a tool's price or these settings.
os.environ.setdefault("SWARMSTATION_DEFAULT_GPU_PRICE_PER_HOUR", "0")
os.environ.setdefault("SWARMSTATION_MIN_PRICE_CREDITS", "0")

POSTGRES_URL = os.environ.get(
    "SWARMSTATION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each backend. PostgreSQL gets a schema of its own per test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    if os.environ.get("SWARMSTATION_SKIP_POSTGRES") == "1":
        pytest.skip("SWARMSTATION_SKIP_POSTGRES=1")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(autouse=True, scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A control plane built on a SQLite file that does not exist yet gets a copy of one migrated
    database (SQLite's backup API) instead of running the migrations itself: the same schema,
    made by the same migrations once a session, for a few milliseconds instead of about 0.25 s a
    build (548 builds in tests/api and tests/control alone spent 126 s migrating). Existing files
    (a restart), PostgreSQL and the servers tests start as processes still migrate; tests/store
    tests the migrations themselves."""
    from swarmstation.api import app as app_mod
    from swarmstation.store import db

    template = tmp_path_factory.mktemp("migrated") / "template.db"
    engine = db.make_engine(f"sqlite:///{template}")
    db.migrate(engine)
    engine.dispose()
    real = app_mod.migrate

    def migrate(engine: Engine) -> None:
        path = engine.url.database
        if engine.dialect.name != "sqlite" or not path or path == ":memory:" or os.path.exists(path):
            real(engine)
            return
        with sqlite3.connect(template) as source, sqlite3.connect(path) as target:
            source.backup(target)
        source.close()
        target.close()

    app_mod.migrate = migrate
    yield
    app_mod.migrate = real


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        provider="none",
        lease_seconds=30,
        heartbeat_timeout_seconds=20,
        max_attempts=2,
    )


# -- an in-process control plane -----------------------------------------------------------------
# Modules set `PLANE_SETTINGS = {...}` for their own settings; the loops run slowly so that tests
# drive scheduler passes themselves.
@pytest.fixture
def plane(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    from swarmstation.api.app import build

    overrides = {
        "scheduler_interval_seconds": 60,
        "control_interval_seconds": 60,
        **getattr(request.module, "PLANE_SETTINGS", {}),
    }
    cp = build(Settings(data_dir=tmp_path / "data", provider="none", **overrides), provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


@pytest.fixture
def api(plane: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(plane.app) as client:
        yield client


@pytest.fixture
def admin(plane: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {plane.admin_key}"}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """One S3-compatible server (moto) for the session; each test makes its own bucket."""
    from tests.s3_server import moto_endpoint

    with moto_endpoint() as url:
        yield url


@pytest.fixture
def fake_openai() -> Iterator[Any]:
    """A fake OpenAI-compatible endpoint (tests/fake_openai.py) on a free port: point
    `llm_base_url` at `fake_openai.base_url` and `llm_api_key` at `fake_openai.api_key`."""
    from tests.fake_openai import fake_openai_server

    with fake_openai_server() as fake:
        yield fake
