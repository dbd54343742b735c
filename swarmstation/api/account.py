"""Credits over HTTP: a user's account and ledger, and the admin's grants (control/ledger.py does
the work; domain/credits.py describes the model)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, Field, StrictInt, field_validator

from swarmstation.api.deps import DB, AdminUser, CurrentUser, State
from swarmstation.api.schemas import UserOut
from swarmstation.control import ledger
from swarmstation.domain.credits import MAX_CREDITS, EntryKind
from swarmstation.domain.errors import InvalidInput, NotFound
from swarmstation.store import queries
from swarmstation.store.models import LedgerEntry, User

router = APIRouter(tags=["account"])

MAX_PAGE = 500


class GrantKeyReused(InvalidInput):
    """An admin's Idempotency-Key sent again with another grant (as for jobs: a 422)."""

    code = "idempotency_key_reused"


# -- what the API returns -------------------------------------------------------------------------
class AccountOut(BaseModel):
    user: UserOut
    balance: int = Field(description="Credits owned, held ones included")
    held: int = Field(description="Credits reserved by runs not yet settled")
    available: int = Field(description="balance - held: what a new run may hold")
    credits_per_usd: int = Field(description="What $1 buys (SWARMSTATION_CREDITS_PER_USD)")


class EntryOut(BaseModel):
    id: int
    kind: EntryKind
    amount: int = Field(description="Change to the balance")
    held_change: int = Field(description="Change to the held credits")
    balance_after: int
    held_after: int
    ref_type: str = Field(description="What caused it: job, deposit, admin, lora, ...")
    ref_id: str
    hold_id: str | None
    actor_id: str | None = Field(description="The admin who granted or adjusted")
    reason: str
    created_at: datetime


class LedgerPage(BaseModel):
    entries: list[EntryOut] = Field(description="Newest first")
    next_before: int | None = Field(description="Pass as ?before= for the next page; null: no more")


class CreditGrant(BaseModel):
    """What the admin sends: a positive amount grants, a negative one adjusts."""

    amount: StrictInt = Field(ge=-MAX_CREDITS, le=MAX_CREDITS, description="Credits; not 0")
    reason: str = Field(min_length=1, max_length=500)

    @field_validator("amount")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must not be 0")
        return value

    @field_validator("reason")
    @classmethod
    def _readable(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must say why")
        return value.strip()


class CreditGranted(BaseModel):
    entry: EntryOut
    balance: int
    held: int
    available: int


# -- helpers --------------------------------------------------------------------------------------
def _entry_out(e: LedgerEntry) -> EntryOut:
    return EntryOut(
        id=e.id,
        kind=e.kind,
        amount=e.amount,
        held_change=e.held_change,
        balance_after=e.balance_after,
        held_after=e.held_after,
        ref_type=e.ref_type,
        ref_id=e.ref_id,
        hold_id=e.hold_id,
        actor_id=e.actor_id,
        reason=e.reason,
        created_at=e.created_at,
    )


def _account_out(s: DB, user: User, state: State) -> AccountOut:
    b = ledger.balance(s, user.id)
    return AccountOut(
        user=UserOut(id=user.id, name=user.name, role=user.role, created_at=user.created_at),
        balance=b.balance,
        held=b.held,
        available=b.available,
        credits_per_usd=state.settings.credits_per_usd,
    )


def _page(s: DB, user: User, limit: int, before: int | None) -> LedgerPage:
    rows = ledger.entries(s, user.id, limit=limit + 1, before=before)
    more = len(rows) > limit
    rows = rows[:limit]
    return LedgerPage(entries=[_entry_out(e) for e in rows], next_before=rows[-1].id if more else None)


def _user(s: DB, ident: str) -> User:
    user = queries.find_user_by_id_or_name(s, ident)
    if user is None:
        raise NotFound(f"user '{ident}' not found")
    return user


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Entries per page")]
Before = Annotated[int | None, Query(ge=1, le=2**63 - 1, description="Entries older than this id")]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[!-~]+$",
        description="Printable ASCII, no spaces, at most 255 characters (as on POST /v1/jobs). A retry "
        "with the same key and body answers the first grant again (no second entry); the same key "
        "with another body is a 422",
    ),
]


# -- the user's own -------------------------------------------------------------------------------
@router.get("/v1/account", response_model=AccountOut)
def get_account(s: DB, user: CurrentUser, state: State) -> AccountOut:
    return _account_out(s, user, state)


@router.get("/v1/account/ledger", response_model=LedgerPage)
def get_ledger(s: DB, user: CurrentUser, limit: Limit = 50, before: Before = None) -> LedgerPage:
    return _page(s, user, limit, before)


# -- admin ----------------------------------------------------------------------------------------
@router.get("/v1/admin/users/{user}/account", response_model=AccountOut, tags=["admin"])
def admin_account(user: str, s: DB, _: AdminUser, state: State) -> AccountOut:
    return _account_out(s, _user(s, user), state)


@router.get("/v1/admin/users/{user}/ledger", response_model=LedgerPage, tags=["admin"])
def admin_ledger(user: str, s: DB, _: AdminUser, limit: Limit = 50, before: Before = None) -> LedgerPage:
    return _page(s, _user(s, user), limit, before)


@router.post("/v1/admin/users/{user}/credits", response_model=CreditGranted, status_code=201, tags=["admin"])
def grant_credits(
    user: str,
    body: CreditGrant,
    s: DB,
    admin: AdminUser,
    state: State,
    idempotency_key: IdempotencyKeyHeader = None,
) -> CreditGranted:
    """Grant credits (or, negative, take them back) with an entry naming the admin."""
    limit = state.settings.max_credit_grant
    if abs(body.amount) > limit:
        raise InvalidInput.at("amount", f"at most {limit} credits at once (SWARMSTATION_MAX_CREDIT_GRANT)")
    target = _user(s, user)
    # The admin's key, in the admin's namespace: two admins' keys never collide. Hashed, so that
    # a key of the full 255 characters fits the ledger's key column with the prefix.
    client_key = hashlib.sha256(idempotency_key.encode()).hexdigest() if idempotency_key else uuid.uuid4()
    key = f"admin-credits:{admin.id}:{client_key}"
    try:
        entry = ledger.grant(
            s,
            user_id=target.id,
            amount=body.amount,
            reason=body.reason,
            actor_id=admin.id,
            key=key,
            now=state.clock(),
        )
    except ledger.LedgerKeyReused as exc:
        raise GrantKeyReused(
            "Idempotency-Key: already used for a different grant; send a new key for a new grant"
        ) from exc
    b = ledger.balance(s, target.id)
    return CreditGranted(entry=_entry_out(entry), balance=b.balance, held=b.held, available=b.available)


class VerifyOut(BaseModel):
    ok: bool
    problems: list[str] = Field(description="Empty: every balance equals the sum of its entries")


@router.get("/v1/admin/credits/verify", response_model=VerifyOut, tags=["admin"])
def verify_ledger(s: DB, _: AdminUser) -> VerifyOut:
    """Check the books: balances and held credits against their entries, holds against theirs."""
    problems = ledger.verify(s)
    return VerifyOut(ok=not problems, problems=problems)
