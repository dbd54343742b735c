"""The one percentile helper (swarmstation/domain/stats.py)."""

from __future__ import annotations

import pytest

from swarmstation.domain.stats import percentile


def test_interpolates_between_the_nearest_values() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.99) == pytest.approx(99.01)
    assert percentile([10.0, 20.0], 0.95) == pytest.approx(19.5)
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0  # order does not matter


def test_no_values_and_one_value() -> None:
    assert percentile([], 0.99) == 0.0
    assert percentile([4.5], 0.99) == 4.5


@pytest.mark.parametrize("q", [0.0, 1.0, 0.995, -0.5, 1.5])
def test_only_whole_percents_inside_the_range(q: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0, 2.0], q)
