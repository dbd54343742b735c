"""What every request handler can reach: the app's state, a session, and who is calling."""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, Request
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from swarmstation.api.limits import AuthThrottle
from swarmstation.auth import hash_secret
from swarmstation.config import Settings
from swarmstation.control.auth import session_user
from swarmstation.control.charging import BASIS_TTL_SECONDS, ChargeSettings
from swarmstation.control.loops import ControlLoops
from swarmstation.control.loras import MatcherCache
from swarmstation.control.notify import Notifier
from swarmstation.domain.errors import Forbidden, Gone, Unauthorized
from swarmstation.domain.states import InstanceState
from swarmstation.integrations.comfydeploy.client import ComfyDeployClient
from swarmstation.objectstore.base import ObjectStore
from swarmstation.store import db as store_db
from swarmstation.store.models import ApiKey, Instance, User

# A browser session (control/auth.py): the httpOnly cookie holds its token; the readable cookie
# holds the CSRF token that unsafe requests authenticated by the cookie echo in CSRF_HEADER.
SESSION_COOKIE = "swarm_session"
CSRF_COOKIE = "swarm_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class CsrfRefused(Forbidden):
    code = "csrf_failed"


class TtlCache:
    """A small thread-safe cache of authenticated identities, so that most requests need one
    database transaction instead of two. Entries live `ttl` seconds (a revoked key keeps working
    for at most that long)."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._data: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None or hit[0] < time.monotonic():
                return None
            return hit[1]

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            if len(self._data) >= self.max_entries:
                self._data.clear()
            self._data[key] = (time.monotonic() + self.ttl, value)

    def discard(self, key: str) -> None:
        """Forget `key` now (a rotated or revoked secret must not live on for `ttl`)."""
        with self._lock:
            self._data.pop(key, None)


@dataclass(frozen=True)
class InstanceIdentity:
    """Who a worker token belongs to. Handlers re-read the instance's state in their own
    transaction, and refuse the token when the instance's token has been rotated since
    (`token_hash` differs; empty: not checked)."""

    id: str
    token_hash: str = ""


@dataclass(frozen=True)
class SessionIdentity:
    """A live browser session as the cache keeps it; its expiry is checked on every request."""

    user: User
    session_id: str
    expires_at: datetime
    csrf_hash: str


@dataclass(frozen=True)
class Authentication:
    """How the caller of this request proved who they are (`request.state.auth`)."""

    via: str  # "api_key" | "session"
    session: SessionIdentity | None = None


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ObjectStore
    notifier: Notifier
    loops: ControlLoops
    clock: Callable[[], datetime]
    webhook_key: bytes = b""
    comfydeploy: ComfyDeployClient | None = None
    user_cache: TtlCache = field(default_factory=lambda: TtlCache(ttl=5.0))
    session_cache: TtlCache = field(default_factory=lambda: TtlCache(ttl=5.0))
    instance_cache: TtlCache = field(default_factory=lambda: TtlCache(ttl=3600.0))
    matchers: MatcherCache = field(default_factory=MatcherCache)
    auth_throttle: AuthThrottle = field(default_factory=lambda: AuthThrottle(per_minute=30))
    #: read-only transactions (`read_transaction`); None: `sessions` serves them too
    read_sessions: sessionmaker[Session] | None = None

    @cached_property
    def pricing(self) -> ChargeSettings:
        """What charging obeys, built once from the settings (they do not change while it runs);
        quotes take their cost basis from memory, read at most `BASIS_TTL_SECONDS` ago."""
        return replace(ChargeSettings.from_settings(self.settings), basis_ttl_seconds=BASIS_TTL_SECONDS)


def read_transaction(state: AppState) -> AbstractContextManager[Session]:
    """A transaction for a handler that only reads: on SQLite it takes no write lock and does not
    wait for the writer (store/db.py `make_read_engine`); a write in it fails."""
    return store_db.read_transaction(state.read_sessions or state.sessions)


# The dependencies every request meets are `async def` where their work is in memory: FastAPI runs
# a sync dependency in its thread pool, a hop (a queue put, a wake, a call back into the loop)
# that cost more CPU than the work. What may touch the database still runs in a thread.
async def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.swarm
    return state


State = Annotated[AppState, Depends(app_state)]


def db(state: State) -> Iterator[Session]:
    """One transaction per request: committed when the handler returns, rolled back on error."""
    with state.sessions() as s, s.begin():
        yield s


# scope="function": the commit runs when the handler returns and before the response is sent, so
# a commit that fails becomes the answer (an error) instead of a 200 for a write that never
# happened. The default ("request") scope would commit after the response had gone out.
DB = Annotated[Session, Depends(db, scope="function")]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


async def current_user(request: Request, state: State) -> User:
    """Authenticates in a short transaction of its own, so that long-lived handlers (event
    streams, long polls) hold no database transaction while they wait. An API key wins over a
    session cookie (programs send keys and need no CSRF token). A caller the identity cache
    knows is answered on the event loop; the others are looked up in a worker thread."""
    known = _cached_user(request, state)
    if known is not None:
        return known
    return await anyio.to_thread.run_sync(authenticate_user, request, state)


def _cached_user(request: Request, state: State) -> User | None:
    """The user of a key or session the cache holds (CSRF checked), else None: no I/O."""
    secret = _bearer(request)
    if secret is None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        identity: SessionIdentity | None = state.session_cache.get(hash_secret(token))
        if identity is None or identity.expires_at <= state.clock():
            return None
        if request.method.upper() not in SAFE_METHODS:
            _check_csrf(request, identity)
        request.state.auth = Authentication(via="session", session=identity)
        return identity.user
    cached: User | None = state.user_cache.get(hash_secret(secret))
    if cached is not None:
        request.state.auth = Authentication(via="api_key")
    return cached


def authenticate_user(request: Request, state: AppState) -> User:
    """`current_user`'s work, blocking (it may read the database)."""
    secret = _bearer(request)
    if secret is None:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            return _session_user(request, state, token)
        raise Unauthorized(
            "missing credentials: send 'Authorization: Bearer <key>' or sign in (a session cookie)"
        )
    request.state.auth = Authentication(via="api_key")
    key_hash = hash_secret(secret)
    cached: User | None = state.user_cache.get(key_hash)
    if cached is not None:
        return cached
    state.auth_throttle.check(request)  # only for keys not seen lately: the fast path stays as it is
    with state.sessions() as s, s.begin():
        row = s.execute(
            select(User, ApiKey).join(ApiKey, ApiKey.user_id == User.id).where(ApiKey.key_hash == key_hash)
        ).first()
    if row is None or row[1].revoked_at is not None:
        state.auth_throttle.failed(request, "API key", key_hash)
        raise Unauthorized("invalid or revoked API key")
    state.user_cache.put(key_hash, row[0])
    return row[0]


