"""Hostile input at the HTTP edge: body sizes, authentication before bodies, failed-auth limits.

`EdgeLimits` is an ASGI middleware that runs before FastAPI reads a request body:

1. A body declared (`Content-Length`) larger than its route's limit is refused with 413 before a
   byte of it is read; a body without a length (chunked) is counted as it is read and refused
   with 413 once it passes the limit.
2. A request with a body to a route that needs an API key or a worker token is authenticated
   first, with the same functions the route's dependencies use: FastAPI reads and parses the
   body before it runs any dependency, so without this a client with no key could make the
   server read and parse megabytes before it is told 401. The check runs when the app first asks
   for the body, by which time FastAPI has chosen the route (`scope["route"]`); a refusal stops
   the read and the middleware answers in the app's place.

`AuthThrottle` slows guessing: each failed authentication spends a token of the client's
(`swarmstation.domain.ratelimit`); a client out of tokens gets 429 with `Retry-After` without its
credential being checked.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from swarmstation.api.errors import problem, render
from swarmstation.config import Settings
from swarmstation.domain.errors import RateLimited, SwarmError
from swarmstation.domain.ratelimit import FailureLimiter

log = logging.getLogger(__name__)

# A multipart upload carries its part headers and boundaries besides the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


# -- failed authentications ------------------------------------------------------------------------
def client_address(request: Request) -> str:
    # The peer's address. Behind a reverse proxy every client shares the proxy's address, so the
    # limit then applies to all of them together; the proxy should rate-limit on its own.
    return request.client.host if request.client else "unknown"


class AuthThrottle:
    """The failure limiter of one replica, behind a lock; touched only when a credential is not in
    the identity cache, never on the fast path of a known key."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._limiter = FailureLimiter(per_minute)
        self._lock = threading.Lock()
        self._clock = clock

    def check(self, request: Request) -> None:
        """429 when this client has failed too often lately."""
        client = client_address(request)
        with self._lock:
            wait = self._limiter.retry_after(client, self._clock())
        if wait is not None:
            raise _too_many(wait)

    def failed(self, request: Request, what: str, secret_hash: str) -> None:
        """Record a failed authentication; logged with the client's address and a few characters
        of the secret's hash (enough to tell repeated attempts apart, nothing to replay)."""
        client = client_address(request)
        with self._lock:
            wait = self._limiter.record_failure(client, self._clock())
        if wait is None:
            log.warning("failed authentication (%s) from %s, hash %s", what, client, secret_hash[:8])
        else:
            log.warning(
                "failed authentication (%s) from %s, hash %s; refusing it for %.0f s",
                what,
                client,
                secret_hash[:8],
                wait,
            )


def _too_many(wait: float) -> RateLimited:
    seconds = max(1, math.ceil(wait))
    return RateLimited(
        f"too many failed authentications from this address; retry in {seconds} s",
        retry_after_seconds=seconds,
    )


# -- body sizes ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BodyLimits:
    json_bytes: int
    upload_bytes: int
    model_bytes: int
    object_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyLimits:
        return cls(
            json_bytes=settings.max_json_body_bytes,
            upload_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
            model_bytes=settings.max_model_bytes,
            object_bytes=settings.max_object_bytes,
        )

    def for_path(self, path: str) -> int:
        """The largest body a request to `path` may carry. Only the routes that take files take
        more than a JSON document."""
        if path.startswith("/objects/"):
            return self.object_bytes
        if path.startswith("/v1/admin/models/upload/"):
            return self.model_bytes
        if path.rstrip("/") == "/v1/uploads":
            return self.upload_bytes
        return self.json_bytes


class _Refused(Exception):
    """Raised from `receive` to stop the app reading a body; the middleware answers instead."""


def _needs(dependant: Dependant, wanted: tuple[Callable[..., Any], ...]) -> Callable[..., Any] | None:
    if dependant.call in wanted:
        return dependant.call
    for sub in dependant.dependencies:
        found = _needs(sub, wanted)
        if found is not None:
            return found
    return None


class EdgeLimits:
    """See the module's docstring. `authenticators` are the dependency functions that identify a
    caller (`current_user`, `current_instance`), each called as `fn(request, app_state)` (awaited
    when it is a coroutine function, else run in a thread) and raising a SwarmError
    (Unauthorized, RateLimited...) to refuse."""

    def __init__(
        self, app: ASGIApp, *, limits: BodyLimits, authenticators: Iterable[Callable[..., Any]]
    ) -> None:
        self.app = app
        self.limits = limits
        self.authenticators = tuple(authenticators)
        self._route_auth: dict[int, Callable[..., Any] | None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.for_path(scope["path"])
        headers = Headers(scope=scope)
        declared_text = headers.get("content-length")
        declared = 0
        if declared_text is not None:
            if not declared_text.strip().isdigit():
                await problem(400, "invalid Content-Length header")(scope, receive, send)
                return
            declared = int(declared_text)
            if declared > limit:
                await _refuse_size(limit)(scope, receive, send)
                return
        if declared == 0 and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body: nothing to count or to hold back
            return
        await self._guarded(scope, receive, send, limit)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        checked = False
        refusal: JSONResponse | None = None
        started = False

        async def guarded_receive() -> Message:
            nonlocal received, checked, refusal
            if not checked:
                # The first read of the body: FastAPI has chosen the route by now (scope["route"])
                # and, for a route with a body parameter, has not yet run its dependencies.
                checked = True
                refusal = await self._authenticate_first(scope)
                if refusal is not None:
                    raise _Refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refusal = _refuse_size(limit)
                    raise _Refused
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refusal is not None and not started:
                return  # the app's own answer to the body it could not read; ours goes instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if refusal is None:
                raise
        if refusal is not None and not started:
            await refusal(scope, receive, send)

    def _authenticator_for(self, route: object) -> Callable[..., Any] | None:
        if not isinstance(route, APIRoute):
            return None
        key = id(route)
        if key not in self._route_auth:
            # Only routes with a body parameter read the body before their dependencies run; the
            # others (raw streams) authenticate first anyway.
            needs_body = bool(route.dependant.body_params)
            self._route_auth[key] = _needs(route.dependant, self.authenticators) if needs_body else None
        return self._route_auth[key]

    async def _authenticate_first(self, scope: Scope) -> JSONResponse | None:
        authenticate = self._authenticator_for(scope.get("route"))
        if authenticate is None:
            return None
        request = Request(scope)  # headers only: the body stays unread
        try:
            if inspect.iscoroutinefunction(authenticate):  # a known caller: no thread at all
                await authenticate(request, scope["app"].state.swarm)
            else:
                await asyncio.to_thread(authenticate, request, scope["app"].state.swarm)
        except SwarmError as exc:
            return render(request, exc)
        except Exception:
            # e.g. the database is down: let the route's own dependency meet the same error, so
            # that it is answered (503) by the handlers every route has.
            return None
        return None


# The middleware answers before FastAPI's exception handlers can, so it renders the API's error
# shape ({"detail", "code"}) itself, with the same functions.
def _refuse_size(limit: int) -> JSONResponse:
    return problem(413, f"request body too large: the limit here is {limit} bytes")
