"""Every error leaves as one JSON shape, `{"detail": str, "code": str, "errors"?: [...]}`, and that
shape is what the OpenAPI document says for every operation's 4xx and 5xx; bad input is a 4xx,
never a 500; an unavailable database or object store is a 503 with `Retry-After`, logged as one
line (no traceback per request)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from swarmstation.control.jobs import JobNotFound, StaleLease
from swarmstation.domain.states import IllegalTransition
from swarmstation.domain.tools import ToolDefinitionError, ToolInputError
from swarmstation.objectstore.base import BadKey, NotFound, ObjectStoreError

log = logging.getLogger(__name__)

# How long a client should wait before retrying after a 503: a database that restarts or fails
# over is usually back within seconds.
RETRY_AFTER_SECONDS = 5

_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
}


def code_for(status: int) -> str:
    if status in _CODES:
        return _CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


class ApiError(HTTPException):
    """An HTTPException with a stable machine-readable `code` of its own."""

    def __init__(self, status_code: int, detail: str, code: str, headers: dict[str, str] | None = None):
        super().__init__(status_code, detail, headers=headers)
        self.code = code


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc if p != "body") or "body"


def problem(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail, "code": code or code_for(status)}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers)


def _unavailable(request: Request, code: str, what: str, exc: Exception) -> JSONResponse:
    # One line per request and no traceback: during an outage every request fails the same way,
    # and the message is all an operator needs (the driver's text, never the connection URL).
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    log.warning(
        "%s unavailable on %s %s: %s: %s",
        what,
        request.method,
        request.url.path,
        type(exc).__name__,
        reason[0] if reason else "",
    )
    return problem(
        503,
        f"the {what} is unavailable; retry in a few seconds",
        code=code,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def database_unavailable(exc: BaseException) -> bool:
    """Whether a database error means "cannot reach the database now" rather than a bad query."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                reason = e.get("ctx", {}).get("error", "invalid JSON")
                return problem(400, f"malformed JSON body: {reason}", code="malformed_json")
            errors.append({"field": _field(e.get("loc", ())), "reason": str(e.get("msg", "invalid"))})
        summary = "; ".join(f"{x['field']}: {x['reason']}" for x in errors)
        return problem(422, summary or "invalid request", code="validation_error", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code < 200 or exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)  # no body allowed
        code = getattr(exc, "code", None)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return problem(exc.status_code, detail, code=code, headers=dict(exc.headers) if exc.headers else None)

    @app.exception_handler(ToolInputError)
    async def _tool_input(_: Request, exc: ToolInputError) -> JSONResponse:
        field = f"inputs.{exc.field}" if exc.field else "inputs"
        return problem(
            422,
            f"{field}: {exc.reason}",
            code="invalid_input",
            errors=[{"field": field, "reason": exc.reason}],
        )

    @app.exception_handler(ToolDefinitionError)
    async def _tool_def(_: Request, exc: ToolDefinitionError) -> JSONResponse:
        return problem(
            422, str(exc), code="invalid_tool", errors=[{"field": exc.field, "reason": exc.reason}]
        )

    @app.exception_handler(StaleLease)
    async def _stale(_: Request, exc: StaleLease) -> JSONResponse:
        return problem(409, str(exc), code="stale_lease")

    @app.exception_handler(JobNotFound)
    async def _missing(_: Request, exc: JobNotFound) -> JSONResponse:
        return problem(404, f"job {exc} not found")

    @app.exception_handler(IllegalTransition)
    async def _illegal(_: Request, exc: IllegalTransition) -> JSONResponse:
        return problem(409, str(exc), code="illegal_transition")

    @app.exception_handler(BadKey)
    async def _bad_key(_: Request, exc: BadKey) -> JSONResponse:
        return problem(400, str(exc), code="bad_object_key")

    @app.exception_handler(ObjectStoreError)
    async def _object_store(request: Request, exc: ObjectStoreError) -> JSONResponse:
        if isinstance(exc, NotFound):
            return problem(404, f"object {exc} not found in the object store")
        return _unavailable(request, "object_store_unavailable", "object store", exc)

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        if database_unavailable(exc):
            return _unavailable(request, "database_unavailable", "database", exc)
        if isinstance(exc, IntegrityError):
            # e.g. two requests creating the same name at once: the loser's commit fails here.
            log.warning("conflict on %s %s: %s", request.method, request.url.path, type(exc.orig).__name__)
            return problem(409, "the request conflicts with a concurrent change; retry it", code="conflict")
        if isinstance(exc, DataError):
            log.warning("value refused by the database on %s %s", request.method, request.url.path)
            return problem(422, "a value is out of range for the database", code="value_out_of_range")
        log.exception("database error on %s %s", request.method, request.url.path)
        return problem(500, "internal error; the server log has the details")

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(request: Request, exc: PoolTimeout) -> JSONResponse:
        return _unavailable(request, "database_unavailable", "database", exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal error; the server log has the details")

    document_errors(app)


# -- the OpenAPI document ------------------------------------------------------------------------
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "description": "Every error response: a readable message, a stable code, and for invalid "
    "input the fields at fault.",
    "required": ["detail", "code"],
    "properties": {
        "detail": {"type": "string", "title": "Detail", "description": "What went wrong, for people"},
        "code": {
            "type": "string",
            "title": "Code",
            "description": "Stable, for programs: e.g. validation_error, not_found, "
            "database_unavailable, object_store_unavailable",
        },
        "errors": {
            "type": "array",
            "title": "Errors",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {
                    "field": {"type": "string", "title": "Field"},
                    "reason": {"type": "string", "title": "Reason"},
                },
            },
        },
    },
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_RETRY_AFTER_HEADER = {
    "description": "Seconds to wait before retrying (with 503)",
    "schema": {"type": "integer"},
}


def _error_response(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ERROR_REF}},
    }
    if headers:
        response["headers"] = headers
    return response


def _exact_integer_bounds(node: Any) -> None:
    """FastAPI's OpenAPI models keep `minimum`/`maximum` as floats, which turns the 64-bit bound
    2**63-1 into 2**63 (a number the API refuses). Integer schemas get their exact bounds back."""
    if isinstance(node, list):
        for item in node:
            _exact_integer_bounds(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "integer":
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            value = node.get(key)
            if isinstance(value, float) and value.is_integer():
                exact = int(value)
                if exact == 2**63:
                    exact = 2**63 - 1
                node[key] = exact
    for value in node.values():
        _exact_integer_bounds(value)


def document_errors(app: FastAPI) -> None:
    """Every operation documents the one error shape for its 422, any other 4xx and any 5xx
    (503 with `Retry-After`), in place of FastAPI's HTTPValidationError, which is not what this
    API sends."""
    fastapi_openapi: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = fastapi_openapi()  # FastAPI's own document, cached on the app; amended in place
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                responses = operation["responses"]
                responses["422"] = _error_response("Invalid input (the fields at fault are in `errors`)")
                responses["4XX"] = _error_response("Refused: a readable `detail` and a stable `code`")
                responses["5XX"] = _error_response(
                    "Failed on our side; 503 when a dependency is unavailable (retry after `Retry-After`)",
                    headers={"Retry-After": _RETRY_AFTER_HEADER},
                )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Error"] = ERROR_SCHEMA
        for unused in ("HTTPValidationError", "ValidationError"):
            if f"#/components/schemas/{unused}" not in json.dumps(schema):
                components.pop(unused, None)
        _exact_integer_bounds(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
