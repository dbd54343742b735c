"""No write is lost and no huge number is a 500: handlers commit before they answer (a failed
commit is the answer), and every integer a request carries is bounded at the edge."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.control.scheduler import scheduler_pass
from swarmstation.store.db import transaction
from swarmstation.store.models import Model, Output, Pool, User
from tests.conftest import FakeClock
from tests.helpers import add_instance

INT64_MAX = 2**63 - 1
HUGE = (2**63, -(2**63) - 1, 10**30)


@dataclass
class World:
    plane: ControlPlane
    api: TestClient
    admin: dict[str, str]
    worker: dict[str, str]
    leased_job: str  # assigned to `worker`, lease token 1
    finished_job: str  # cancelled: its event stream replays and ends


@pytest.fixture
def world(settings: Settings, clock: FakeClock) -> Iterator[World]:
    quiet = settings.model_copy(update={"scheduler_interval_seconds": 3600, "control_interval_seconds": 3600})
    cp = build(quiet, provider=None, clock=clock)
    with TestClient(cp.app, raise_server_exceptions=False) as api:
        admin = {"Authorization": f"Bearer {cp.admin_key}"}
        with transaction(cp.state.sessions) as s:
            _, token = add_instance(s, clock())
        worker = {"Authorization": f"Bearer {token}"}
        body = {"tool": "sd15-txt2img", "inputs": {"prompt": "a fox"}}
        leased = api.post("/v1/jobs", headers=admin, json=body).json()["id"]
        with transaction(cp.state.sessions) as s:
            scheduler_pass(s, cp.state.settings, clock())
        assignment = api.get("/worker/v1/jobs/next", headers=worker, params={"wait": 0})
        assert assignment.status_code == 200 and assignment.json()["lease_token"] == 1
        finished = api.post("/v1/jobs", headers=admin, json=body).json()["id"]
        assert api.post(f"/v1/jobs/{finished}/cancel", headers=admin).status_code == 200
        yield World(cp, api, admin, worker, leased, finished)
    cp.state.engine.dispose()


class FailingCommits:
    """Makes the database refuse the COMMIT of the next transaction that writes to `table`, as a
    server that drops the connection would. Other transactions (the control loops') commit."""

    def __init__(self, plane: ControlPlane) -> None:
        self.engine = plane.state.engine
        self.table: str | None = None
        self._writers: set[int] = set()
        event.listen(self.engine, "before_cursor_execute", self._execute)
        event.listen(self.engine, "commit", self._commit)
        event.listen(self.engine, "rollback", self._rollback)

    def arm(self, table: str) -> None:
        self.table = table

    def _execute(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        words = statement.split()
        writes = bool(words) and words[0].upper() in ("INSERT", "UPDATE", "DELETE")
        if self.table and writes and self.table in (w.strip('"') for w in words[1:4]):
            self._writers.add(id(conn))

    def _commit(self, conn: Any) -> None:
        if id(conn) in self._writers:
            self._writers.clear()
            self.table = None
            # As each server does: PostgreSQL ends a transaction whose COMMIT failed; SQLite keeps
            # it open (SQLITE_BUSY), holding its write lock.
            if conn.dialect.name != "sqlite":
                conn.connection.dbapi_connection.rollback()
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

    def _rollback(self, conn: Any) -> None:
        self._writers.discard(id(conn))

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._execute)
        event.remove(self.engine, "commit", self._commit)
        event.remove(self.engine, "rollback", self._rollback)


@pytest.fixture
def failing(world: World) -> Iterator[FailingCommits]:
    f = FailingCommits(world.plane)
    yield f
    f.close()


def count(world: World, model: Any) -> int:
    with transaction(world.plane.state.sessions) as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


# -- item 7: a failed commit is the answer -------------------------------------------------------
def test_output_reservation_whose_commit_fails_is_not_a_200(world: World, failing: FailingCommits) -> None:
    files = {"lease_token": 1, "files": [{"filename": "a.png", "size": 10}]}
    failing.arm("outputs")
    r = world.api.post(f"/worker/v1/jobs/{world.leased_job}/outputs", headers=world.worker, json=files)
    assert r.status_code == 503, r.text  # before: 200 with upload URLs, and no row
    assert r.json()["code"] == "database_unavailable" and r.headers["Retry-After"]
    assert "uploads" not in r.json()
    assert count(world, Output) == 0
    # The worker's retry is the write that happens.
    r = world.api.post(f"/worker/v1/jobs/{world.leased_job}/outputs", headers=world.worker, json=files)
    assert r.status_code == 200, r.text
    assert count(world, Output) == 1


@pytest.mark.parametrize(
    ("path", "body", "table"),
    [
        ("/v1/admin/users", {"name": "carol"}, User),
        ("/v1/admin/pools", {"name": "burst"}, Pool),
        pytest.param(
            "/v1/admin/models",
            {"folder": "loras", "name": "fox.safetensors", "url": "https://huggingface.co/a/fox.safetensors"},
            Model,
            id="models",
        ),
    ],
)
def test_admin_creations_whose_commit_fails_are_not_reported_created(
    world: World, failing: FailingCommits, path: str, body: dict[str, Any], table: Any
) -> None:
    before = count(world, table)
    failing.arm(table.__tablename__)
    r = world.api.post(path, headers=world.admin, json=body)
    assert r.status_code == 503 and r.json()["code"] == "database_unavailable", r.text
    assert count(world, table) == before
    assert world.api.post(path, headers=world.admin, json=body).status_code == 201
    assert count(world, table) == before + 1


def test_removing_a_model_keeps_its_file_when_the_commit_fails(world: World, failing: FailingCommits) -> None:
    r = world.api.put(
        "/v1/admin/models/upload/loras/kept.safetensors", headers=world.admin, content=b"weights"
    )
    assert r.status_code == 201, r.text
    model = r.json()
    with transaction(world.plane.state.sessions) as s:
        row = s.get(Model, model["id"])
        assert row is not None and row.object_key
        key = row.object_key
    failing.arm("models")
    assert world.api.delete(f"/v1/admin/models/{model['id']}", headers=world.admin).status_code == 503
    # The row still names the file, so the file must still be there.
    assert world.plane.state.store.exists(key)
    assert world.api.delete(f"/v1/admin/models/{model['id']}", headers=world.admin).status_code == 204
    assert not world.plane.state.store.exists(key)


# -- item 8: every integer is bounded at the edge -------------------------------------------------
def _ref(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _integers(
    spec: dict[str, Any], schema: dict[str, Any], path: tuple[Any, ...]
) -> Iterator[tuple[Any, ...]]:
    """Every place in a schema where an integer goes, as a path (0 for an array's item)."""
    schema = _ref(spec, schema)
    if schema.get("type") == "integer":
        yield path
    for option in schema.get("anyOf", []) + schema.get("oneOf", []) + schema.get("allOf", []):
        yield from _integers(spec, option, path)
    for name, prop in schema.get("properties", {}).items():
        yield from _integers(spec, prop, (*path, name))
    if isinstance(schema.get("items"), dict):
        yield from _integers(spec, schema["items"], (*path, 0))
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _integers(spec, schema["additionalProperties"], (*path, "k"))


def _integer_slots(spec: dict[str, Any]) -> list[tuple[str, str, tuple[Any, ...], dict[str, Any]]]:
    """(method, path template, where, integer schema) for every integer a request can carry."""
    slots = []
    for template, operations in spec["paths"].items():
        for method, op in operations.items():
            for param in op.get("parameters", []):
                for where in _integers(spec, param["schema"], (param["in"], param["name"])):
                    slots.append((method, template, where, op))
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                for where in _integers(spec, body["schema"], ("body",)):
                    slots.append((method, template, where, op))
    return slots


def _integer_schema(spec: dict[str, Any], op: dict[str, Any], where: tuple[Any, ...]) -> dict[str, Any]:
    if where[0] != "body":
        param = next(p for p in op["parameters"] if p["in"] == where[0] and p["name"] == where[1])
        schema = _ref(spec, param["schema"])
        return next((o for o in schema.get("anyOf", []) if o.get("type") == "integer"), schema)
    schema = _ref(spec, op["requestBody"]["content"]["application/json"]["schema"])
    for step in where[1:]:
        schema = _ref(spec, schema)
        schema = next((_ref(spec, o) for o in schema.get("anyOf", []) if o.get("type") != "null"), schema)
        if step == 0:
            schema = schema["items"]
        elif step == "k":
            schema = schema["additionalProperties"]
        else:
            schema = schema["properties"][step]
    schema = _ref(spec, schema)
    return next((o for o in schema.get("anyOf", []) if o.get("type") == "integer"), schema)


def test_every_documented_request_integer_fits_64_bits(world: World) -> None:
    spec = world.api.get("/openapi.json").json()
    slots = _integer_slots(spec)
    assert len(slots) >= 10  # the sweep sees the worker's and the admin's integers
    unbounded = []
    for method, template, where, op in slots:
        schema = _integer_schema(spec, op, where)
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is None or high is None or low < -(2**63) or high > INT64_MAX:
            unbounded.append(f"{method.upper()} {template} {'.'.join(map(str, where))}: {low}..{high}")
    assert not unbounded, "\n".join(unbounded)


# Values for the other required fields, so that each request is valid but for the huge integer.
_STRINGS = {
    "folder": "loras",
    "name": "sweep.safetensors",
    "url": "https://huggingface.co/a/sweep.safetensors",
    "filename": "a.png",
    "tool": "sd15-txt2img",
    "error": "boom",
    "comfyui_url": "http://127.0.0.1:8188",
    "stage": "install",
    "prompt": "a fox",
}


def _value(
    spec: dict[str, Any], schema: dict[str, Any], name: str, world: World, unique: Iterator[int]
) -> Any:
    schema = _ref(spec, schema)
    options = [o for o in schema.get("anyOf", []) if _ref(spec, o).get("type") != "null"]
    if options:
        return _value(spec, options[0], name, world, unique)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {
            k: _value(spec, v, k, world, unique)
            for k, v in schema.get("properties", {}).items()
            if k in schema.get("required", [])
        }
    if kind == "array":
        return [_value(spec, schema["items"], name, world, unique)] if schema.get("minItems") else []
    if kind == "integer":
        if name == "lease_token":
            return 1
        return max(schema.get("minimum", 1), min(1, schema.get("maximum", 1)))
    if kind == "number":
        low, high = schema.get("minimum", 0.0), schema.get("maximum", 1.0)
        return (low + high) / 2
    if kind == "boolean":
        return True
    if name == "job_id":
        return world.leased_job
    if name == "name" and "pattern" in schema:
        return f"sweep-{next(unique)}"
    return _STRINGS.get(name, "x" * max(1, schema.get("minLength", 1)))


def _put(
    container: Any, where: tuple[Any, ...], value: Any, spec: dict[str, Any], schema: dict[str, Any]
) -> Any:
    """`container` with `value` at `where`, creating what lies on the way (one array item)."""
    if not where:
        return value
    step, rest = where[0], where[1:]
    schema = _ref(spec, schema)
    schema = next((_ref(spec, o) for o in schema.get("anyOf", []) if o.get("type") != "null"), schema)
    if step == 0:
        items = list(container) if isinstance(container, list) and container else [None]
        items[0] = _put(items[0], rest, value, spec, schema["items"])
        return items
    sub = schema["additionalProperties"] if step == "k" else schema["properties"][step]
    container = dict(container) if isinstance(container, dict) else {}
    container[step] = _put(container.get(step), rest, value, spec, sub)
    return container


def test_huge_integers_anywhere_are_refused_with_a_4xx(world: World) -> None:
    spec = world.api.get("/openapi.json").json()
    unique = itertools.count()
    failures = []
    for (method, template, where, op), huge in itertools.product(_integer_slots(spec), HUGE):
        job = world.leased_job if template.startswith("/worker/") else world.finished_job
        path = template
        for param in op.get("parameters", []):
            if param["in"] == "path":
                value = {"job_id": job, "name": "default", "slug": "sd15-txt2img"}.get(param["name"], "x")
                path = path.replace("{" + param["name"] + "}", value)
        params: dict[str, Any] = {}
        headers = dict(world.worker if template.startswith("/worker/") else world.admin)
        body: Any = None
        content = op.get("requestBody", {}).get("content", {}).get("application/json")
        if content:
            body = _value(spec, content["schema"], "", world, unique)
        if where[0] == "query":
            params[where[1]] = str(huge)
        elif where[0] == "header":
            headers[where[1]] = str(huge)
        else:
            body = _put(body, where[1:], huge, spec, content["schema"])
        if template == "/worker/v1/jobs/next":
            params.setdefault("wait", 0)
        r = world.api.request(method.upper(), path, params=params, headers=headers, json=body)
        label = f"{method.upper()} {template} {'.'.join(map(str, where))}={huge}"
        if r.status_code >= 500 or r.status_code < 400:
            failures.append(f"{label}: {r.status_code} {r.text[:200]}")
        elif r.status_code == 422:
            assert isinstance(r.json()["detail"], str), label
    assert not failures, "\n".join(failures)


def test_the_reported_cases(world: World) -> None:
    api, admin = world.api, world.admin
    r = api.get(f"/v1/jobs/{world.finished_job}/events", headers={**admin, "Last-Event-ID": str(2**63)})
    assert r.status_code == 422 and "Last-Event-ID" in r.json()["detail"]
    model = {"folder": "loras", "name": "big.safetensors", "url": "https://huggingface.co/a/big.safetensors"}
    r = api.post("/v1/admin/models", headers=admin, json={**model, "size": 2**63})
    assert r.status_code == 422 and "size" in r.json()["detail"]
    for size in ("1e30", str(2**63)):
        raw = f'{{"lease_token": 1, "files": [{{"filename": "a.png", "size": {size}}}]}}'
        r = api.post(
            f"/worker/v1/jobs/{world.leased_job}/outputs",
            headers={**world.worker, "Content-Type": "application/json"},
            content=raw,
        )
        assert r.status_code == 422, r.text
    # NaN and Infinity are valid to Python's JSON parser and refused by PostgreSQL's JSON.
    raw = '{"lease_token": 1, "timings": {"run_seconds": Infinity}}'
    r = api.post(
        f"/worker/v1/jobs/{world.leased_job}/complete",
        headers={**world.worker, "Content-Type": "application/json"},
        content=raw,
    )
    assert r.status_code == 422, r.text
    assert count(world, Output) == 0
