"""Deposits on EVM chains: what a transaction to the treasury is worth, and the deposit lifecycle.

Pure: the chain's data arrives as plain values (`ChainTransaction`, read by integrations/evm.py),
the configuration as `ChainConfig`; control/deposits.py stores the rows and calls the ledger.

A deposit is one transfer to a chain's treasury, keyed by (chain id, transaction hash, log
index): an ERC-20 `Transfer` log has its log index, the transaction's own (native) value has -1.
A transaction that pays nothing usable to the treasury (reverted, sent elsewhere, not a
transfer) is recorded as one refused deposit at -1, so that whoever reported it sees why.

```
            CONFIRMED_OWNED              LINKED
 pending ──────────────────► credited ◄──────── unattributed
   │  ▲ │                                            ▲
   │  │ └──────────────── CONFIRMED_UNLINKED ────────┘
   │  │ REAPPEARED
   │  dropped ◄── VANISHED (gone in a reorganisation before its confirmations)
   └── REFUSE ──► refused (reverted, not to the treasury, asset not accepted, worth < 1 credit)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from swarmstation.domain.states import Lifecycle, Rule, register

__all__ = [
    "DEPOSIT",
    "NATIVE_LOG_INDEX",
    "AssetConfig",
    "ChainConfig",
    "ChainTransaction",
    "DepositState",
    "DepositTrigger",
    "Finding",
    "TokenTransfer",
    "classify",
    "confirmations",
    "credits_for",
    "next_cursor",
    "scan_range",
    "summarise_pending",
]

# The key of a transaction's own value transfer (and of a transaction-wide refusal).
NATIVE_LOG_INDEX = -1
# Credits are BigInteger columns.
MAX_CREDITS = 2**63 - 1


class DepositState(StrEnum):
    PENDING = "pending"  # on chain, waiting for its confirmations
    CREDITED = "credited"  # confirmed and credited to the owner of the sending wallet
    UNATTRIBUTED = "unattributed"  # confirmed, but no user has linked the sending wallet yet
    REFUSED = "refused"  # nothing to credit; the reason says why
    DROPPED = "dropped"  # left the chain in a reorganisation before it was confirmed


class DepositTrigger(StrEnum):
    CONFIRMED_OWNED = "CONFIRMED_OWNED"  # has its confirmations; the sender's owner is known
    CONFIRMED_UNLINKED = "CONFIRMED_UNLINKED"  # has its confirmations; nobody owns the sender
    LINKED = "LINKED"  # a user linked the sending wallet
    REFUSE = "REFUSE"  # the transaction pays nothing that can be credited
    VANISHED = "VANISHED"  # the transaction (or this transfer in it) is no longer on the chain
    REAPPEARED = "REAPPEARED"  # a dropped transfer was mined again


_P, _C, _U, _R, _D = (
    DepositState.PENDING,
    DepositState.CREDITED,
    DepositState.UNATTRIBUTED,
    DepositState.REFUSED,
    DepositState.DROPPED,
)
_T = DepositTrigger

DEPOSIT: Lifecycle[DepositState, DepositTrigger] = register(
    Lifecycle(
        "deposit",
        DepositState,
        DepositTrigger,
        initial=_P,
        about="One transfer to a treasury, keyed by (chain, transaction, log index); credited once, "
        "after its confirmations, to whoever owns the sending wallet.",
        rules=[
            Rule((_P,), _T.CONFIRMED_OWNED, _C, "confirmed; credited to the sending wallet's owner"),
            Rule((_P,), _T.CONFIRMED_UNLINKED, _U, "confirmed; nobody has linked the sending wallet"),
            Rule((_U,), _T.LINKED, _C, "its owner linked the wallet: credited"),
            Rule((_P,), _T.REFUSE, _R, "reverted, not to the treasury, asset not accepted, too small"),
            Rule((_P,), _T.VANISHED, _D, "gone in a reorganisation before its confirmations"),
            Rule((_D,), _T.REAPPEARED, _P, "mined again after a reorganisation"),
        ],
    )
)


# -- configuration -----------------------------------------------------------------------------
@dataclass(frozen=True)
class AssetConfig:
    """An accepted asset: `contract` None is the chain's native currency. A whole unit
    (10**decimals base units) is worth `credits_per_unit` credits."""

    symbol: str
    contract: str | None  # lowercase 0x address
    decimals: int
    credits_per_unit: int


@dataclass(frozen=True)
class ChainConfig:
    chain_id: int
    name: str
    treasury: str  # lowercase 0x address
    confirmations: int  # the block holding a transfer counts as its first
    assets: tuple[AssetConfig, ...]

    def asset(self, contract: str | None) -> AssetConfig | None:
        for asset in self.assets:
            if asset.contract == contract:
                return asset
        return None


# -- what the chain says -------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenTransfer:
    """An ERC-20 `Transfer` log of a transaction."""

    log_index: int
    token: str  # the emitting contract, lowercase
    sender: str  # lowercase
    recipient: str  # lowercase
    amount: int  # base units


@dataclass(frozen=True)
class ChainTransaction:
    """A mined transaction and its receipt, as far as deposits care."""

    tx_hash: str  # lowercase 0x + 64 hex
    block_number: int
    block_hash: str
    sender: str  # lowercase
    to: str | None  # lowercase; None for a contract creation
    value: int  # native base units (wei)
    succeeded: bool  # the receipt's status
    transfers: tuple[TokenTransfer, ...]


@dataclass(frozen=True)
class Finding:
    """One deposit a transaction makes (or the one refusal it gets). `refusal` is the reason
    when it cannot be credited; else `credits` > 0."""

    log_index: int
    sender: str
    symbol: str | None
    token: str | None
    amount: int
    credits: int
    refusal: str | None = None


def credits_for(amount: int, asset: AssetConfig) -> int:
    """Base units to credits, rounding down (integer arithmetic only)."""
    scale: int = 10**asset.decimals
    return amount * asset.credits_per_unit // scale


def _value_of(chain: ChainConfig, log_index: int, sender: str, token: str | None, amount: int) -> Finding:
    asset = chain.asset(token)
    if asset is None:
        what = f"token {token}" if token is not None else "the native currency"
        accepted = ", ".join(a.symbol for a in chain.assets) or "nothing"
        reason = f"{what} is not accepted on {chain.name} (accepted: {accepted})"
        return Finding(log_index, sender, None, token, amount, 0, refusal=reason)
    credits = credits_for(amount, asset)
    refusal = None
    if credits == 0:
        refusal = f"{amount} base units of {asset.symbol} are worth less than 1 credit"
    elif credits > MAX_CREDITS:
        refusal, credits = f"{asset.symbol} amount too large to credit", 0
    return Finding(log_index, sender, asset.symbol, token, amount, credits if refusal is None else 0, refusal)


def classify(chain: ChainConfig, tx: ChainTransaction) -> list[Finding]:
    """Every deposit `tx` makes to `chain`'s treasury, or one refusal (log index -1) saying why
    it makes none. Only transfers *to the treasury* count; a token transfer's sender is the
    log's `from` (whose tokens they were), a native transfer's the transaction's sender."""
    if not tx.succeeded:
        reason = "the transaction failed on chain (reverted): nothing was transferred"
        return [Finding(NATIVE_LOG_INDEX, tx.sender, None, None, 0, 0, refusal=reason)]
    findings: list[Finding] = []
    if tx.to == chain.treasury and tx.value > 0:
        findings.append(_value_of(chain, NATIVE_LOG_INDEX, tx.sender, None, tx.value))
    for transfer in tx.transfers:
        if transfer.recipient == chain.treasury and transfer.amount > 0:
            findings.append(
                _value_of(chain, transfer.log_index, transfer.sender, transfer.token, transfer.amount)
            )
    if not findings:
        reason = f"the transaction transfers nothing to the treasury {chain.treasury} on {chain.name}"
        return [Finding(NATIVE_LOG_INDEX, tx.sender, None, None, 0, 0, refusal=reason)]
    return findings


# -- confirmations and scanning ------------------------------------------------------------------
def confirmations(block_number: int, head: int) -> int:
    """How many blocks confirm a transaction in `block_number` when the chain is at `head` (its
    own block counts as the first)."""
    return max(0, head - block_number + 1)


def scan_range(cursor: int, head: int, max_blocks: int) -> tuple[int, int] | None:
    """The blocks to scan next: after `cursor` (the last block known final), up to the head,
    at most `max_blocks`. Blocks not yet final are scanned again each pass, so a block replaced
    in a reorganisation is read again. None when there is nothing new."""
    if head <= cursor:
        return None
    return cursor + 1, min(head, cursor + max_blocks)


def next_cursor(cursor: int, scanned_to: int, head: int, required: int) -> int:
    """The new cursor after scanning up to `scanned_to`: the last scanned block that has its
    `required` confirmations (never moving back)."""
    final = head - required + 1
    return max(cursor, min(scanned_to, final))


def summarise_pending(have: int, required: int) -> str:
    return f"waiting for confirmations: {have} of {required}"
