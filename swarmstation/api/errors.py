"""Every error leaves as JSON with a readable `detail`; bad input is a 4xx, never a 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from swarmstation.control.jobs import JobNotFound, StaleLease
from swarmstation.domain.states import IllegalTransition
from swarmstation.domain.tools import ToolDefinitionError, ToolInputError
from swarmstation.objectstore.base import BadKey

log = logging.getLogger(__name__)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc if p != "body") or "body"


def _problem(status: int, detail: str, errors: list[dict[str, str]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                return _problem(400, f"malformed JSON body: {e.get('ctx', {}).get('error', 'invalid JSON')}")
            errors.append({"field": _field(e.get("loc", ())), "reason": str(e.get("msg", "invalid"))})
        summary = "; ".join(f"{x['field']}: {x['reason']}" for x in errors)
        return _problem(422, summary or "invalid request", errors)

    @app.exception_handler(ToolInputError)
    async def _tool_input(_: Request, exc: ToolInputError) -> JSONResponse:
        field = f"inputs.{exc.field}" if exc.field else "inputs"
        return _problem(422, f"{field}: {exc.reason}", [{"field": field, "reason": exc.reason}])

    @app.exception_handler(ToolDefinitionError)
    async def _tool_def(_: Request, exc: ToolDefinitionError) -> JSONResponse:
        return _problem(422, str(exc), [{"field": exc.field, "reason": exc.reason}])

    @app.exception_handler(StaleLease)
    async def _stale(_: Request, exc: StaleLease) -> JSONResponse:
        return _problem(409, str(exc))

    @app.exception_handler(JobNotFound)
    async def _missing(_: Request, exc: JobNotFound) -> JSONResponse:
        return _problem(404, f"job {exc} not found")

    @app.exception_handler(IllegalTransition)
    async def _illegal(_: Request, exc: IllegalTransition) -> JSONResponse:
        return _problem(409, str(exc))

    @app.exception_handler(BadKey)
    async def _bad_key(_: Request, exc: BadKey) -> JSONResponse:
        return _problem(400, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _problem(500, "internal error; the server log has the details")
