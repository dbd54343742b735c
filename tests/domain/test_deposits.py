"""The deposit policy without a chain: what a transaction is worth, the scan window, and the
lifecycle table walked rule by rule."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from swarmstation.domain.deposits import (
    DEPOSIT,
    AssetConfig,
    ChainConfig,
    ChainTransaction,
    DepositState,
    DepositTrigger,
    TokenTransfer,
    classify,
    confirmations,
    credits_for,
    next_cursor,
    scan_range,
)
from swarmstation.domain.errors import IllegalTransition

TREASURY = "0x" + "7" * 40
USDC = "0x" + "c" * 40
OTHER_TOKEN = "0x" + "d" * 40
ALICE = "0x" + "a" * 40
CHAIN = ChainConfig(
    chain_id=1,
    name="Ethereum",
    treasury=TREASURY,
    confirmations=12,
    assets=(AssetConfig("ETH", None, 18, 3_000_000), AssetConfig("USDC", USDC, 6, 1000)),
)


def tx(
    *, to: str | None = TREASURY, value: int = 0, ok: bool = True, transfers: tuple[TokenTransfer, ...] = ()
) -> ChainTransaction:
    return ChainTransaction("0x" + "1" * 64, 100, "0x" + "2" * 64, ALICE, to, value, ok, transfers)


def test_credits_round_down_in_integers() -> None:
    usdc = CHAIN.assets[1]
    assert credits_for(1_000_000, usdc) == 1000  # 1 USDC
    assert credits_for(1_999, usdc) == 1  # 0.001999 USDC
    assert credits_for(999, usdc) == 0
    eth = CHAIN.assets[0]
    assert credits_for(10**18 + 1, eth) == 3_000_000  # no float ever: 1e18 wei exactly
    assert credits_for(2**200, eth) == 2**200 * 3_000_000 // 10**18


def test_native_and_token_transfers_to_the_treasury_are_deposits() -> None:
    found = classify(CHAIN, tx(value=10**18, transfers=(TokenTransfer(3, USDC, ALICE, TREASURY, 5_000_000),)))
    assert [(f.log_index, f.symbol, f.credits, f.refusal) for f in found] == [
        (-1, "ETH", 3_000_000, None),
        (3, "USDC", 5000, None),
    ]


@pytest.mark.parametrize(
    ("transaction", "words"),
    [
        (tx(value=10**18, ok=False), "reverted"),
        (tx(to="0x" + "9" * 40, value=10**18), "nothing to the treasury"),
        (tx(transfers=(TokenTransfer(0, USDC, ALICE, "0x" + "9" * 40, 10**6),)), "nothing to the treasury"),
        (tx(transfers=(TokenTransfer(0, OTHER_TOKEN, ALICE, TREASURY, 10**6),)), "is not accepted"),
        (tx(transfers=(TokenTransfer(0, USDC, ALICE, TREASURY, 999),)), "less than 1 credit"),
    ],
)
def test_what_is_refused_says_why(transaction: ChainTransaction, words: str) -> None:
    (finding,) = classify(CHAIN, transaction)
    assert finding.refusal is not None and words in finding.refusal
    assert finding.credits == 0


def test_native_currency_not_accepted_on_a_token_only_chain() -> None:
    tokens_only = ChainConfig(1, "Ethereum", TREASURY, 12, (AssetConfig("USDC", USDC, 6, 1000),))
    (finding,) = classify(tokens_only, tx(value=10**18))
    assert finding.refusal == "the native currency is not accepted on Ethereum (accepted: USDC)"


def test_confirmations_and_the_scan_window() -> None:
    assert confirmations(100, 100) == 1
    assert confirmations(100, 111) == 12
    assert confirmations(100, 99) == 0
    assert scan_range(10, 10, 500) is None
    assert scan_range(10, 2000, 500) == (11, 510)
    # Blocks that are not final are read again next time: the cursor stops at the last final one.
    assert next_cursor(10, 510, 2000, 12) == 510
    assert next_cursor(10, 20, 20, 12) == 10
    assert next_cursor(10, 30, 30, 12) == 19


@dataclass
class Row:
    state: DepositState


STORIES = [
    (DepositState.PENDING, DepositTrigger.CONFIRMED_OWNED, DepositState.CREDITED),
    (DepositState.PENDING, DepositTrigger.CONFIRMED_UNLINKED, DepositState.UNATTRIBUTED),
    (DepositState.UNATTRIBUTED, DepositTrigger.LINKED, DepositState.CREDITED),
    (DepositState.PENDING, DepositTrigger.REFUSE, DepositState.REFUSED),
    (DepositState.PENDING, DepositTrigger.VANISHED, DepositState.DROPPED),
    (DepositState.DROPPED, DepositTrigger.REAPPEARED, DepositState.PENDING),
]


def test_every_rule_and_every_illegal_pair() -> None:
    assert {(s, t) for s, t, _ in STORIES} == set(DEPOSIT.table)
    for source, trigger, target in STORIES:
        row = Row(source)
        assert DEPOSIT.apply(row, trigger) == source
        assert row.state == target
    for state in DepositState:
        for trigger in DepositTrigger:
            if (state, trigger) in DEPOSIT.table:
                continue
            row = Row(state)
            with pytest.raises(IllegalTransition):
                DEPOSIT.apply(row, trigger)
            assert row.state == state
    # Credited once: nothing leaves `credited` or `refused`.
    assert DEPOSIT.terminal == {DepositState.CREDITED, DepositState.REFUSED}
