"""Prices, quotes and charges, in integer credits (pure: no I/O, no clock, no DB).

A tool's price is set by an admin as one of three models, or derived from what it costs us:

- ``per_run``: ``credits`` for every completed run.
- ``per_megapixel``: ``credits`` per output megapixel; the output size (width x height x batch)
  comes from the bound workflow's latent-size nodes, so it is known before anything runs.
- ``per_gpu_second``: ``credits`` per GPU second, at most ``cap`` credits (the quote is the cap).
- ``per_1k_tokens``: ``credits`` per 1000 tokens (prompt + completion) of an LLM tool; the quote is
  the tool's token bound (``LocalTool.max_tokens``) at that rate, the charge the tokens it used.
- derived (no model set): p95 GPU seconds of the tool's recent runs (a configured estimate
  until there are runs) x the pool's $/hour x the markup, in credits, rounded up, at least the
  minimum. It is charged as a fixed price per completed run.

A quote is the most a run can cost: submission holds it, settlement captures the actual charge
(never more than the hold) and releases the rest. Money never passes through a float: rates are
`Decimal` (from their decimal text) or integer arithmetic, and each amount is rounded up once.
Royalties are shares (basis points) of the captured charge, paid out of it, never added to it
(domain/credits.py `royalty_shares` and `royalty_amounts`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from enum import StrEnum
from typing import Any

from swarmstation.domain.errors import InvalidInput

__all__ = [
    "ChargePlan",
    "CostBasis",
    "JobEnd",
    "Outcome",
    "OutputSize",
    "PriceKind",
    "PriceModel",
    "PriceSpecError",
    "actual_charge",
    "derived_per_second",
    "derived_price",
    "output_size",
    "plan_charge",
]

PIXELS_PER_MEGAPIXEL = 1_000_000
TOKENS_PER_UNIT = 1000  # per_1k_tokens


class PriceKind(StrEnum):
    PER_RUN = "per_run"
    PER_MEGAPIXEL = "per_megapixel"
    PER_GPU_SECOND = "per_gpu_second"
    PER_1K_TOKENS = "per_1k_tokens"  # LLM tools: prompt + completion tokens
    DERIVED = "derived"  # no model set: from what the tool costs us


class PriceSpecError(InvalidInput):
    """A price model an admin set cannot be used (the message says why)."""

    code = "invalid_price"


@dataclass(frozen=True)
class PriceModel:
    """A price an admin set: `credits` per run, per output megapixel or per GPU second; `cap` (in
    credits) bounds a per-GPU-second run and is its quote. Per 1k tokens, `credits` is the rate of
    1000 tokens; the run's token bound (not the model) bounds it."""

    kind: PriceKind
    credits: int
    cap: int | None = None

    def __post_init__(self) -> None:
        if self.kind == PriceKind.DERIVED:
            raise PriceSpecError("model: 'derived' is what a tool without a model gets; it cannot be set")
        if self.credits < 0:
            raise PriceSpecError("credits: must be 0 or more")
        if self.kind == PriceKind.PER_GPU_SECOND:
            if self.cap is None:
                raise PriceSpecError("cap: a per_gpu_second price needs a cap (the most one run costs)")
            if self.cap < 1:
                raise PriceSpecError("cap: must be at least 1")
        elif self.cap is not None:
            raise PriceSpecError(f"cap: only a per_gpu_second price has a cap, not {self.kind.value}")


@dataclass(frozen=True)
class CostBasis:
    """What a derived price is computed from. `price_per_hour` is the pool's $/hour as decimal
    text's value (0 for the local provider, which then costs the minimum)."""

    gpu_seconds_p95: Decimal
    price_per_hour: Decimal
    markup: Decimal
    credits_per_usd: int
    min_credits: int


