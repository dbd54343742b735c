"""Pool defaults are written once (domain.scaling.POOL_DEFAULTS): a new pool, the table's column
defaults and the scaling policy's config all follow them."""

from __future__ import annotations

from dataclasses import MISSING, asdict, fields
from typing import Any

from sqlalchemy import inspect

from swarmstation.domain.scaling import POOL_DEFAULTS, PoolConfig
from swarmstation.store.models import Pool


def test_a_new_pool_gets_the_defaults(api: Any, admin: dict[str, str]) -> None:
    resp = api.post("/v1/admin/pools", json={"name": "plain"}, headers=admin)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert {name: created[name] for name in asdict(POOL_DEFAULTS)} == asdict(POOL_DEFAULTS)


def test_the_table_and_the_policy_use_the_same_defaults() -> None:
    columns = inspect(Pool).columns
    policy = {f.name: f.default for f in fields(PoolConfig) if f.default is not MISSING}
    for name, value in asdict(POOL_DEFAULTS).items():
        default = columns[name].default
        if default is not None:
            assert default.arg == value, name
        server = columns[name].server_default
        if server is not None:  # as the migrations wrote them
            assert server.arg == (value if isinstance(value, str) else f"{value:g}"), name
        if name in policy:
            assert policy[name] == value, name
