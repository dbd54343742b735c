"""The traffic split: sticky per job, and close to the asked share."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from swarmstation.domain.traffic_split import choose_executor


def test_extremes() -> None:
    assert choose_executor("any", 0) == "pool" and choose_executor("any", 100) == "comfydeploy"


def test_share_is_close_to_the_percentage() -> None:
    ids = [str(uuid.UUID(int=n)) for n in range(10_000)]
    share = sum(choose_executor(i, 30) == "comfydeploy" for i in ids) / len(ids)
    assert 0.28 < share < 0.32


@given(job_id=st.text(min_size=1, max_size=40), low=st.integers(0, 100), high=st.integers(0, 100))
def test_sticky_and_monotonic(job_id: str, low: int, high: int) -> None:
    assert choose_executor(job_id, low) == choose_executor(job_id, low)
    low, high = min(low, high), max(low, high)
    if choose_executor(job_id, low) == "comfydeploy":  # raising the share never moves a job back
        assert choose_executor(job_id, high) == "comfydeploy"
