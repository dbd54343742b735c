"""The one retry-delay formula (swarmstation/domain/backoff.py): exponential, capped, full jitter."""

from __future__ import annotations

import random
from itertools import islice

import pytest

from swarmstation.domain.backoff import backoff_delay, backoff_delays


def test_the_ceiling_doubles_from_base_up_to_the_cap() -> None:
    top = [backoff_delay(n, base=1.0, cap=30.0, rand=lambda: 1.0) for n in range(7)]
    assert top == [1, 2, 4, 8, 16, 30, 30]
    assert list(islice(backoff_delays(base=0.2, cap=5.0, rand=lambda: 1.0), 7)) == pytest.approx(
        [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    )


def test_full_jitter_spreads_delays_over_the_whole_window() -> None:
    rng = random.Random(3)
    delays = [backoff_delay(4, base=1.0, cap=30.0, rand=rng.random) for _ in range(500)]
    assert all(0 <= d < 16 for d in delays)
    assert min(delays) < 1 and max(delays) > 15
    assert 6 < sum(delays) / len(delays) < 10  # uniform: the mean is half the ceiling


def test_the_same_random_numbers_give_the_same_delays() -> None:
    first = list(islice(backoff_delays(base=0.5, cap=8.0, rand=random.Random(7).random), 20))
    again = list(islice(backoff_delays(base=0.5, cap=8.0, rand=random.Random(7).random), 20))
    assert first == again


def test_a_huge_attempt_is_the_cap_not_an_overflow() -> None:
    assert backoff_delay(5000, base=1.0, cap=30.0, rand=lambda: 0.5) == 15.0


def test_negative_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        backoff_delay(-1, base=1.0, cap=1.0, rand=lambda: 0.5)
    with pytest.raises(ValueError):
        backoff_delay(0, base=-1.0, cap=1.0, rand=lambda: 0.5)
