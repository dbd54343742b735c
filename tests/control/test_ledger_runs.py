"""A run's hold, captured in parts (ledger.capture_part) and closed at the end (ledger.settle_rest), on
SQLite and PostgreSQL: balances, the hold's state, replays, refusals, and `verify` after each."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from swarmstation.control import ledger
from swarmstation.control.ledger import LedgerKeyReused, Royalty
from swarmstation.domain.credits import EntryKind, HoldState
from swarmstation.domain.errors import IllegalTransition, InvalidInput
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
        ids = {name: add_user(s, NOW, name)[0].id for name in ("payer", "author")}
        ledger.grant(s, user_id=ids["payer"], amount=1000, reason="test", actor_id=None, key="g", now=NOW)
        return ids


def run_hold(sessions: sessionmaker[Session], payer: str, amount: int = 300) -> str:
    with transaction(sessions) as s:
        hold = ledger.place_hold(
            s, user_id=payer, amount=amount, ref_type="run", ref_id="r1", key="hold:run:r1:1", now=NOW
        )
        return hold.id


def assert_books(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        assert ledger.verify(s) == []


def entries(sessions: sessionmaker[Session]) -> int:
    with transaction(sessions) as s:
        return int(s.scalar(select(func.count()).select_from(LedgerEntry)) or 0)


def test_parts_are_charged_while_the_hold_stays_open_and_the_rest_is_released_at_the_end(
    sessions: sessionmaker[Session], users: dict[str, str]
) -> None:
    hold_id = run_hold(sessions, users["payer"])
    for n, part in enumerate((100, 50)):
        with transaction(sessions) as s:
            written = ledger.capture_part(s, hold_id=hold_id, amount=part, key=f"capture:job:{n}", now=NOW)
            assert [(e.kind, e.amount, e.held_change) for e in written] == [(EntryKind.CAPTURE, -part, -part)]
        assert_books(sessions)
    with transaction(sessions) as s:
        hold = s.get(Hold, hold_id)
        assert hold is not None and (hold.state, hold.captured, hold.settled_at) == (
            HoldState.OPEN,
            150,
            None,
        )
        # 1000 - 150 charged; 150 of the 300 still held
        assert ledger.balance(s, users["payer"]) == ledger.Balance(850, 150, 700)
    with transaction(sessions) as s:
        entry = ledger.settle_rest(s, hold_id=hold_id, key="release:run:r1:1", now=NOW)
        assert entry is not None and (entry.kind, entry.held_change) == (EntryKind.RELEASE, -150)
    with transaction(sessions) as s:
        hold = s.get(Hold, hold_id)
        assert hold is not None and (hold.state, hold.captured, hold.settled_at) == (
            HoldState.CAPTURED,
            150,
            NOW,
        )
        assert ledger.balance(s, users["payer"]) == ledger.Balance(850, 0, 850)
    assert_books(sessions)


def test_royalties_come_out_of_each_part(sessions: sessionmaker[Session], users: dict[str, str]) -> None:
    hold_id = run_hold(sessions, users["payer"])
    with transaction(sessions) as s:
        written = ledger.capture_part(
            s,
            hold_id=hold_id,
            amount=100,
            key="capture:job:a",
            now=NOW,
            royalties=[Royalty(users["author"], 5, "pipeline", "p1")],
        )
        assert [(e.kind, e.user_id, e.amount) for e in written] == [
            (EntryKind.CAPTURE, users["payer"], -100),
            (EntryKind.ROYALTY, users["author"], 5),
        ]
        ledger.settle_rest(s, hold_id=hold_id, key="release:run:r1:1", now=NOW)
    with transaction(sessions) as s:
        assert ledger.balance(s, users["author"]).balance == 5
        assert ledger.balance(s, users["payer"]) == ledger.Balance(900, 0, 900)
    assert_books(sessions)


def test_a_replayed_part_writes_nothing_and_another_amount_under_its_key_is_refused(
    sessions: sessionmaker[Session], users: dict[str, str]
) -> None:
    hold_id = run_hold(sessions, users["payer"])
    royalty = [Royalty(users["author"], 3, "pipeline", "p1")]
    with transaction(sessions) as s:
        first = ledger.capture_part(s, hold_id=hold_id, amount=60, key="k", now=NOW, royalties=royalty)
        first_ids = [e.id for e in first]
    count = entries(sessions)
    with transaction(sessions) as s:
        again = ledger.capture_part(s, hold_id=hold_id, amount=60, key="k", now=NOW, royalties=royalty)
        assert [e.id for e in again] == first_ids
        hold = s.get(Hold, hold_id)
        assert hold is not None and hold.captured == 60
    assert entries(sessions) == count
    with pytest.raises(LedgerKeyReused), transaction(sessions) as s:
        ledger.capture_part(s, hold_id=hold_id, amount=61, key="k", now=NOW)
    with pytest.raises(LedgerKeyReused), transaction(sessions) as s:
        ledger.capture_part(s, hold_id=hold_id, amount=60, key="k", now=NOW)  # without its royalty
    assert entries(sessions) == count
    assert_books(sessions)


def test_parts_beyond_the_hold_zero_parts_and_parts_of_a_closed_hold_are_refused(
    sessions: sessionmaker[Session], users: dict[str, str]
) -> None:
    hold_id = run_hold(sessions, users["payer"], amount=100)
    with transaction(sessions) as s:
        ledger.capture_part(s, hold_id=hold_id, amount=70, key="a", now=NOW)
    count = entries(sessions)
    with pytest.raises(InvalidInput, match="exceeds what the hold has left"), transaction(sessions) as s:
        ledger.capture_part(s, hold_id=hold_id, amount=31, key="b", now=NOW)
    with pytest.raises(InvalidInput), transaction(sessions) as s:
        ledger.capture_part(s, hold_id=hold_id, amount=0, key="c", now=NOW)
    with pytest.raises(InvalidInput, match="royalties"), transaction(sessions) as s:
        ledger.capture_part(
            s,
            hold_id=hold_id,
            amount=10,
            key="d",
            now=NOW,
            royalties=[Royalty(users["author"], 11, "x", "y")],
        )
    with pytest.raises(InvalidInput, match="in parts"), transaction(sessions) as s:
        ledger.capture(s, hold_id=hold_id, amount=10, key="e", now=NOW)  # only settle_rest closes it
    assert entries(sessions) == count
    with transaction(sessions) as s:
        ledger.capture_part(s, hold_id=hold_id, amount=30, key="b", now=NOW)  # exactly what is left
        assert ledger.settle_rest(s, hold_id=hold_id, key="rest", now=NOW) is None  # nothing to release
        hold = s.get(Hold, hold_id)
        assert hold is not None and (hold.state, hold.captured) == (HoldState.CAPTURED, 100)
    with pytest.raises(IllegalTransition), transaction(sessions) as s:
        ledger.capture_part(s, hold_id=hold_id, amount=1, key="late", now=NOW)
    assert_books(sessions)


def test_a_hold_with_no_part_captured_closes_released_and_a_second_close_changes_nothing(
    sessions: sessionmaker[Session], users: dict[str, str]
) -> None:
    hold_id = run_hold(sessions, users["payer"])
    with transaction(sessions) as s:
        entry = ledger.settle_rest(s, hold_id=hold_id, key="rest", now=NOW)
        assert entry is not None and entry.held_change == -300
    count = entries(sessions)
    with transaction(sessions) as s:
        replay = ledger.settle_rest(s, hold_id=hold_id, key="rest", now=NOW)
        assert replay is not None and replay.id == entry.id
        assert ledger.settle_rest(s, hold_id=hold_id, key="rest-again", now=NOW) is None
        hold = s.get(Hold, hold_id)
        assert hold is not None and hold.state == HoldState.RELEASED
        assert ledger.balance(s, users["payer"]) == ledger.Balance(1000, 0, 1000)
    assert entries(sessions) == count
    assert_books(sessions)


def test_verify_finds_an_open_hold_whose_captured_amount_disagrees_with_its_entries(
    sessions: sessionmaker[Session], users: dict[str, str]
) -> None:
    hold_id = run_hold(sessions, users["payer"])
    with transaction(sessions) as s:
        ledger.capture_part(s, hold_id=hold_id, amount=40, key="a", now=NOW)
    with transaction(sessions) as s:
        hold = s.get(Hold, hold_id)
        assert hold is not None
        hold.captured = 50  # as a bug would
    with transaction(sessions) as s:
        problems = ledger.verify(s)
        assert any("its entries charge 40, it captured 50" in p for p in problems)
        assert any("its entries hold 260, it holds 250" in p for p in problems)
