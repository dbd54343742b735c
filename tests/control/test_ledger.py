"""The ledger on SQLite and PostgreSQL: grants, holds, captures with royalties, releases, replays,
refusals, and `verify` after every scenario; concurrent holds on PostgreSQL with real threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from swarmstation.control import ledger
from swarmstation.control.ledger import LedgerKeyReused, Royalty
from swarmstation.domain.credits import EntryKind, HoldState, InsufficientCredits
from swarmstation.domain.errors import IllegalTransition, InvalidInput, NotFound
from swarmstation.store.db import make_engine, make_sessionmaker, migrate, transaction
from swarmstation.store.models import Hold, LedgerEntry
from tests.helpers import add_user

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    migrate(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def users(sessions: sessionmaker[Session]) -> dict[str, str]:
    with transaction(sessions) as s:
        return {name: add_user(s, NOW, name)[0].id for name in ("payer", "author", "author2", "admin")}


def books_balance(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        assert ledger.verify(s) == []


def entry_count(sessions: sessionmaker[Session]) -> int:
    with transaction(sessions) as s:
        return int(s.scalar(select(func.count()).select_from(LedgerEntry)) or 0)


def give(sessions: sessionmaker[Session], user_id: str, amount: int, key: str = "g1") -> None:
    with transaction(sessions) as s:
        ledger.grant(s, user_id=user_id, amount=amount, reason="test", actor_id=None, key=key, now=NOW)


def test_a_new_user_has_nothing_and_a_grant_adds_to_the_balance(
    sessions: sessionmaker[Session], users: dict[str, str]
) -> None:
    with transaction(sessions) as s:
        assert ledger.balance(s, users["payer"]) == ledger.Balance(0, 0, 0)
        entry = ledger.grant(
            s, user_id=users["payer"], amount=500, reason="welcome", actor_id=users["admin"], key="g", now=NOW
        )
        assert (entry.kind, entry.amount, entry.balance_after, entry.actor_id) == (
            EntryKind.GRANT,
            500,
            500,
            users["admin"],
        )
    with transaction(sessions) as s:
        assert ledger.balance(s, users["payer"]) == ledger.Balance(500, 0, 500)
    books_balance(sessions)


def test_hold_then_capture_with_royalties_pays_authors_out_of_the_charge(
    sessions: sessionmaker[Session], users: dict[str, str]
) -> None:
    give(sessions, users["payer"], 1000)
    with transaction(sessions) as s:
        hold = ledger.place_hold(
            s, user_id=users["payer"], amount=300, ref_type="job", ref_id="j1", key="j1:hold", now=NOW
        )
        assert ledger.balance(s, users["payer"]) == ledger.Balance(1000, 300, 700)
        hold_id = hold.id
    books_balance(sessions)
    with transaction(sessions) as s:
        written = ledger.capture(
            s,
            hold_id=hold_id,
            amount=200,
            key="j1:capture",
            now=NOW,
            royalties=[
                Royalty(users["author"], 10, "lora", "fox"),
                Royalty(users["author2"], 10, "lora", "owl"),
            ],
        )
        assert [(e.kind, e.amount, e.held_change) for e in written] == [
            (EntryKind.CAPTURE, -200, -200),
            (EntryKind.RELEASE, 0, -100),
            (EntryKind.ROYALTY, 10, 0),
            (EntryKind.ROYALTY, 10, 0),
        ]
    with transaction(sessions) as s:
        assert ledger.balance(s, users["payer"]) == ledger.Balance(800, 0, 800)
        assert ledger.balance(s, users["author"]).balance == 10
        assert ledger.balance(s, users["author2"]).balance == 10
        row = s.get(Hold, hold_id)
        assert row is not None and (row.state, row.captured) == (HoldState.CAPTURED, 200)
    books_balance(sessions)


def test_release_gives_the_whole_hold_back_once(
    sessions: sessionmaker[Session], users: dict[str, str]
) -> None:
    give(sessions, users["payer"], 100)
    with transaction(sessions) as s:
        hold_id = ledger.place_hold(
            s, user_id=users["payer"], amount=100, ref_type="job", ref_id="j", key="h", now=NOW
        ).id
    with transaction(sessions) as s:
        entry = ledger.release(s, hold_id=hold_id, key="r", now=NOW)
        assert entry is not None and entry.held_change == -100
    with transaction(sessions) as s:
        assert ledger.release(s, hold_id=hold_id, key="r", now=NOW) is not None  # the replay
        assert ledger.release(s, hold_id=hold_id, key="r2", now=NOW) is None  # nothing left
        with pytest.raises(IllegalTransition):
            ledger.capture(s, hold_id=hold_id, amount=1, key="c", now=NOW)
    with transaction(sessions) as s:
        assert ledger.balance(s, users["payer"]) == ledger.Balance(100, 0, 100)
    books_balance(sessions)


def test_replayed_keys_return_the_first_result_and_write_nothing(
    sessions: sessionmaker[Session], users: dict[str, str]
) -> None:
    give(sessions, users["payer"], 1000)
    give(sessions, users["payer"], 1000)  # the same key again
    with transaction(sessions) as s:
        first = ledger.place_hold(
            s, user_id=users["payer"], amount=300, ref_type="job", ref_id="j", key="h", now=NOW
        )
    with transaction(sessions) as s:
        again = ledger.place_hold(
            s, user_id=users["payer"], amount=300, ref_type="job", ref_id="j", key="h", now=NOW
        )
        assert again.id == first.id
    royalties = [Royalty(users["author"], 5, "lora", "fox")]
    with transaction(sessions) as s:
        captured = ledger.capture(s, hold_id=first.id, amount=50, key="c", now=NOW, royalties=royalties)
    before = entry_count(sessions)
    with transaction(sessions) as s:
        replay = ledger.capture(s, hold_id=first.id, amount=50, key="c", now=NOW, royalties=royalties)
        assert [e.id for e in replay] == [e.id for e in captured]
        deposit = ledger.credit_deposit(
            s, user_id=users["payer"], amount=7, deposit_id="d1", key="d", now=NOW
        )
    with transaction(sessions) as s:
        assert ledger.credit_deposit(
            s, user_id=users["payer"], amount=7, deposit_id="d1", key="d", now=NOW
        ).id == (deposit.id)
    assert entry_count(sessions) == before + 1
    with transaction(sessions) as s:
        assert ledger.balance(s, users["payer"]) == ledger.Balance(1000 - 50 + 7, 0, 957)
    books_balance(sessions)


def test_a_key_reused_for_another_movement_is_refused(
    sessions: sessionmaker[Session], users: dict[str, str]
) -> None:
    give(sessions, users["payer"], 1000)
    with transaction(sessions) as s:
        hold_id = ledger.place_hold(
            s, user_id=users["payer"], amount=300, ref_type="job", ref_id="j", key="h", now=NOW
        ).id
        ledger.capture(s, hold_id=hold_id, amount=100, key="c", now=NOW)
    before = entry_count(sessions)
    attempts = [
        lambda s: ledger.grant(
            s, user_id=users["payer"], amount=999, reason="x", actor_id=None, key="g1", now=NOW
        ),
        lambda s: ledger.grant(
            s, user_id=users["author"], amount=1000, reason="test", actor_id=None, key="g1", now=NOW
        ),
        lambda s: ledger.place_hold(
            s, user_id=users["payer"], amount=301, ref_type="job", ref_id="j", key="h", now=NOW
        ),
        lambda s: ledger.place_hold(
            s, user_id=users["payer"], amount=300, ref_type="job", ref_id="other", key="h", now=NOW
        ),
        lambda s: ledger.capture(s, hold_id=hold_id, amount=101, key="c", now=NOW),
        lambda s: ledger.capture(
            s,
            hold_id=hold_id,
            amount=100,
            key="c",
            now=NOW,
            royalties=[Royalty(users["author"], 1, "lora", "x")],
        ),
        lambda s: ledger.credit_deposit(
            s, user_id=users["payer"], amount=5, deposit_id="d", key="c", now=NOW
        ),
    ]
    for attempt in attempts:
        with pytest.raises(LedgerKeyReused), transaction(sessions) as s:
            attempt(s)
    assert entry_count(sessions) == before
    books_balance(sessions)


def test_refusals_write_nothing(sessions: sessionmaker[Session], users: dict[str, str]) -> None:
    give(sessions, users["payer"], 100)
    with transaction(sessions) as s:
        hold_id = ledger.place_hold(
            s, user_id=users["payer"], amount=60, ref_type="job", ref_id="j", key="h", now=NOW
        ).id
    before = entry_count(sessions)
    with pytest.raises(InsufficientCredits) as refused, transaction(sessions) as s:
        ledger.place_hold(s, user_id=users["payer"], amount=41, ref_type="job", ref_id="k", key="h2", now=NOW)
    assert (refused.value.required, refused.value.available, refused.value.code) == (
        41,
        40,
        "insufficient_credits",
    )
    # An adjustment cannot take held credits, nor go below zero.
    with pytest.raises(InvalidInput), transaction(sessions) as s:
        ledger.grant(s, user_id=users["payer"], amount=-41, reason="x", actor_id=None, key="a", now=NOW)
    with pytest.raises(InvalidInput), transaction(sessions) as s:
        ledger.grant(s, user_id=users["payer"], amount=0, reason="x", actor_id=None, key="z", now=NOW)
    for bad in (-1, 10**16, 1.5, True):
        with pytest.raises(InvalidInput), transaction(sessions) as s:
            ledger.place_hold(
                s,
                user_id=users["payer"],
                amount=bad,  # type: ignore[arg-type]
                ref_type="job",
                ref_id="k",
                key="h3",
                now=NOW,
            )
    with pytest.raises(InvalidInput), transaction(sessions) as s:
        ledger.capture(s, hold_id=hold_id, amount=61, key="c", now=NOW)  # more than the hold
    with pytest.raises(InvalidInput), transaction(sessions) as s:
        ledger.capture(
            s,
            hold_id=hold_id,
            amount=10,
            key="c",
            now=NOW,
            royalties=[Royalty(users["author"], 11, "lora", "x")],
        )
    with pytest.raises(InvalidInput), transaction(sessions) as s:
        ledger.grant(s, user_id=users["payer"], amount=1, reason="x", actor_id=None, key="k" * 256, now=NOW)
    with pytest.raises(NotFound), transaction(sessions) as s:
        ledger.grant(s, user_id="nobody", amount=1, reason="x", actor_id=None, key="n", now=NOW)
    with pytest.raises(NotFound), transaction(sessions) as s:
        ledger.release(s, hold_id="nope", key="n", now=NOW)
    assert entry_count(sessions) == before
    with transaction(sessions) as s:
        assert ledger.balance(s, users["payer"]) == ledger.Balance(100, 60, 40)
        ledger.grant(s, user_id=users["payer"], amount=-40, reason="x", actor_id=None, key="a", now=NOW)
    with transaction(sessions) as s:
        assert ledger.balance(s, users["payer"]) == ledger.Balance(60, 60, 0)
    books_balance(sessions)


def test_the_database_refuses_a_negative_balance(
    sessions: sessionmaker[Session], users: dict[str, str]
) -> None:
    give(sessions, users["payer"], 5)
    with pytest.raises(Exception, match=r"(?i)check|constraint"), transaction(sessions) as s:
        s.execute(text("UPDATE accounts SET balance = -1"))


def test_verify_finds_tampered_books(sessions: sessionmaker[Session], users: dict[str, str]) -> None:
    give(sessions, users["payer"], 100)
    with transaction(sessions) as s:
        ledger.place_hold(s, user_id=users["payer"], amount=30, ref_type="job", ref_id="j", key="h", now=NOW)
    books_balance(sessions)
    with transaction(sessions) as s:
        s.execute(text("UPDATE accounts SET balance = balance + 1"))
    with transaction(sessions) as s:
        assert any("sum to" in p for p in ledger.verify(s))
        s.execute(text("UPDATE accounts SET balance = balance - 1, held = held - 30"))
        s.execute(text("UPDATE ledger_entries SET held_change = 0, held_after = 0 WHERE kind = 'hold'"))
    with transaction(sessions) as s:
        assert any("open holds" in p for p in ledger.verify(s))


def test_entries_page_newest_first(sessions: sessionmaker[Session], users: dict[str, str]) -> None:
    for n in range(5):
        give(sessions, users["payer"], n + 1, key=f"g{n}")
    with transaction(sessions) as s:
        first = ledger.entries(s, users["payer"], limit=3)
        assert [e.amount for e in first] == [5, 4, 3]
        rest = ledger.entries(s, users["payer"], limit=3, before=first[-1].id)
        assert [e.amount for e in rest] == [2, 1]


def test_concurrent_holds_that_exceed_the_balance_let_exactly_one_through(
    database_url: str, sessions: sessionmaker[Session], users: dict[str, str]
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("real concurrent transactions: PostgreSQL (SQLite serialises every writer)")
    give(sessions, users["payer"], 100)
    engine = sessions.kw["bind"]
    rendezvous: list[threading.Barrier] = []

    def after_reading_the_account(conn: object, cursor: object, statement: str, *args: object) -> None:
        # Each holder waits here, after reading the account and before writing, for the other:
        # without the row lock both read 100 available and both would hold 60. With it the second
        # blocks in its read, the first stops waiting after a second and commits.
        if rendezvous and statement.lstrip().startswith("SELECT") and "FROM accounts" in statement:
            try:
                rendezvous[-1].wait(timeout=1.0)
            except threading.BrokenBarrierError:
                pass

    event.listen(engine, "after_cursor_execute", after_reading_the_account)
    try:
        for round_ in range(3):
            rendezvous.append(threading.Barrier(2))
            outcomes: list[str] = []

            def hold(n: int, round_: int = round_, outcomes: list[str] = outcomes) -> None:
                try:
                    with transaction(sessions) as s:
                        ledger.place_hold(
                            s,
                            user_id=users["payer"],
                            amount=60,
                            ref_type="job",
                            ref_id=f"{round_}-{n}",
                            key=f"{round_}-{n}",
                            now=NOW,
                        )
                    outcomes.append("held")
                except InsufficientCredits:
                    outcomes.append("402")

            threads = [threading.Thread(target=hold, args=(n,)) for n in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            rendezvous.clear()
            assert sorted(outcomes) == ["402", "held"], outcomes
            with transaction(sessions) as s:
                open_hold = s.scalar(select(Hold).where(Hold.state == HoldState.OPEN))
                assert open_hold is not None
                ledger.release(s, hold_id=open_hold.id, key=f"release-{round_}", now=NOW)
    finally:
        event.remove(engine, "after_cursor_execute", after_reading_the_account)
    books_balance(sessions)
