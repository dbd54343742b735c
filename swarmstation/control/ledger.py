"""The ledger: every movement of credits, as append-only entries with unique idempotency keys.

domain/credits.py describes the model (balance, held, available; what each entry kind changes).
These functions are the only code that writes `accounts`, `holds` and `ledger_entries`. Each runs
inside the caller's transaction (`s`) and commits nothing itself.

Theory of operation
-------------------
- **Serialised per account.** Every movement first locks the accounts it touches
  (`SELECT ... FOR UPDATE` on PostgreSQL, in user-id order so two captures paying each other's
  royalties cannot deadlock; SQLite transactions are already serialised by `BEGIN IMMEDIATE`).
  So of two concurrent holds that together exceed the available credits, the second waits for
  the first and then sees what is left: exactly one is refused with `InsufficientCredits`.
- **Idempotent.** Every entry has a unique key chosen by the caller (`job:<id>:hold`, a client's
  `Idempotency-Key`, ...). The key is looked up *after* the lock, so a retry running beside its
  original sees the original's entry once it commits. Replaying a key with the same parameters
  returns the earlier result and writes nothing; with other parameters it is refused
  (`LedgerKeyReused`, 409). A capture writes its release and royalty entries under keys derived
  from its own (`<key>:release`, `<key>:royalty:<n>`).
- **Append-only.** Nothing here updates or deletes an entry; an account row and a hold's
  settlement are updated with the entries that explain them, and `verify` checks that they agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from swarmstation.domain.credits import (
    HOLD,
    MAX_CREDITS,
    EntryKind,
    HoldState,
    HoldTrigger,
    InsufficientCredits,
    settle,
)
from swarmstation.domain.errors import Conflict, InvalidInput, NotFound
from swarmstation.store.models import Account, Hold, LedgerEntry, User

__all__ = [
    "Balance",
    "LedgerKeyReused",
    "Royalty",
    "balance",
    "capture",
    "capture_part",
    "credit_deposit",
    "entries",
    "grant",
    "place_hold",
    "release",
    "settle_rest",
    "verify",
    "welcome",
]

MAX_KEY_LENGTH = 255


class LedgerKeyReused(Conflict):
    """An idempotency key that already recorded a different movement."""

    code = "idempotency_key_reused"

    def __init__(self, key: str) -> None:
        super().__init__("idempotency key already used for a different movement of credits")
        self.key = key


@dataclass(frozen=True)
class Balance:
    balance: int
    held: int
    available: int


@dataclass(frozen=True)
class Royalty:
    """An author's share of a capture: `amount` credits to `user_id`, for `ref_type`/`ref_id`
    (e.g. "lora", the LoRA's slug). Paid out of the captured amount, not on top of it."""

    user_id: str
    amount: int
    ref_type: str
    ref_id: str


# -- reading --------------------------------------------------------------------------------------


def balance(s: Session, user_id: str) -> Balance:
    """The user's credits now (0 for a user that never had any)."""
    account = s.get(Account, user_id)
    if account is None:
        return Balance(0, 0, 0)
    return Balance(account.balance, account.held, account.balance - account.held)


def entries(s: Session, user_id: str, *, limit: int, before: int | None = None) -> list[LedgerEntry]:
    """The user's entries, newest first; `before` (an entry id) continues a page."""
    query = select(LedgerEntry).where(LedgerEntry.user_id == user_id)
    if before is not None:
        query = query.where(LedgerEntry.id < before)
    return list(s.scalars(query.order_by(LedgerEntry.id.desc()).limit(limit)))


# -- writing --------------------------------------------------------------------------------------


def grant(
    s: Session, *, user_id: str, amount: int, reason: str, actor_id: str | None, key: str, now: datetime
) -> LedgerEntry:
    """Give `amount` credits (a grant), or take them back when negative (an adjustment). An
    adjustment never takes credits that are held or that the user does not have."""
    _check_amount(amount, allow_negative=True)
    if amount == 0:
        raise InvalidInput.at("amount", "must not be 0")
    _check_key(key)
    kind = EntryKind.GRANT if amount > 0 else EntryKind.ADJUSTMENT
    account = _lock_accounts(s, [user_id], now)[user_id]
    earlier = _entry_by_key(s, key)
    if earlier is not None:
        _same(earlier, key, user_id=user_id, kind=kind, amount=amount, reason=reason, actor_id=actor_id)
        return earlier
    available = account.balance - account.held
    if available + amount < 0:
        raise InvalidInput.at(
            "amount", f"an adjustment of {amount} would leave {available + amount} available; {available} are"
        )
    return _append(
        s,
        account,
        kind=kind,
        amount=amount,
        ref_type="admin" if actor_id else "system",
        ref_id=actor_id or "",
        actor_id=actor_id,
        reason=reason,
        key=key,
        now=now,
    )


def welcome(s: Session, *, user_id: str, amount: int, now: datetime) -> LedgerEntry | None:
    """A new user's welcome grant (SWARMSTATION_WELCOME_CREDITS; none when 0). Call it wherever a
    user is created; its key is the user's, so it is granted once."""
    if amount == 0:
        return None
    return grant(
        s,
        user_id=user_id,
        amount=amount,
        reason="welcome credits",
        actor_id=None,
        key=f"welcome:{user_id}",
        now=now,
    )


def credit_deposit(
    s: Session, *, user_id: str, amount: int, deposit_id: str, key: str, now: datetime
) -> LedgerEntry:
    """Credit a confirmed deposit."""
    _check_amount(amount)
    if amount == 0:
        raise InvalidInput.at("amount", "a deposit must be positive")
    _check_key(key)
    account = _lock_accounts(s, [user_id], now)[user_id]
    earlier = _entry_by_key(s, key)
    if earlier is not None:
        _same(earlier, key, user_id=user_id, kind=EntryKind.DEPOSIT, amount=amount, ref_id=deposit_id)
        return earlier
    return _append(
        s,
        account,
        kind=EntryKind.DEPOSIT,
        amount=amount,
        ref_type="deposit",
        ref_id=deposit_id,
        key=key,
        now=now,
    )


def place_hold(
    s: Session, *, user_id: str, amount: int, ref_type: str, ref_id: str, key: str, now: datetime
) -> Hold:
    """Reserve `amount` credits for `ref_type`/`ref_id` (a job, a run). Raises
    `InsufficientCredits` when fewer are available, writing nothing."""
    _check_amount(amount)
    _check_key(key)
    account = _lock_accounts(s, [user_id], now)[user_id]
    earlier = _entry_by_key(s, key)
    if earlier is not None:
        _same(earlier, key, user_id=user_id, kind=EntryKind.HOLD, held_change=amount, ref_id=ref_id)
        hold = s.get(Hold, earlier.hold_id)
        assert hold is not None  # the entry's foreign key
        if hold.ref_type != ref_type:
            raise LedgerKeyReused(key)
        return hold
    available = account.balance - account.held
    if amount > available:
        raise InsufficientCredits(required=amount, available=available)
    hold = Hold(
        id=str(uuid.uuid4()),
        user_id=user_id,
        amount=amount,
        captured=0,
        state=HOLD.initial,
        ref_type=ref_type,
        ref_id=ref_id,
        created_at=now,
        settled_at=None,
    )
    s.add(hold)
    s.flush()
    _append(
        s,
        account,
        kind=EntryKind.HOLD,
        amount=0,
        held_change=amount,
        hold_id=hold.id,
        ref_type=ref_type,
        ref_id=ref_id,
        key=key,
        now=now,
    )
    return hold


def capture(
    s: Session,
    *,
    hold_id: str,
    amount: int,
    key: str,
    now: datetime,
    royalties: Sequence[Royalty] = (),
) -> list[LedgerEntry]:
    """Charge `amount` (at most the hold) and release the rest; credit `royalties` to their
    authors out of the charge. Returns the capture entry, then the release (if anything was left)
    and the royalty entries."""
    _check_amount(amount)
    _check_key(key)
    paid = _checked_royalties(amount, royalties)
    hold = _hold_owner(s, hold_id)
    accounts = _lock_accounts(s, [hold.user_id, *(r.user_id for r in paid)], now)
    earlier = _entry_by_key(s, key)
    if earlier is not None:
        _same(earlier, key, user_id=hold.user_id, kind=EntryKind.CAPTURE, amount=-amount, hold_id=hold_id)
        return _replayed_capture(s, earlier, key, paid)
    hold = _hold(s, hold_id, lock=True)
    if hold.captured:
        # a run's hold, captured in parts: only settle_rest closes it
        raise InvalidInput.at("hold_id", "this hold is captured in parts; settle_rest closes it")
    settlement = settle(hold.amount, amount)
    HOLD.apply(hold, HoldTrigger.CAPTURE)  # a hold settled before: IllegalTransition, nothing written
    hold.captured = settlement.captured
    hold.settled_at = now
    payer = accounts[hold.user_id]
    written = [
        _append(
            s,
            payer,
            kind=EntryKind.CAPTURE,
            amount=-settlement.captured,
            held_change=-settlement.captured,
            hold_id=hold.id,
            ref_type=hold.ref_type,
            ref_id=hold.ref_id,
            key=key,
            now=now,
        )
    ]
    if settlement.released:
        written.append(
            _append(
                s,
                payer,
                kind=EntryKind.RELEASE,
                amount=0,
                held_change=-settlement.released,
                hold_id=hold.id,
                ref_type=hold.ref_type,
                ref_id=hold.ref_id,
                key=f"{key}:release",
                now=now,
            )
        )
    written.extend(_pay_royalties(s, accounts, hold, paid, key=key, now=now))
    return written


def release(s: Session, *, hold_id: str, key: str, now: datetime) -> LedgerEntry | None:
    """Give all of an open hold back (not charged). None when the hold was already settled (by a
    capture or another release): there is nothing left to release."""
    _check_key(key)
    hold = _hold_owner(s, hold_id)
    account = _lock_accounts(s, [hold.user_id], now)[hold.user_id]
    earlier = _entry_by_key(s, key)
    if earlier is not None:
        _same(earlier, key, user_id=hold.user_id, kind=EntryKind.RELEASE, hold_id=hold_id)
        return earlier
    hold = _hold(s, hold_id, lock=True)
    if not HOLD.can(hold.state, HoldTrigger.RELEASE):
        return None
    HOLD.apply(hold, HoldTrigger.RELEASE)
    hold.settled_at = now
    return _append(
        s,
        account,
        kind=EntryKind.RELEASE,
        amount=0,
        held_change=-hold.amount,
        hold_id=hold.id,
        ref_type=hold.ref_type,
        ref_id=hold.ref_id,
        key=key,
        now=now,
    )


def capture_part(
    s: Session,
    *,
    hold_id: str,
    amount: int,
    key: str,
    now: datetime,
    royalties: Sequence[Royalty] = (),
) -> list[LedgerEntry]:
    """Charge `amount` out of an open hold and keep it open (a run's hold: one part per step job);
    credit `royalties` out of the part. The parts together never exceed the hold (InvalidInput,
    nothing written). `settle_rest` releases what is left when the run ends. Returns the capture
    entry, then the royalty entries."""
    _check_amount(amount)
    if amount == 0:
        raise InvalidInput.at("amount", "a part of a hold must be positive (nothing to capture)")
    _check_key(key)
    paid = _checked_royalties(amount, royalties)
    hold = _hold_owner(s, hold_id)
    accounts = _lock_accounts(s, [hold.user_id, *(r.user_id for r in paid)], now)
    earlier = _entry_by_key(s, key)
    if earlier is not None:
        _same(earlier, key, user_id=hold.user_id, kind=EntryKind.CAPTURE, amount=-amount, hold_id=hold_id)
        return _replayed_capture(s, earlier, key, paid)
    hold = _hold(s, hold_id, lock=True)
    # a hold settled before: IllegalTransition, nothing written
    HOLD.next_state(hold.state, HoldTrigger.CAPTURE_PART)
    left = hold.amount - hold.captured
    if amount > left:
        raise InvalidInput.at("amount", f"a part of {amount} exceeds what the hold has left ({left})")
    HOLD.apply(hold, HoldTrigger.CAPTURE_PART)
    hold.captured += amount
    written = [
        _append(
            s,
            accounts[hold.user_id],
            kind=EntryKind.CAPTURE,
            amount=-amount,
            held_change=-amount,
            hold_id=hold.id,
            ref_type=hold.ref_type,
            ref_id=hold.ref_id,
            key=key,
            now=now,
        )
    ]
    written.extend(_pay_royalties(s, accounts, hold, paid, key=key, now=now))
    return written


def settle_rest(s: Session, *, hold_id: str, key: str, now: datetime) -> LedgerEntry | None:
    """Close a hold captured in parts (or in none): release what is left and settle it, CAPTURED
    when any part was captured, else RELEASED. Returns the release entry; None when nothing was
    left to release or the hold was settled before (a second call changes nothing)."""
    _check_key(key)
    hold = _hold_owner(s, hold_id)
    account = _lock_accounts(s, [hold.user_id], now)[hold.user_id]
    earlier = _entry_by_key(s, key)
    if earlier is not None:
        _same(earlier, key, user_id=hold.user_id, kind=EntryKind.RELEASE, hold_id=hold_id)
        return earlier
    hold = _hold(s, hold_id, lock=True)
    if hold.state != HoldState.OPEN:
        return None
    HOLD.apply(hold, HoldTrigger.CAPTURE if hold.captured else HoldTrigger.RELEASE)
    hold.settled_at = now
    rest = hold.amount - hold.captured
    if rest == 0:
        return None
    return _append(
        s,
        account,
        kind=EntryKind.RELEASE,
        amount=0,
        held_change=-rest,
        hold_id=hold.id,
        ref_type=hold.ref_type,
        ref_id=hold.ref_id,
        key=key,
        now=now,
    )


def _checked_royalties(amount: int, royalties: Sequence[Royalty]) -> list[Royalty]:
    """The royalties that move credits, checked: each a valid amount, together within the charge."""
    paid = [r for r in royalties if r.amount != 0]
    for r in paid:
        _check_amount(r.amount)
    if sum(r.amount for r in paid) > amount:
        raise InvalidInput.at("royalties", f"royalties of {sum(r.amount for r in paid)} exceed the charge")
    return paid


def _pay_royalties(
    s: Session,
    accounts: dict[str, Account],
    hold: Hold,
    paid: Sequence[Royalty],
    *,
    key: str,
    now: datetime,
) -> list[LedgerEntry]:
    """One royalty entry per author, out of a capture keyed `key` (`<key>:royalty:<n>`)."""
    return [
        _append(
            s,
            accounts[r.user_id],
            kind=EntryKind.ROYALTY,
            amount=r.amount,
            hold_id=hold.id,
            ref_type=r.ref_type,
            ref_id=r.ref_id,
            key=f"{key}:royalty:{n}",
            now=now,
        )
        for n, r in enumerate(paid)
    ]


# -- checking -------------------------------------------------------------------------------------


def verify(s: Session) -> list[str]:
    """What is wrong with the books (empty: nothing): every balance and held amount equals the
    sums of its entries, entry by entry; no account is negative or holds more than it has; every
    hold's entries agree with its state and its captured amount."""
    problems: list[str] = []
    accounts = {a.user_id: a for a in s.scalars(select(Account))}
    running: dict[str, tuple[int, int]] = {}
    for e in s.scalars(select(LedgerEntry).order_by(LedgerEntry.user_id, LedgerEntry.id)):
        bal, held = running.get(e.user_id, (0, 0))
        bal, held = bal + e.amount, held + e.held_change
        running[e.user_id] = (bal, held)
        if (e.balance_after, e.held_after) != (bal, held):
            problems.append(
                f"entry {e.id} of {e.user_id}: after ({e.balance_after}, {e.held_after}) but the entries "
                f"up to it sum to ({bal}, {held})"
            )
        if bal < 0 or held < 0 or held > bal:
            problems.append(f"entry {e.id} of {e.user_id}: balance {bal}, held {held}")
    for user_id in sorted(set(accounts) | set(running)):
        account = accounts.get(user_id)
        bal, held = running.get(user_id, (0, 0))
        if account is None:
            problems.append(f"user {user_id} has entries but no account")
            continue
        if (account.balance, account.held) != (bal, held):
            problems.append(
                f"account {user_id}: balance {account.balance}, held {account.held}; "
                f"its entries sum to {bal}, {held}"
            )
        if account.balance < 0 or account.held < 0 or account.held > account.balance:
            problems.append(f"account {user_id}: balance {account.balance}, held {account.held}")
    open_held: dict[str, int] = {}
    sums = {
        row.hold_id: row
        for row in s.execute(
            select(
                LedgerEntry.hold_id,
                func.sum(LedgerEntry.held_change).label("held"),
                func.sum(LedgerEntry.amount).filter(LedgerEntry.kind != EntryKind.ROYALTY).label("paid"),
                func.sum(LedgerEntry.amount).filter(LedgerEntry.kind == EntryKind.ROYALTY).label("royalties"),
            )
            .where(LedgerEntry.hold_id.is_not(None))
            .group_by(LedgerEntry.hold_id)
        )
    }
    for hold in s.scalars(select(Hold)):
        row = sums.get(hold.id)
        held = int(row.held or 0) if row else 0
        paid = -int(row.paid or 0) if row else 0
        royalties = int(row.royalties or 0) if row else 0
        # an open hold holds what its parts have not captured yet (all of it, for a job's hold)
        still_held = hold.amount - hold.captured if hold.state == HoldState.OPEN else 0
        if hold.state == HoldState.OPEN:
            open_held[hold.user_id] = open_held.get(hold.user_id, 0) + still_held
        if held != still_held:
            problems.append(f"hold {hold.id} ({hold.state}): its entries hold {held}, it holds {still_held}")
        if paid != hold.captured:
            problems.append(f"hold {hold.id}: its entries charge {paid}, it captured {hold.captured}")
        if hold.captured > hold.amount or (hold.state == HoldState.RELEASED and hold.captured):
            problems.append(f"hold {hold.id} ({hold.state}): captured {hold.captured} of {hold.amount}")
        if (hold.state == HoldState.OPEN) != (hold.settled_at is None):
            problems.append(f"hold {hold.id} ({hold.state}): settled_at {hold.settled_at}")
        if royalties > hold.captured:
            problems.append(f"hold {hold.id}: royalties {royalties} exceed its charge {hold.captured}")
    for user_id, account in accounts.items():
        if account.held != open_held.get(user_id, 0):
            problems.append(
                f"account {user_id}: held {account.held}, its open holds {open_held.get(user_id, 0)}"
            )
    return problems


# -- helpers --------------------------------------------------------------------------------------


def _check_amount(amount: int, *, allow_negative: bool = False) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidInput.at("amount", f"credits are whole numbers, not {type(amount).__name__}")
    if amount < 0 and not allow_negative:
        raise InvalidInput.at("amount", f"must not be negative ({amount})")
    if abs(amount) > MAX_CREDITS:
        raise InvalidInput.at("amount", f"at most {MAX_CREDITS} credits at once")


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidInput.at("idempotency_key", f"1 to {MAX_KEY_LENGTH} characters")


def _lock_accounts(s: Session, user_ids: Sequence[str], now: datetime) -> dict[str, Account]:
    """The accounts of `user_ids`, created at 0 if missing, locked for this transaction, in one
    global order (user id) so that transactions locking several cannot deadlock."""
    locked: dict[str, Account] = {}
    for user_id in sorted(set(user_ids)):
        account = _locked(s, user_id)
        if account is None:
            if s.get(User, user_id) is None:
                raise NotFound(f"user {user_id} not found")
            # Two first movements at once: one inserts, the other's insert waits and does nothing.
            insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
            s.execute(
                insert(Account)
                .values(user_id=user_id, balance=0, held=0, updated_at=now)
                .on_conflict_do_nothing(index_elements=["user_id"])
            )
            account = _locked(s, user_id)
            assert account is not None
        locked[user_id] = account
    return locked


def _locked(s: Session, user_id: str) -> Account | None:
    return s.scalar(
        select(Account)
        .where(Account.user_id == user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def _hold(s: Session, hold_id: str, *, lock: bool = False) -> Hold:
    query = select(Hold).where(Hold.id == hold_id).execution_options(populate_existing=True)
    hold = s.scalar(query.with_for_update() if lock else query)
    if hold is None:
        raise NotFound(f"hold {hold_id} not found")
    return hold


def _hold_owner(s: Session, hold_id: str) -> Hold:
    """The hold, for whose accounts to lock first: from the session when it has it (its payer
    never changes; the caller re-reads the hold, locked, after the accounts: `_hold(lock=True)`),
    so that a settlement that just read it reads it twice, not three times."""
    hold = s.get(Hold, hold_id)
    if hold is None:
        raise NotFound(f"hold {hold_id} not found")
    return hold


def _entry_by_key(s: Session, key: str) -> LedgerEntry | None:
    return s.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == key))


def _same(earlier: LedgerEntry, key: str, **expected: object) -> None:
    """Refuse a replayed key whose movement differs from the one it recorded."""
    if any(getattr(earlier, name) != value for name, value in expected.items()):
        raise LedgerKeyReused(key)


def _replayed_capture(
    s: Session, first: LedgerEntry, key: str, royalties: Sequence[Royalty]
) -> list[LedgerEntry]:
    derived = list(
        s.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.hold_id == first.hold_id, LedgerEntry.id != first.id)
            .where(LedgerEntry.kind.in_([EntryKind.RELEASE, EntryKind.ROYALTY]))
            .order_by(LedgerEntry.id)
        )
    )
    mine = [e for e in derived if e.idempotency_key.startswith(f"{key}:")]
    paid = [(e.user_id, e.amount, e.ref_type, e.ref_id) for e in mine if e.kind == EntryKind.ROYALTY]
    if paid != [(r.user_id, r.amount, r.ref_type, r.ref_id) for r in royalties]:
        raise LedgerKeyReused(key)
    return [first, *mine]


def _append(
    s: Session,
    account: Account,
    *,
    kind: EntryKind,
    amount: int,
    held_change: int = 0,
    hold_id: str | None = None,
    ref_type: str,
    ref_id: str,
    actor_id: str | None = None,
    reason: str = "",
    key: str,
    now: datetime,
) -> LedgerEntry:
    account.balance += amount
    account.held += held_change
    account.updated_at = now
    # The callers check what they refuse; this is the last guard before the database's CHECKs.
    assert 0 <= account.held <= account.balance, (kind, account.balance, account.held)
    entry = LedgerEntry(
        user_id=account.user_id,
        kind=kind,
        amount=amount,
        held_change=held_change,
        balance_after=account.balance,
        held_after=account.held,
        hold_id=hold_id,
        ref_type=ref_type,
        ref_id=ref_id,
        actor_id=actor_id,
        reason=reason,
        idempotency_key=key,
        created_at=now,
    )
    s.add(entry)
    s.flush()
    return entry
