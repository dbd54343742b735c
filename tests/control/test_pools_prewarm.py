"""Pre-warm in the live pool loop: with `pool_prewarm` on, the loop reads the pool's arrival history
from the jobs table, forecasts with domain/forecast.py (as the simulator does) and launches ahead of
a daily peak; off, the same history launches nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from swarmstation.config import Settings
from swarmstation.domain.states import InstanceState, JobState
from swarmstation.providers.base import LaunchSpec, ProviderInstance
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance
from tests.conftest import FakeClock
from tests.helpers import add_user, plane_with_pool, submit


class CountingProvider:
    name = "test"

    def __init__(self) -> None:
        self.launched: list[LaunchSpec] = []

    def launch(self, spec: LaunchSpec) -> str:
        self.launched.append(spec)
        return f"p{len(self.launched)}"

    def list(self) -> list[ProviderInstance]:
        return [ProviderInstance(f"p{k + 1}", s.instance_id, True, 0.5) for k, s in enumerate(self.launched)]

    def destroy(self, provider_id: str) -> None:
        pass


def _history(settings: Settings, clock: FakeClock, provider: CountingProvider):  # type: ignore[no-untyped-def]
    """Seven days of a daily cycle in pool `gpu`: 40 jobs in each 18:00 hour, one job at 06:00."""
    cp = plane_with_pool(settings, {"test": provider}, clock, max_instances=4)
    now = clock()
    with transaction(cp.state.sessions) as s:
        user, _ = add_user(s, now)
        for day in range(1, 8):
            peak = now.replace(hour=18, minute=0) - timedelta(days=day)
            times = [peak + timedelta(seconds=90 * k) for k in range(40)]
            times.append(now.replace(hour=6, minute=0) - timedelta(days=day))
            for t in times:
                job = submit(s, user, t)
                job.pool, job.state = "gpu", JobState.COMPLETED
                job.finished_at = t + timedelta(seconds=30)
                job.timings = {"run_seconds": 30.0}
    return cp


@pytest.mark.parametrize(("prewarm", "launches"), [(True, 1), (False, 0)])
def test_the_pool_launches_ahead_of_the_daily_peak(
    tmp_path: Path, database_url: str, prewarm: bool, launches: int
) -> None:
    clock = FakeClock(datetime(2026, 3, 10, 17, 50, tzinfo=UTC))  # ten minutes before the peak
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        provider="none",
        pool_prewarm=prewarm,
        public_url="http://cp.test",
    )
    provider = CountingProvider()
    cp = _history(settings, clock, provider)
    try:
        cp.pools.scale(provider)
        assert len(provider.launched) == launches
        with transaction(cp.state.sessions) as s:
            rows = list(s.scalars(select(Instance).where(Instance.pool == "gpu")))
        assert len(rows) == launches
        if launches:
            assert rows[0].state == InstanceState.PROVISIONING and "pre-warm" in (rows[0].state_reason or "")
    finally:
        cp.state.engine.dispose()


def test_no_prewarm_in_the_quiet_hours(tmp_path: Path, database_url: str) -> None:
    clock = FakeClock(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        provider="none",
        pool_prewarm=True,
        public_url="http://cp.test",
    )
    provider = CountingProvider()
    cp = _history(settings, clock, provider)
    try:
        cp.pools.scale(provider)
        assert provider.launched == []
        # the history was read (7 x 41 jobs), and is kept for the next pass, which reads only newer jobs
        with transaction(cp.state.sessions) as s:
            assert len(cp.pools.forecasts.arrivals(s, "gpu", clock())) == 7 * 41
    finally:
        cp.state.engine.dispose()
