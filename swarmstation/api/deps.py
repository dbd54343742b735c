"""What every request handler can reach: the app's state, a session, and who is calling."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from swarmstation.auth import hash_secret
from swarmstation.config import Settings
from swarmstation.control.loops import ControlLoops
from swarmstation.control.notify import Notifier
from swarmstation.domain.states import InstanceState
from swarmstation.objectstore.local import LocalObjectStore
from swarmstation.store.models import ApiKey, Instance, User


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: LocalObjectStore
    notifier: Notifier
    loops: ControlLoops
    clock: Callable[[], datetime]


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.swarm
    return state


State = Annotated[AppState, Depends(app_state)]


def db(state: State) -> Iterator[Session]:
    """One transaction per request: committed when the handler returns, rolled back on error."""
    with state.sessions() as s, s.begin():
        yield s


DB = Annotated[Session, Depends(db)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def current_user(request: Request, state: State) -> User:
    """Authenticates in a short transaction of its own, so that long-lived handlers (event
    streams, long polls) hold no database transaction while they wait."""
    secret = _bearer(request)
    if secret is None:
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    with state.sessions() as s, s.begin():
        row = s.execute(
            select(User, ApiKey)
            .join(ApiKey, ApiKey.user_id == User.id)
            .where(ApiKey.key_hash == hash_secret(secret))
        ).first()
    if row is None or row[1].revoked_at is not None:
        raise _unauthorized("invalid or revoked API key")
    return row[0]


CurrentUser = Annotated[User, Depends(current_user)]


def admin_user(user: CurrentUser) -> User:
    if user.role != "admin":
        raise HTTPException(403, "this needs an admin API key")
    return user


AdminUser = Annotated[User, Depends(admin_user)]


def current_instance(request: Request, state: State) -> Instance:
    """A detached snapshot of the calling instance; handlers re-read it where state matters."""
    secret = _bearer(request)
    if secret is None:
        raise _unauthorized("missing worker token")
    with state.sessions() as s, s.begin():
        inst = s.scalar(select(Instance).where(Instance.token_hash == hash_secret(secret)))
    if inst is None:
        raise _unauthorized("invalid worker token")
    if inst.state == InstanceState.TERMINATED:
        raise HTTPException(410, "this instance has been terminated")
    return inst


CurrentInstance = Annotated[Instance, Depends(current_instance)]
