"""domain.prices: price models, derived prices, quotes and actual charges, all in integer credits
(royalty shares are in domain.credits, tested in test_credits.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from swarmstation.domain.prices import (
    ChargePlan,
    CostBasis,
    JobEnd,
    Outcome,
    OutputSize,
    PriceKind,
    PriceModel,
    PriceSpecError,
    actual_charge,
    derived_per_second,
    derived_price,
    output_size,
    plan_charge,
)


def basis(seconds: str = "10", rate: str = "0.36", markup: str = "2.0", minimum: int = 1) -> CostBasis:
    return CostBasis(
        gpu_seconds_p95=Decimal(seconds),
        price_per_hour=Decimal(rate),
        markup=Decimal(markup),
        credits_per_usd=1000,
        min_credits=minimum,
    )


LATENT = {"5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 2}}}


def test_derived_price_is_p95_seconds_times_rate_times_markup_rounded_up() -> None:
    # $0.36/h = $0.0001/s; x2 markup = $0.0002/s = 0.2 credits/s; 10 s = 2 credits exactly
    assert derived_per_second(basis()) == Decimal("0.2")
    assert derived_price(basis()) == 2
    # 10.1 s → 2.02 credits → rounded up once, to 3
    assert derived_price(basis(seconds="10.1")) == 3
    # the local provider costs nothing: the minimum applies
    assert derived_price(basis(rate="0", minimum=5)) == 5


def test_no_float_drift_in_a_derived_price() -> None:
    # 0.1 + 0.2 style drift would make 3 seconds at 0.1 credits/s 0.30000000000000004 → 1 credit
    # with floats rounded up; in Decimal it is exactly 0.3 → 1 credit, and 30 s exactly 3
    rate = basis(seconds="30", rate="0.18", markup="1.0")  # 0.05 credits/s
    assert derived_price(rate) == 2
    assert derived_price(basis(seconds="30", rate="0.36", markup="1.0")) == 3


def test_output_size_from_the_latent_node_and_none_when_unknown() -> None:
    assert output_size(LATENT) == OutputSize(1024 * 1024, 2)
    assert output_size({"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}) is None
    # a missing batch size is one image; a non-integer width is not a size
    assert output_size({"5": {"inputs": {"width": 512, "height": 512}}}) == OutputSize(512 * 512, 1)
    assert output_size({"5": {"inputs": {"width": "512", "height": 512}}}) is None


def test_per_megapixel_quote_is_rounded_up_and_the_charge_follows_the_outputs() -> None:
    plan = plan_charge(PriceModel(PriceKind.PER_MEGAPIXEL, 3), workflow=LATENT, basis=basis())
    # 2 images of 1.048576 MP at 3 credits/MP = 6.291456 → 7
    assert plan.quote == 7
    done = Outcome(JobEnd.COMPLETED, started=True, gpu_seconds=Decimal(4), images=1)
    assert actual_charge(plan, done, hold=plan.quote) == 4  # one image: 3.145728 → 4
    more = Outcome(JobEnd.COMPLETED, started=True, gpu_seconds=Decimal(4), images=9)
    assert actual_charge(plan, more, hold=plan.quote) == 7  # never more than the quote
    with pytest.raises(PriceSpecError, match="output size"):
        plan_charge(PriceModel(PriceKind.PER_MEGAPIXEL, 3), workflow={}, basis=basis())


def test_per_gpu_second_quotes_its_cap_and_charges_measured_seconds() -> None:
    plan = plan_charge(PriceModel(PriceKind.PER_GPU_SECOND, 2, cap=50), workflow={}, basis=basis())
    assert plan.quote == 50
    ran = Outcome(JobEnd.COMPLETED, started=True, gpu_seconds=Decimal("7.2"))
    assert actual_charge(plan, ran, hold=50) == 15  # 14.4 → 15
    long = Outcome(JobEnd.COMPLETED, started=True, gpu_seconds=Decimal(600))
    assert actual_charge(plan, long, hold=50) == 50


def test_failures_are_free_and_cancels_pay_only_for_started_seconds() -> None:
    plan = plan_charge(PriceModel(PriceKind.PER_RUN, 40), workflow={}, basis=basis())
    assert plan.quote == 40 and plan.per_second == Decimal("0.2")
    failed = Outcome(JobEnd.FAILED, started=True, gpu_seconds=Decimal(100))
    assert actual_charge(plan, failed, hold=40) == 0
    before = Outcome(JobEnd.CANCELLED, started=False, gpu_seconds=Decimal(0))
    assert actual_charge(plan, before, hold=40) == 0
    after = Outcome(JobEnd.CANCELLED, started=True, gpu_seconds=Decimal(12))
    assert actual_charge(plan, after, hold=40) == 3  # 12 s x 0.2 = 2.4 → 3
    very_long = Outcome(JobEnd.CANCELLED, started=True, gpu_seconds=Decimal(10_000))
    assert actual_charge(plan, very_long, hold=40) == 40
    done = Outcome(JobEnd.COMPLETED, started=True, gpu_seconds=Decimal(1))
    assert actual_charge(plan, done, hold=40) == 40


def test_a_derived_plan_is_a_fixed_price_per_run() -> None:
    plan = plan_charge(None, workflow=LATENT, basis=basis(seconds="100"))
    assert plan == ChargePlan(PriceKind.DERIVED, 20, 20, Decimal("0.2"))
    done = Outcome(JobEnd.COMPLETED, started=True, gpu_seconds=Decimal(1))
    assert actual_charge(plan, done, hold=20) == 20


@pytest.mark.parametrize(
    ("kind", "credits", "cap", "message"),
    [
        (PriceKind.PER_GPU_SECOND, 1, None, "needs a cap"),
        (PriceKind.PER_GPU_SECOND, 1, 0, "at least 1"),
        (PriceKind.PER_RUN, 1, 10, "only a per_gpu_second"),
        (PriceKind.PER_RUN, -1, None, "0 or more"),
        (PriceKind.DERIVED, 1, None, "cannot be set"),
    ],
)
def test_bad_price_models_are_refused(kind: PriceKind, credits: int, cap: int | None, message: str) -> None:
    with pytest.raises(PriceSpecError, match=message) as caught:
        PriceModel(kind, credits, cap)
    assert caught.value.status_hint == 422


def test_per_1k_tokens_quotes_the_token_bound_and_charges_the_tokens_used() -> None:
    model = PriceModel(PriceKind.PER_1K_TOKENS, 2)
    plan = plan_charge(model, workflow={}, basis=basis(), max_tokens=1_801)
    # 1801 tokens x 2 credits / 1000 = 3.602 → 4
    assert plan.kind == PriceKind.PER_1K_TOKENS and plan.quote == 4 and plan.unit_credits == 2
    used = Outcome(JobEnd.COMPLETED, started=True, gpu_seconds=Decimal(3), tokens=600)
    assert actual_charge(plan, used, hold=plan.quote) == 2  # 1.2 → 2
    one = Outcome(JobEnd.COMPLETED, started=True, gpu_seconds=Decimal(3), tokens=1)
    assert actual_charge(plan, one, hold=plan.quote) == 1  # a token is never free
    over = Outcome(JobEnd.COMPLETED, started=True, gpu_seconds=Decimal(3), tokens=50_000)
    assert actual_charge(plan, over, hold=plan.quote) == 4  # never more than the quote
    assert actual_charge(plan, over, hold=3) == 3  # nor the hold
    unknown = Outcome(JobEnd.COMPLETED, started=True, gpu_seconds=Decimal(3))
    assert actual_charge(plan, unknown, hold=plan.quote) == 0
    # seconds do not matter: an LLM run costs its tokens, not the control plane's time
    slow = Outcome(JobEnd.COMPLETED, started=True, gpu_seconds=Decimal(10_000), tokens=600)
    assert actual_charge(plan, slow, hold=plan.quote) == 2


def test_per_1k_tokens_failures_are_free_and_cancels_pay_for_the_tokens_used() -> None:
    plan = plan_charge(PriceModel(PriceKind.PER_1K_TOKENS, 3), workflow={}, basis=basis(), max_tokens=2000)
    assert plan.quote == 6
    failed = Outcome(JobEnd.FAILED, started=True, gpu_seconds=Decimal(5), tokens=1500)
    assert actual_charge(plan, failed, hold=6) == 0
    before = Outcome(JobEnd.CANCELLED, started=False, gpu_seconds=Decimal(0))
    assert actual_charge(plan, before, hold=6) == 0
    after = Outcome(JobEnd.CANCELLED, started=True, gpu_seconds=Decimal(100), tokens=400)
    assert actual_charge(plan, after, hold=6) == 2  # 1.2 → 2, not 100 s at the fallback rate


def test_per_1k_tokens_needs_a_token_bound_and_other_models_ignore_it() -> None:
    with pytest.raises(PriceSpecError, match="does not use tokens") as caught:
        plan_charge(PriceModel(PriceKind.PER_1K_TOKENS, 2), workflow=LATENT, basis=basis())
    assert caught.value.status_hint == 422
    with pytest.raises(PriceSpecError, match="0 or more"):
        PriceModel(PriceKind.PER_1K_TOKENS, -1)
    with pytest.raises(PriceSpecError, match="only a per_gpu_second"):
        PriceModel(PriceKind.PER_1K_TOKENS, 2, cap=10)
    # a free LLM tool: quoted and charged 0
    free = plan_charge(PriceModel(PriceKind.PER_1K_TOKENS, 0), workflow={}, basis=basis(), max_tokens=900)
    done = Outcome(JobEnd.COMPLETED, started=True, gpu_seconds=Decimal(1), tokens=900)
    assert free.quote == 0 and actual_charge(free, done, hold=0) == 0
    # the token bound changes nothing for the other models
    per_run = plan_charge(PriceModel(PriceKind.PER_RUN, 40), workflow={}, basis=basis(), max_tokens=5000)
    assert per_run.quote == 40
    assert plan_charge(None, workflow=LATENT, basis=basis(), max_tokens=5000).quote == 2
