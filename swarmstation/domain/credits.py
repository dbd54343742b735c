"""Credits: the unit of money, how a hold is settled, how royalties are split, the Hold lifecycle.

Units
-----
Money is an integer number of credits everywhere; `SWARMSTATION_CREDITS_PER_USD` (default 1000)
fixes their worth, so by default 1 credit = $0.001. No float ever holds money: dollar amounts come
in as `Decimal` dollars or as integer micro-dollars, and a conversion to credits rounds *up* (a
price never rounds in the payer's favour to zero).

The account model (kept by `control/ledger.py`)
---------------------------------------------
An account has a `balance` (credits owned, held ones included) and `held` (credits reserved by
open holds); `available = balance - held`, and `0 <= held <= balance` always. Every movement is
a ledger entry carrying its change to the balance (`amount`) and its change to the held credits
(`held_change`), so the balance is the sum of the entries' amounts and `held` the sum of their
held changes:

| entry      | amount   | held_change | when                                                  |
|------------|----------|-------------|-------------------------------------------------------|
| grant      | +N       | 0           | an admin (or the welcome grant) gives credits         |
| adjustment | -N       | 0           | an admin takes credits back (never below what is held) |
| deposit    | +N       | 0           | a confirmed on-chain deposit                          |
| hold       | 0        | +N          | a job is submitted with a quote of N                  |
| capture    | -C       | -C          | the job's charge C (C <= N) is taken from the hold    |
| release    | 0        | -(N - C)    | the rest of the hold goes back to available           |
| royalty    | +R       | 0           | an author's share of a captured charge (R from C)      |

A hold is OPEN until it is settled once: CAPTURED (with a capture entry and, if anything is left,
a release entry) or RELEASED (a release entry for all of it). Royalties come out of the captured
charge: the payer pays C in total, authors receive their shares, the platform keeps the rest.

A run's hold is captured in parts: each step job's charge is a capture entry of its own while the
hold stays OPEN (`captured` adds up, never beyond `amount`), and when the run ends what is left
is released and the hold closes: CAPTURED if any part was captured, else RELEASED. An open hold
holds `amount - captured`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from enum import StrEnum

from swarmstation.domain.errors import InvalidInput, PaymentRequired
from swarmstation.domain.states import Lifecycle, Rule, register

__all__ = [
    "BPS",
    "DEFAULT_ROYALTY_CAP_BPS",
    "DEFAULT_ROYALTY_PER_LORA_BPS",
    "HOLD",
    "MAX_CREDITS",
    "EntryKind",
    "HoldState",
    "HoldTrigger",
    "InsufficientCredits",
    "RoyaltyShare",
    "Settlement",
    "credits_to_usd",
    "royalty_amounts",
    "royalty_shares",
    "settle",
    "usd_to_credits",
]

# Basis points: 10_000 = 100%.
BPS = 10_000
# The earlier platform's shares: 5% of the charge per LoRA of another author, at most 15% a job.
DEFAULT_ROYALTY_PER_LORA_BPS = 500
DEFAULT_ROYALTY_CAP_BPS = 1_500
# The largest amount one movement may carry: far above any real charge, far below BigInteger's
# 2**63 - 1, so that sums of many entries cannot overflow the column.
MAX_CREDITS = 10**15

_MICROS_PER_USD = 1_000_000


class EntryKind(StrEnum):
    """What a ledger entry records (the table in the module docstring)."""

    GRANT = "grant"
    ADJUSTMENT = "adjustment"
    DEPOSIT = "deposit"
    HOLD = "hold"
    CAPTURE = "capture"
    RELEASE = "release"
    ROYALTY = "royalty"


class InsufficientCredits(PaymentRequired):
    """A hold larger than the account's available credits. The API answers 402 with `required`
    and `available` in the body, and nothing is written."""

    code = "insufficient_credits"

    def __init__(self, required: int, available: int) -> None:
        super().__init__(f"insufficient credits: this needs {required}, {available} available")
        self.required = required
        self.available = available

    @property
    def extra_body(self) -> dict[str, int]:
        """Fields the API adds to the error body (api/errors.py)."""
        return {"required": self.required, "available": self.available}


def usd_to_credits(usd: Decimal | int, credits_per_usd: int) -> int:
    """Dollars as credits, rounded up. `usd` is a `Decimal` number of dollars or an `int` number
    of micro-dollars (1_000_000 = $1); a float is refused, since it cannot hold money exactly."""
    if isinstance(usd, bool) or not isinstance(usd, Decimal | int):
        raise TypeError(
            f"money must be a Decimal (dollars) or an int (micro-dollars), not {type(usd).__name__}"
        )
    if credits_per_usd <= 0:
        raise InvalidInput("credits_per_usd must be positive")
    if isinstance(usd, int):
        # ceil(micros * rate / 1e6) in integers
        return -((-usd * credits_per_usd) // _MICROS_PER_USD)
    if not usd.is_finite():
        raise InvalidInput(f"not an amount of money: {usd}")
    return int((usd * credits_per_usd).to_integral_value(rounding=ROUND_CEILING))


def credits_to_usd(credits: int, credits_per_usd: int) -> Decimal:
    """What credits are worth in dollars, exactly (for reports such as the P&L)."""
    if credits_per_usd <= 0:
        raise InvalidInput("credits_per_usd must be positive")
    return Decimal(credits) / Decimal(credits_per_usd)


@dataclass(frozen=True)
class Settlement:
    """How a hold ends: `captured` is charged, `released` goes back to available."""

    captured: int
    released: int


def settle(held: int, charge: int) -> Settlement:
    """Settle a hold of `held` credits for a charge of `charge`: the charge may not exceed the
    hold (the quote is the most a run can cost) and the rest is released."""
    if charge < 0:
        raise InvalidInput.at("amount", f"a charge cannot be negative ({charge})")
    if charge > held:
        raise InvalidInput.at("amount", f"a charge of {charge} exceeds its hold of {held}")
    return Settlement(captured=charge, released=held - charge)


@dataclass(frozen=True)
class RoyaltyShare:
    """An author's share of a job's charge, in basis points: fixed when the job is quoted (and
    stored with its hold), paid out of the captured charge by `royalty_amounts`. `ref_type` says
    what earns it: "lora" (`lora` is its slug) or "pipeline" (a saved pipeline's id)."""

    lora: str
    author_id: str
    bps: int
    ref_type: str = "lora"


def _check_bps(per_lora_bps: int, cap_bps: int) -> None:
    if not 0 <= per_lora_bps <= BPS or not 0 <= cap_bps <= BPS:
        raise InvalidInput(f"royalty shares are basis points between 0 and {BPS}")


def royalty_shares(
    applied: Sequence[tuple[str, str | None]],
    *,
    payer_id: str,
    per_lora_bps: int = DEFAULT_ROYALTY_PER_LORA_BPS,
    cap_bps: int = DEFAULT_ROYALTY_CAP_BPS,
) -> list[RoyaltyShare]:
    """The royalty shares of the LoRAs a job applied, `(slug, owner_id)` in the order applied.
    A LoRA earns `per_lora_bps` for its owner when someone else owns it (the payer's own LoRAs
    and ownerless ones earn nothing), once however often the job applies it; when the shares
    together would exceed `cap_bps`, each gets an equal part of the cap, rounded down."""
    _check_bps(per_lora_bps, cap_bps)
    earning: dict[str, str] = {}
    for slug, owner in applied:
        if owner is not None and owner != payer_id and slug not in earning:
            earning[slug] = owner
    if not earning:
        return []
    each = min(per_lora_bps, cap_bps // len(earning))
    if each == 0:
        return []
    return [RoyaltyShare(slug, owner, each) for slug, owner in earning.items()]


def royalty_amounts(charge: int, shares: Sequence[RoyaltyShare]) -> list[tuple[RoyaltyShare, int]]:
    """Each share's credits out of a captured `charge`, rounded down (the platform keeps the
    remainders, so the authors together never receive more than the charge); shares that come
    to nothing are left out."""
    if charge < 0:
        raise InvalidInput(f"a charge cannot be negative ({charge})")
    if any(x.bps < 0 for x in shares) or sum(x.bps for x in shares) > BPS:
        raise InvalidInput(f"royalty shares are basis points adding up to at most {BPS}")
    paid = [(share, charge * share.bps // BPS) for share in shares]
    return [(share, amount) for share, amount in paid if amount > 0]


# -- the Hold lifecycle ---------------------------------------------------------------------------


class HoldState(StrEnum):
    OPEN = "open"
    CAPTURED = "captured"
    RELEASED = "released"


class HoldTrigger(StrEnum):
    CAPTURE = "CAPTURE"
    CAPTURE_PART = "CAPTURE_PART"
    RELEASE = "RELEASE"


HOLD: Lifecycle[HoldState, HoldTrigger] = register(
    Lifecycle(
        "hold",
        HoldState,
        HoldTrigger,
        initial=HoldState.OPEN,
        about="Credits reserved for one job or run; settled exactly once. A capture takes at most "
        "the hold and releases the rest; a run's hold is captured in parts (one per step job) and "
        "closed when the run ends.",
        rules=[
            Rule(
                (HoldState.OPEN,),
                HoldTrigger.CAPTURE_PART,
                HoldState.OPEN,
                "a run's step job was charged: its part is taken, the rest stays held",
            ),
            Rule(
                (HoldState.OPEN,),
                HoldTrigger.CAPTURE,
                HoldState.CAPTURED,
                "the job or run ended charged: its charge is taken, the rest released",
            ),
            Rule(
                (HoldState.OPEN,),
                HoldTrigger.RELEASE,
                HoldState.RELEASED,
                "not charged (no part captured): all of it goes back",
            ),
        ],
    )
)