def _session_user(request: Request, state: State, token: str) -> User:
    token_hash = hash_secret(token)
    now = state.clock()
    identity: SessionIdentity | None = state.session_cache.get(token_hash)
    if identity is None or identity.expires_at <= now:
        state.auth_throttle.check(request)
        with state.sessions() as s, s.begin():
            found = session_user(s, token_hash, now)
        if found is None:
            state.session_cache.discard(token_hash)
            state.auth_throttle.failed(request, "session", token_hash)
            raise Unauthorized("the session has expired or was signed out: sign in again")
        user, row = found
        identity = SessionIdentity(user, row.id, row.expires_at, row.csrf_hash)
        state.session_cache.put(token_hash, identity)
    if request.method.upper() not in SAFE_METHODS:
        _check_csrf(request, identity)
    request.state.auth = Authentication(via="session", session=identity)
    return identity.user


def _check_csrf(request: Request, identity: SessionIdentity) -> None:
    """Double submit, bound to the session: the header must equal the readable cookie (another
    site can send the cookies but cannot read them) and be this session's CSRF token (a cookie
    planted from a sibling domain does not belong to the session)."""
    header = request.headers.get(CSRF_HEADER, "")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not header or not hmac.compare_digest(header, cookie) or hash_secret(header) != identity.csrf_hash:
        raise CsrfRefused(
            f"a request signed in by cookie needs the {CSRF_HEADER} header, equal to the {CSRF_COOKIE} cookie"
        )


CurrentUser = Annotated[User, Depends(current_user)]


async def admin_user(user: CurrentUser) -> User:
    if user.role != "admin":
        raise Forbidden("this needs an admin API key")
    return user


AdminUser = Annotated[User, Depends(admin_user)]


async def current_instance(request: Request, state: State) -> InstanceIdentity:
    """The instance a worker token belongs to: from the identity cache on the event loop, else
    looked up in a worker thread."""
    secret = _bearer(request)
    if secret is None:
        raise Unauthorized("missing worker token")
    cached: InstanceIdentity | None = state.instance_cache.get(hash_secret(secret))
    if cached is not None:
        return cached
    return await anyio.to_thread.run_sync(authenticate_instance, request, state)


def authenticate_instance(request: Request, state: AppState) -> InstanceIdentity:
    """`current_instance`'s work, blocking (it may read the database)."""
    secret = _bearer(request)
    if secret is None:
        raise Unauthorized("missing worker token")
    token_hash = hash_secret(secret)
    cached: InstanceIdentity | None = state.instance_cache.get(token_hash)
    if cached is not None:
        return cached
    state.auth_throttle.check(request)
    with state.sessions() as s, s.begin():
        inst = s.scalar(select(Instance).where(Instance.token_hash == token_hash))
    if inst is None:
        state.auth_throttle.failed(request, "worker token", token_hash)
        raise Unauthorized("invalid worker token")
    if inst.state == InstanceState.TERMINATED:
        raise Gone("this instance has been terminated")
    identity = InstanceIdentity(inst.id, token_hash)
    state.instance_cache.put(token_hash, identity)
    return identity


CurrentInstance = Annotated[InstanceIdentity, Depends(current_instance)]
