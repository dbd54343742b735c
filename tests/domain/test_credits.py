"""Credits, pure: dollars to credits rounding up (never from a float), settling a hold, royalty
shares under their cap, the Hold lifecycle; properties: what a settlement and a split hand out
adds up to what came in."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmstation.domain.credits import (
    BPS,
    HOLD,
    MAX_CREDITS,
    HoldState,
    HoldTrigger,
    InsufficientCredits,
    RoyaltyShare,
    credits_to_usd,
    royalty_amounts,
    royalty_shares,
    settle,
    usd_to_credits,
)
from swarmstation.domain.errors import IllegalTransition, InvalidInput, PaymentRequired
from swarmstation.domain.states import ALL_TABLES


@pytest.mark.parametrize(
    ("usd", "rate", "credits"),
    [
        (Decimal("1"), 1000, 1000),
        (Decimal("0.001"), 1000, 1),
        (Decimal("0.0011"), 1000, 2),  # rounds up
        (Decimal("0.0000001"), 1000, 1),
        (Decimal("0"), 1000, 0),
        (1_000_000, 1000, 1000),  # an int is micro-dollars
        (1, 1000, 1),  # $0.000001 is still a credit
        (999, 1000, 1),
        (1001, 1000, 2),
        (0, 1000, 0),
        (Decimal("2.5"), 7, 18),
    ],
)
def test_usd_to_credits_rounds_up(usd: Decimal | int, rate: int, credits: int) -> None:
    assert usd_to_credits(usd, rate) == credits


def test_money_is_never_a_float() -> None:
    with pytest.raises(TypeError):
        usd_to_credits(0.1, 1000)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        usd_to_credits(True, 1000)
    with pytest.raises(InvalidInput):
        usd_to_credits(Decimal("NaN"), 1000)
    with pytest.raises(InvalidInput):
        usd_to_credits(Decimal("1"), 0)
    assert credits_to_usd(1, 1000) == Decimal("0.001")


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=1, max_value=10**6))
def test_micro_dollars_and_decimal_dollars_agree(micros: int, rate: int) -> None:
    credits = usd_to_credits(micros, rate)
    assert credits == usd_to_credits(Decimal(micros) / Decimal(1_000_000), rate)
    # rounded up, by less than one credit
    assert credits * 1_000_000 >= micros * rate > (credits - 1) * 1_000_000


def test_settle_captures_at_most_the_hold_and_releases_the_rest() -> None:
    assert (settle(100, 30).captured, settle(100, 30).released) == (30, 70)
    assert (settle(100, 100).captured, settle(100, 100).released) == (100, 0)
    assert (settle(0, 0).captured, settle(0, 0).released) == (0, 0)
    with pytest.raises(InvalidInput, match="exceeds"):
        settle(100, 101)
    with pytest.raises(InvalidInput):
        settle(100, -1)


@given(st.integers(min_value=0, max_value=MAX_CREDITS), st.data())
def test_a_settlement_conserves_the_hold(held: int, data: st.DataObject) -> None:
    charge = data.draw(st.integers(min_value=0, max_value=held))
    s = settle(held, charge)
    assert s.captured + s.released == held and s.captured == charge and s.released >= 0


def other_authors(n: int) -> list[tuple[str, str | None]]:
    return [(f"lora{i}", f"author{i}") for i in range(n)]


def paid(charge: int, applied: list[tuple[str, str | None]], **bps: int) -> list[int]:
    return [x for _, x in royalty_amounts(charge, royalty_shares(applied, payer_id="me", **bps))]


def test_royalties_are_five_percent_per_lora_capped_at_fifteen() -> None:
    assert paid(1000, []) == []
    assert paid(1000, other_authors(1)) == [50]
    assert paid(1000, other_authors(3)) == [50, 50, 50]
    assert paid(1000, other_authors(4)) == [37, 37, 37, 37]  # 15% shared: 375 bps each, the rest stays ours
    assert paid(19, other_authors(1)) == []  # 0.95 rounded down: nothing to pay
    assert paid(1000, other_authors(2), per_lora_bps=1000, cap_bps=1500) == [75, 75]
    with pytest.raises(InvalidInput):
        royalty_amounts(-1, royalty_shares(other_authors(1), payer_id="me"))
    with pytest.raises(InvalidInput):
        royalty_shares(other_authors(1), payer_id="me", per_lora_bps=BPS + 1)
    with pytest.raises(InvalidInput):  # stored shares that would pay out more than the charge
        royalty_amounts(100, [RoyaltyShare("a", "alice", 6000), RoyaltyShare("b", "bob", 6000)])


def test_royalties_go_to_other_authors_once_each() -> None:
    applied = [("a", "alice"), ("mine", "me"), ("a", "alice"), ("b", "bob"), ("c", None)]
    shares = royalty_shares(applied, payer_id="me")
    # the payer's own LoRA and an ownerless one earn nothing; "a" applied twice earns once
    assert shares == [RoyaltyShare("a", "alice", 500), RoyaltyShare("b", "bob", 500)]
    assert royalty_shares(applied, payer_id="me", per_lora_bps=0) == []
    assert royalty_shares([("mine", "me")], payer_id="me") == []
    capped = royalty_shares(other_authors(4), payer_id="me")
    assert [x.bps for x in capped] == [375] * 4
    assert royalty_amounts(10, shares) == []  # 0.5 credits each: nothing


@given(
    st.integers(min_value=0, max_value=MAX_CREDITS),
    st.integers(min_value=0, max_value=20),
    st.integers(min_value=0, max_value=BPS),
    st.integers(min_value=0, max_value=BPS),
)
def test_royalties_never_exceed_the_cap_or_the_charge(charge: int, loras: int, per: int, cap: int) -> None:
    shares = royalty_shares(other_authors(loras), payer_id="me", per_lora_bps=per, cap_bps=cap)
    assert sum(x.bps for x in shares) <= min(cap, per * loras)
    amounts = [x for _, x in royalty_amounts(charge, shares)]
    assert all(x > 0 for x in amounts) and sum(amounts) * BPS <= charge * min(cap, per * loras)
    platform = charge - sum(amounts)
    assert platform >= 0 and platform + sum(amounts) == charge
    if shares:
        # each share is within one basis point per LoRA of an equal part of the cap, and each
        # amount within one credit of its exact share: rounding only ever favours the platform
        assert min(cap, per * loras) - sum(x.bps for x in shares) < loras
        assert charge * sum(x.bps for x in shares) - sum(amounts) * BPS < loras * BPS


def test_insufficient_credits_is_a_402_with_its_numbers() -> None:
    exc = InsufficientCredits(required=10, available=3)
    assert isinstance(exc, PaymentRequired)
    assert (exc.status_hint, exc.code, exc.extra_body) == (
        402,
        "insufficient_credits",
        {"required": 10, "available": 3},
    )


def test_a_hold_is_settled_once() -> None:
    assert ALL_TABLES["hold"] is HOLD and HOLD.initial == HoldState.OPEN
    assert HOLD.terminal == {HoldState.CAPTURED, HoldState.RELEASED}

    class Row:
        state = HoldState.OPEN

    row = Row()
    HOLD.apply(row, HoldTrigger.CAPTURE)
    assert row.state == HoldState.CAPTURED
    for trigger in HoldTrigger:
        with pytest.raises(IllegalTransition):
            HOLD.apply(row, trigger)
        assert row.state == HoldState.CAPTURED
    other = Row()
    HOLD.apply(other, HoldTrigger.RELEASE)
    assert other.state == HoldState.RELEASED
