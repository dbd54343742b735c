"""The OpenAPI document tells the truth about errors: every operation documents one error shape for
its 422, other 4xx and 5xx, and the bodies the server really sends validate against it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane
from swarmstation.store.db import transaction
from tests.conftest import FakeClock
from tests.helpers import add_instance

PLANE_SETTINGS = {"scheduler_interval_seconds": 3600, "control_interval_seconds": 3600}


@pytest.fixture
def spec(api: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = api.get("/openapi.json").json()
    return document


@pytest.fixture
def worker(plane: ControlPlane, clock: FakeClock) -> dict[str, str]:
    with transaction(plane.state.sessions) as s:
        _, token = add_instance(s, clock())
    return {"Authorization": f"Bearer {token}"}


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if isinstance(op, dict) and "responses" in op:
                yield method, path, op


def documented(spec: dict[str, Any], op: dict[str, Any], status: int) -> dict[str, Any]:
    """The schema an operation documents for a status: exact, then its range (4XX), then default."""
    responses = op["responses"]
    for key in (str(status), f"{str(status)[0]}XX", "default"):
        if key in responses:
            return dict(responses[key]["content"]["application/json"]["schema"])
    raise AssertionError(f"status {status} is not documented")


def check(spec: dict[str, Any], op: dict[str, Any], status: int, body: Any) -> None:
    # The schema as a root that carries the components, so that its $refs resolve.
    schema = {**documented(spec, op, status), "components": spec["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)


def test_every_operation_documents_the_error_shape_it_sends(spec: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in str(spec), "FastAPI's 422 shape is not what this API sends"
    for method, path, op in operations(spec):
        for key in ("422", "4XX", "5XX"):
            assert key in op["responses"], f"{method.upper()} {path} does not document {key}"
            assert documented(spec, op, int(key[0]) * 100 + 22 if key == "422" else int(key[0]) * 100)
    error = spec["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"detail", "code"}
    assert error["properties"]["detail"]["type"] == "string"


def _bad_request(op: dict[str, Any]) -> dict[str, Any] | None:
    """Request arguments that fail validation for this operation, if it takes any input."""
    if "application/json" in op.get("requestBody", {}).get("content", {}):
        return {"json": [["not", "an", "object"]]}
    for param in op.get("parameters", []):
        schema = param["schema"]
        kinds = {schema.get("type")} | {o.get("type") for o in schema.get("anyOf", [])}
        typed = kinds & {"integer", "number", "boolean"} or "enum" in schema or "format" in schema
        if param["in"] == "query" and typed:
            return {"params": {param["name"]: "not-a-value"}}
        if param["in"] == "header" and typed:
            return {"headers": {param["name"]: "not-a-value"}}
    return None


def test_real_422_bodies_validate_against_every_documented_422(
    api: TestClient, spec: dict[str, Any], admin: dict[str, str], worker: dict[str, str]
) -> None:
    checked = []
    for method, path, op in operations(spec):
        bad = _bad_request(op)
        if bad is None:
            continue  # nothing to get wrong: only path parameters, which are free text
        url = path
        for param in op.get("parameters", []):
            if param["in"] == "path":
                url = url.replace("{" + param["name"] + "}", "x")
        auth = worker if path.startswith("/worker/") else admin
        headers = {**auth, **bad.pop("headers", {})}
        r = api.request(method.upper(), url, headers=headers, **bad)
        assert r.status_code == 422, f"{method.upper()} {path}: {r.status_code} {r.text}"
        body = r.json()
        check(spec, op, 422, body)
        assert isinstance(body["detail"], str) and body["code"] == "validation_error"
        assert body["errors"] and all(e["field"] and e["reason"] for e in body["errors"])
        checked.append(f"{method} {path}")
    assert len(checked) >= 25, checked  # nearly every operation takes input


def test_other_errors_validate_too(api: TestClient, spec: dict[str, Any], admin: dict[str, str]) -> None:
    ops = {(m, p): op for m, p, op in operations(spec)}
    create = ops[("post", "/v1/jobs")]
    # 422 from the tool's own input rules, not from pydantic
    r = api.post("/v1/jobs", headers=admin, json={"tool": "sd15-txt2img", "inputs": {"steps": "many"}})
    assert r.status_code == 422
    check(spec, create, 422, r.json())
    # 401, 404 and 409 are documented as 4XX
    r = api.post("/v1/jobs", json={"tool": "sd15-txt2img"})
    assert r.status_code == 401
    check(spec, create, 401, r.json())
    assert r.json()["code"] == "unauthorized"
    r = api.post("/v1/jobs", headers=admin, json={"tool": "nope"})
    assert r.status_code == 404
    check(spec, create, 404, r.json())
    job = api.post("/v1/jobs", headers=admin, json={"tool": "sd15-txt2img", "inputs": {"prompt": "p"}}).json()
    cancel = ops[("post", "/v1/jobs/{job_id}/cancel")]
    assert api.post(f"/v1/jobs/{job['id']}/cancel", headers=admin).status_code == 200
    r = api.post(f"/v1/jobs/{job['id']}/cancel", headers=admin)
    assert r.status_code == 409
    check(spec, cancel, 409, r.json())
    # malformed JSON is a 400 in the same shape
    r = api.post("/v1/jobs", headers={**admin, "Content-Type": "application/json"}, content=b"{")
    assert r.status_code == 400 and r.json()["code"] == "malformed_json"
    check(spec, create, 400, r.json())
    # 503 (tests/api/test_errors_db_outage.py sends real ones) is documented as 5XX, with Retry-After
    listing = ops[("get", "/v1/jobs")]
    assert "Retry-After" in listing["responses"]["5XX"]["headers"]


def test_integer_bounds_are_documented_exactly(spec: dict[str, Any]) -> None:
    """FastAPI writes bounds as floats; 2**63-1 as a float is 2**63, which the API refuses."""
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "integer":
                for key in ("minimum", "maximum"):
                    if key in node:
                        assert isinstance(node[key], int), node
                        found.append(node[key])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    assert 2**63 - 1 in found and 2**63 not in found
