"""The quote's cost basis in memory (control/charging.py `CostBases`, SQLite and PostgreSQL): read
once per TTL, a completion here counted at once, a change elsewhere seen after the TTL; without a
TTL every quote reads the database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.control import charging, submission
from swarmstation.control import jobs as jobs_ops
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, Job, Tool
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user

TOOL = "sd15-txt2img"


@pytest.fixture
def plane(settings: Settings, clock: FakeClock) -> Iterator[ControlPlane]:
    cp = build(settings, provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


def _completed(plane: ControlPlane, s: Session, clock: FakeClock, inst: Instance, run_seconds: float) -> Job:
    user, _ = add_user(s, clock())
    job = submission.submit(
        s,
        user=user,
        tool_slug=TOOL,
        inputs={"prompt": "a fox"},
        matchers=plane.state.matchers,
        limits=submission.SubmissionLimits(max_prompt_chars=500, max_loras_per_job=4, max_attempts=2),
        now=clock(),
        random_seed=5,
    )
    jobs_ops.assign_job(s, job, inst, lease_seconds=60, now=clock())
    jobs_ops.mark_running(s, job, lease_seconds=60, now=clock())
    clock.advance(1)
    jobs_ops.complete_job(s, job, timings={"run_seconds": run_seconds}, now=clock())
    return job


def test_read_once_per_ttl_and_a_change_elsewhere_seen_after_it(
    plane: ControlPlane, clock: FakeClock
) -> None:
    ticks = [0.0]
    bases = charging.CostBases(clock=lambda: ticks[0])
    with transaction(plane.state.sessions) as s:
        inst, _ = add_instance(s, clock())
        inst.price_per_hour = 3.6
        _completed(plane, s, clock, inst, 10.0)
    with transaction(plane.state.sessions) as s:
        assert bases.runs(s, TOOL, 50, ttl=5) == [Decimal("10.0")]
        assert bases.price(s, "default", Decimal(1), ttl=5) == Decimal("3.6")
    # another replica completes a job and a new price is set: not read within the TTL...
    with transaction(plane.state.sessions) as s:
        inst = s.scalars(select(Instance)).one()
        _completed(plane, s, clock, inst, 30.0)
        inst.price_per_hour = 7.2
    with transaction(plane.state.sessions) as s:
        ticks[0] = 4.9
        assert bases.runs(s, TOOL, 50, ttl=5) == [Decimal("10.0")]
        assert bases.price(s, "default", Decimal(1), ttl=5) == Decimal("3.6")
        # ...and read once it is over
        ticks[0] = 5.0
        assert bases.runs(s, TOOL, 50, ttl=5) == [Decimal("30.0"), Decimal("10.0")]
        assert bases.price(s, "default", Decimal(1), ttl=5) == Decimal("7.2")
    # a completion observed here goes in front at once, the window kept at its sample
    bases.observe_run(TOOL, Decimal("2.5"))
    with transaction(plane.state.sessions) as s:
        assert bases.runs(s, TOOL, 50, ttl=5) == [Decimal("2.5"), Decimal("30.0"), Decimal("10.0")]
    bases.observe_run("a-tool-not-cached", Decimal(1))  # nothing cached: nothing to update
    with transaction(plane.state.sessions) as s:
        assert bases.runs(s, TOOL, 2, ttl=5) == [Decimal("30.0"), Decimal("10.0")]  # another sample: read


def test_a_completion_counts_in_the_next_quote_at_once(plane: ControlPlane, clock: FakeClock) -> None:
    cached = charging.ChargeSettings.from_settings(plane.state.settings)
    cached = replace(cached, basis_ttl_seconds=3600.0)
    with transaction(plane.state.sessions) as s:
        tool = s.get(Tool, TOOL)
        assert tool is not None
        inst, _ = add_instance(s, clock())
        first = charging.cost_basis(s, tool, cached)  # nothing completed: the default estimate
        assert first.gpu_seconds_p95 == cached.default_gpu_seconds
    with transaction(plane.state.sessions) as s:
        inst = s.scalars(select(Instance)).one()
        _completed(plane, s, clock, inst, 12.5)
    with transaction(plane.state.sessions) as s:
        tool = s.get(Tool, TOOL)
        assert tool is not None
        # within the hour's TTL: the completion was observed, not read
        assert charging.cost_basis(s, tool, cached).gpu_seconds_p95 == Decimal("12.5")
        uncached = charging.ChargeSettings.from_settings(plane.state.settings)
        assert uncached.basis_ttl_seconds == 0  # the default: every quote reads
        assert charging.cost_basis(s, tool, uncached).gpu_seconds_p95 == Decimal("12.5")