def _ceil(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def derived_per_second(basis: CostBasis) -> Decimal:
    """Credits per GPU second at the pool's rate with the markup (not rounded: it is a rate)."""
    return basis.price_per_hour / 3600 * basis.markup * basis.credits_per_usd


def derived_price(basis: CostBasis) -> int:
    """The price of one run of a tool without a price model: rounded up, at least the minimum."""
    return max(basis.min_credits, _ceil(basis.gpu_seconds_p95 * derived_per_second(basis)))


@dataclass(frozen=True)
class OutputSize:
    """The images a workflow makes: `images` of `pixels` each (the largest latent size)."""

    pixels: int
    images: int


def output_size(workflow: Mapping[str, Any]) -> OutputSize | None:
    """The output size of a bound workflow from its latent-size nodes (those with integer `width`
    and `height` inputs, e.g. EmptyLatentImage), or None when the graph does not say (an
    image-to-image or upscale tool whose size follows its input image). Several such nodes
    count their batches together at the largest size: an upper bound, as a quote must be."""
    pixels = images = 0
    for node in workflow.values():
        inputs = node.get("inputs", {}) if isinstance(node, Mapping) else {}
        width, height = inputs.get("width"), inputs.get("height")
        if type(width) is not int or type(height) is not int or width <= 0 or height <= 0:
            continue
        batch = inputs.get("batch_size", 1)
        pixels = max(pixels, width * height)
        images += batch if type(batch) is int and batch > 0 else 1
    return OutputSize(pixels, images) if images else None


def _megapixel_credits(credits: int, pixels: int, images: int) -> int:
    # integer ceiling of credits x megapixels: exact, no rounding in between
    return -(-(credits * pixels * images) // PIXELS_PER_MEGAPIXEL)


def _token_credits(credits: int, tokens: int) -> int:
    # integer ceiling of credits x tokens / 1000: a single token is never free
    return -(-(credits * max(0, tokens)) // TOKENS_PER_UNIT)


@dataclass(frozen=True)
class ChargePlan:
    """What submission decides about a job's charge and settlement reads back: the price model,
    the quote (held), the unit price, the output size (per megapixel) and the GPU-second rate
    that a run cancelled after it started pays."""

    kind: PriceKind
    quote: int
    unit_credits: int
    per_second: Decimal
    size: OutputSize | None = None


def plan_charge(
    price: PriceModel | None, *, workflow: Mapping[str, Any], basis: CostBasis, max_tokens: int = 0
) -> ChargePlan:
    """The charge plan of one run of a bound workflow. `max_tokens` is the most tokens (prompt +
    completion) one run of an LLM tool can use (`LocalTool.max_tokens`); a per-1k-tokens quote is
    that bound at the rate, rounded up. Raises PriceSpecError for a per-megapixel price on a
    workflow whose output size is not known before it runs, and for a per-1k-tokens price on a
    run without a token bound (a tool that does not use tokens: it would be free)."""
    fallback_rate = derived_per_second(basis)
    if price is not None and price.kind == PriceKind.PER_1K_TOKENS:
        if max_tokens <= 0:
            raise PriceSpecError(
                "this tool is priced per 1k tokens but does not use tokens (no token bound); "
                "an admin should give it another price model"
            )
        return ChargePlan(price.kind, _token_credits(price.credits, max_tokens), price.credits, fallback_rate)
    if price is None:
        quote = derived_price(basis)
        return ChargePlan(PriceKind.DERIVED, quote, quote, fallback_rate)
    if price.kind == PriceKind.PER_RUN:
        return ChargePlan(price.kind, price.credits, price.credits, fallback_rate)
    if price.kind == PriceKind.PER_GPU_SECOND:
        assert price.cap is not None  # PriceModel demands one
        return ChargePlan(price.kind, price.cap, price.credits, Decimal(price.credits))
    size = output_size(workflow)
    if size is None:
        raise PriceSpecError(
            "this tool is priced per megapixel but its workflow does not say its output size "
            "(no node with width and height); an admin should give it another price model"
        )
    quote = _megapixel_credits(price.credits, size.pixels, size.images)
    return ChargePlan(price.kind, quote, price.credits, fallback_rate, size)


class JobEnd(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Outcome:
    """How a job ended, as settlement sees it. `gpu_seconds` is its measured run time (0 if it
    never started); `images` the image outputs it uploaded; `tokens` the prompt + completion
    tokens an LLM tool used (`job.timings["tokens"]`, 0 when unknown)."""

    end: JobEnd
    started: bool
    gpu_seconds: Decimal
    images: int = 0
    tokens: int = 0


def actual_charge(plan: ChargePlan, outcome: Outcome, *, hold: int) -> int:
    """The credits to capture, never more than the hold.

    Completed: the price (per megapixel: of the images it made; per GPU second: of the seconds it
    ran; per 1k tokens: of the tokens it used, at most the quote). Failed: nothing, whatever the
    cause (we validated its inputs before accepting it, so even a ComfyUI error is ours to carry).
    Cancelled before it started: nothing; after: its GPU seconds at the plan's rate, or for a
    per-1k-tokens plan the tokens it had used (an LLM run's cost is its tokens, not its seconds).
    """
    if outcome.end == JobEnd.FAILED:
        return 0
    seconds = max(Decimal(0), outcome.gpu_seconds)
    if plan.kind == PriceKind.PER_1K_TOKENS:
        charge = min(plan.quote, _token_credits(plan.unit_credits, outcome.tokens))  # 0 if never started
    elif outcome.end == JobEnd.CANCELLED:
        charge = _ceil(seconds * plan.per_second) if outcome.started else 0
    elif plan.kind == PriceKind.PER_GPU_SECOND:
        charge = _ceil(seconds * plan.unit_credits)
    elif plan.kind == PriceKind.PER_MEGAPIXEL and plan.size is not None:
        images = min(outcome.images, plan.size.images)
        charge = _megapixel_credits(plan.unit_credits, plan.size.pixels, images)
    else:
        charge = plan.quote
    return max(0, min(hold, charge))
