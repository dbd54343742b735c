"""Sign-in under /v1/auth: a nonce, Sign-In with Ethereum, the session, sign-out.

The browser asks for a nonce, has its wallet sign an EIP-4361 message carrying it (personal_sign),
and posts message and signature; a valid signature starts a session: an httpOnly cookie with
the session's token and a readable cookie with its CSRF token, which unsafe requests echo in
`X-CSRF-Token` (api/deps.py checks both). The checks are in domain/siwe.py and control/auth.py.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from swarmstation.api.deps import (
    CSRF_COOKIE,
    DB,
    SESSION_COOKIE,
    Authentication,
    CurrentUser,
    State,
)
from swarmstation.auth import hash_secret
from swarmstation.control import auth as auth_ops
from swarmstation.domain.siwe import MAX_MESSAGE_CHARS, MAX_SIGNATURE_BYTES, SiweClaim, SiweRefused
from swarmstation.store.db import transaction
from swarmstation.store.models import BrowserSession, User

router = APIRouter(prefix="/v1/auth", tags=["auth"])


# -- what the API receives and returns -----------------------------------------------------------
class SiweIn(BaseModel):
    """A signed EIP-4361 message: the text exactly as the wallet signed it, and the signature."""

    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    signature: str = Field(
        min_length=1, max_length=2 + 2 * MAX_SIGNATURE_BYTES, description="0x-prefixed hex"
    )


class NonceOut(BaseModel):
    nonce: str
    issued_at: datetime
    expires_at: datetime
    # What the message must say, so that a client can build it without guessing.
    domain: str
    uri: str
    chain_ids: list[int]


class SessionUser(BaseModel):
    id: str
    name: str
    role: str


class SignInOut(BaseModel):
    user: SessionUser
    address: str
    created: bool = Field(description="The sign-in created this user (open sign-up)")
    expires_at: datetime
    csrf_token: str = Field(description="Also in the swarm_csrf cookie; send it as X-CSRF-Token")


class WhoAmI(BaseModel):
    user: SessionUser
    via: str = Field(description="api_key or session")
    address: str | None = Field(None, description="The wallet this session signed in with")
    expires_at: datetime | None = None
    wallets: list[str]


def session_user_out(user: User) -> SessionUser:
    return SessionUser(id=user.id, name=user.name, role=user.role)


def verified(request: Request, state: State, body: SiweIn) -> SiweClaim:
    """The checked claim of a signed message (no database access). A refused signature counts as
    a failed authentication for the client's rate limit."""
    state.auth_throttle.check(request)
    config = auth_ops.siwe_config(state.settings)
    try:
        return auth_ops.verified_claim(config, body.message, body.signature, state.clock())
    except SiweRefused:
        state.auth_throttle.failed(request, "SIWE", hash_secret(body.message))
        raise


def _secure(request: Request, state: State) -> bool:
    return request.url.scheme == "https" or state.settings.base_url.startswith("https://")


# -- routes -------------------------------------------------------------------------------------------
@router.get("/nonce", response_model=NonceOut)
def nonce(s: DB, state: State) -> NonceOut:
    """A fresh nonce for one SIWE message: single use, valid for SWARMSTATION_SIWE_NONCE_TTL_SECONDS."""
    config = auth_ops.siwe_config(state.settings)
    row = auth_ops.issue_nonce(s, config, state.clock())
    expectation = config.expectation
    return NonceOut(
        nonce=row.nonce,
        issued_at=row.created_at,
        expires_at=row.expires_at,
        domain=expectation.domain,
        uri=f"{expectation.scheme}://{expectation.domain}",
        chain_ids=sorted(expectation.chain_ids),
    )


@router.post("/siwe", response_model=SignInOut)
def sign_in_with_ethereum(
    body: SiweIn, request: Request, response: Response, s: DB, state: State
) -> SignInOut:
    """Verify a signed EIP-4361 message and start a browser session (cookies)."""
    claim = verified(request, state, body)
    config = auth_ops.siwe_config(state.settings)
    now = state.clock()
    signed_in = auth_ops.sign_in(s, config, claim, now)
    new = auth_ops.start_session(s, signed_in.user, address=claim.address, now=now, ttl=config.session_ttl)
    max_age = int(config.session_ttl.total_seconds())
    secure = _secure(request, state)
    response.set_cookie(
        SESSION_COOKIE, new.token, max_age=max_age, path="/", secure=secure, httponly=True, samesite="lax"
    )
    # Readable by the page's script (that is the point); useless to another site, which cannot.
    response.set_cookie(
        CSRF_COOKIE, new.csrf_token, max_age=max_age, path="/", secure=secure, httponly=False, samesite="lax"
    )
    return SignInOut(
        user=session_user_out(signed_in.user),
        address=claim.address,
        created=signed_in.created,
        expires_at=new.row.expires_at,
        csrf_token=new.csrf_token,
    )


@router.get("/session", response_model=WhoAmI)
def who_am_i(request: Request, user: CurrentUser, s: DB) -> WhoAmI:
    auth: Authentication = request.state.auth
    wallets = [w.address for w in auth_ops.wallets_of(s, user)]
    if auth.session is None:
        return WhoAmI(user=session_user_out(user), via=auth.via, wallets=wallets)
    row = s.get(BrowserSession, auth.session.session_id)
    return WhoAmI(
        user=session_user_out(user),
        via=auth.via,
        address=row.address if row is not None else None,
        expires_at=auth.session.expires_at,
        wallets=wallets,
    )


@router.post("/signout", status_code=204)
def sign_out(request: Request, response: Response, _: CurrentUser, state: State) -> None:
    """End this browser session: its cookie stops working at once on this replica, and on the
    others when their identity cache forgets it (seconds). With an API key there is nothing to end."""
    auth: Authentication = request.state.auth
    if auth.session is not None:
        # Committed before the cached identity is dropped (see api/keys.py's revoke_key).
        with transaction(state.sessions) as s:
            auth_ops.end_session(s, auth.session.session_id, state.clock())
        state.session_cache.discard(hash_secret(request.cookies.get(SESSION_COOKIE, "")))
    secure = _secure(request, state)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="lax")
    response.delete_cookie(CSRF_COOKIE, path="/", secure=secure, httponly=False, samesite="lax")
