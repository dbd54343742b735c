"""Job costs add up to the instance bill."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmstation.domain.pricing import BilledInstance, JobRun, bill

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_simple_split() -> None:
    inst = BilledInstance("i", 3.6, T0, T0 + timedelta(seconds=1000))  # $0.001 per second → $1.00
    runs = [
        JobRun("a", "i", T0 + timedelta(seconds=100), T0 + timedelta(seconds=400)),
        JobRun("b", "i", T0 + timedelta(seconds=500), T0 + timedelta(seconds=600)),
    ]
    total, jobs = bill(inst, runs, now=T0)
    assert total.cost == pytest.approx(1.0) and total.busy_seconds == 400
    a, b = jobs
    assert a.gpu_cost == pytest.approx(0.3) and b.gpu_cost == pytest.approx(0.1)
    assert a.overhead_cost == pytest.approx(0.45) and b.overhead_cost == pytest.approx(0.15)  # 0.6 idle, 3:1
    assert a.total + b.total == pytest.approx(total.cost) and total.unattributed == 0


def test_idle_instance_is_unattributed_and_live_instance_bills_to_now() -> None:
    inst = BilledInstance("i", 1.8, T0, None)
    total, jobs = bill(inst, [], now=T0 + timedelta(hours=2))
    assert jobs == [] and total.cost == pytest.approx(3.6) and total.unattributed == pytest.approx(3.6)


@given(
    price=st.floats(0, 10),
    life=st.integers(1, 100_000),
    spans=st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 5_000)), max_size=20),
)
def test_job_costs_add_up_to_the_bill(price: float, life: int, spans: list[tuple[int, int]]) -> None:
    inst = BilledInstance("i", price, T0, T0 + timedelta(seconds=life))
    runs = [
        JobRun(f"j{k}", "i", T0 + timedelta(seconds=s), T0 + timedelta(seconds=s + d))
        for k, (s, d) in enumerate(spans)
        if s + d <= life
    ]
    total, jobs = bill(inst, runs, now=T0)
    assert sum(j.total for j in jobs) + total.unattributed == pytest.approx(total.cost, rel=1e-9, abs=1e-9)
    assert all(j.gpu_cost >= 0 and j.overhead_cost >= 0 for j in jobs)
