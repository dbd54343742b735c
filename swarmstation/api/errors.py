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

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from swarmstation.domain.errors import (
    DatabaseUnavailable,
    InvalidInput,
    RateLimited,
    SwarmError,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger(__name__)

# Codes for errors FastAPI and Starlette raise themselves (unknown routes, wrong methods); ours
# carry their own code (swarmstation.domain.errors).
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


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc if p != "body") or "body"


def problem(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    # `extra`: an error's own fields beside these (InsufficientCredits: required, available)
    body: dict[str, Any] = {**(extra or {}), "detail": detail, "code": code or code_for(status)}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers)


def _unavailable(request: Request, exc: Unavailable, cause: BaseException) -> JSONResponse:
    # One line per request and no traceback: during an outage every request fails the same way,
    # and the message is all an operator needs (the driver's text, never the connection URL).
    # The client gets a generic message: the cause may name internal hosts.
    reason = str(getattr(cause, "orig", None) or cause).strip().splitlines()
    log.warning(
        "%s unavailable on %s %s: %s: %s",
        exc.what,
        request.method,
        request.url.path,
        type(cause).__name__,
        reason[0] if reason else "",
    )
    return problem(
        exc.status_hint,
        f"the {exc.what} is unavailable; retry in a few seconds",
        code=exc.code,
        headers={"Retry-After": str(exc.retry_after_seconds)},
    )


def render(request: Request, exc: SwarmError) -> JSONResponse:
    """The response for any error of the tree: its code and status come from its class (and so
    along its MRO: a subclass that sets neither answers as its family does)."""
    if isinstance(exc, Unavailable):
        return _unavailable(request, exc, exc.__cause__ or exc)
    if exc.status_hint >= 500:
        log.error("%s on %s %s: %s", exc.code, request.method, request.url.path, exc.detail)
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RateLimited) and exc.retry_after_seconds is not None:
        headers["Retry-After"] = str(exc.retry_after_seconds)
    errors = None
    if isinstance(exc, InvalidInput) and exc.errors:
        errors = [{"field": e.field, "reason": e.reason} for e in exc.errors]
    extra = getattr(exc, "extra_body", None)  # a class may add fields to its body (a dict)
    return problem(
        exc.status_hint,
        exc.detail,
        code=exc.code,
        errors=errors,
        headers=headers or None,
        extra=extra if isinstance(extra, dict) else None,
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
        # Raised by the framework itself (no route, wrong method); our code raises SwarmError.
        if exc.status_code < 200 or exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)  # no body allowed
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return problem(exc.status_code, detail, headers=dict(exc.headers) if exc.headers else None)

    # Starlette picks the handler along the exception's MRO, so this one serves the whole tree.
    @app.exception_handler(SwarmError)
    async def _swarm(request: Request, exc: SwarmError) -> JSONResponse:
        return render(request, exc)

    # SQLAlchemy's errors enter here, at the edge: an unreachable database is DatabaseUnavailable.
    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        if database_unavailable(exc):
            return _unavailable(request, DatabaseUnavailable(), exc)
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
        return _unavailable(request, DatabaseUnavailable(), exc)

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
