"""The marketplace's launch draws fail at the rate its preset states (per launch attempt)."""

from __future__ import annotations

import pytest

from swarmstation.sim.market import MARKETS, draw_rental, scaled

FAILURES = ("never_running_prob", "never_ready_prob")


def _rates(market, n: int = 3000) -> tuple[float, float]:
    draws = [draw_rental(market, i, seed=5, interruptible=False, bid_margin=0.1) for i in range(n)]
    failed = sum(d.never_running or d.never_ready for d in draws) / n
    never_running = sum(d.never_running for d in draws) / n
    return failed, never_running


@pytest.mark.parametrize("preset", sorted(MARKETS))
@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_launches_fail_at_the_stated_rate(preset: str, factor: float) -> None:
    # The rented offer is the ranked best, more reliable than the average offer; before the
    # calibration the launches failed at ~43% of the stated rate (optimistic 3% for 7%, observed 26%
    # for 60%), so halving or doubling the assumption barely moved a day's ~16 launches.
    market = scaled(MARKETS[preset], FAILURES, factor, cap=0.45)
    stated = market.never_running_prob + market.never_ready_prob
    failed, never_running = _rates(market)
    assert failed == pytest.approx(stated, abs=0.025)
    assert never_running == pytest.approx(market.never_running_prob, abs=0.025)


def test_halving_the_rate_halves_the_failed_launches() -> None:
    # common random numbers: the same launches' draws under each rate, so sensitivity rows move
    market = MARKETS["observed"]
    half, _ = _rates(scaled(market, FAILURES, 0.5))
    full, _ = _rates(market)
    assert full > 1.8 * half


def test_no_failures_when_the_rate_is_zero() -> None:
    market = scaled(MARKETS["optimistic"], FAILURES, 0.0)
    assert _rates(market, 500) == (0.0, 0.0)
