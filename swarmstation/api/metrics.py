"""Prometheus metrics: gauges read from the database at scrape time, so every replica agrees."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from swarmstation.api.deps import AppState
from swarmstation.domain.states import InstanceState, JobState
from swarmstation.store.models import Instance, Job


class StateCollector(Collector):
    def __init__(self, state: AppState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        with self.state.sessions() as s, s.begin():
            jobs = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
            instances = s.execute(
                select(Instance.pool, Instance.state, func.count()).group_by(Instance.pool, Instance.state)
            ).all()
        g = GaugeMetricFamily("swarmstation_jobs", "Jobs by state", labels=["state"])
        for st in JobState:
            g.add_metric([st.value], jobs.get(st.value, 0))
        yield g
        gi = GaugeMetricFamily(
            "swarmstation_instances", "Instances by pool and state", labels=["pool", "state"]
        )
        seen = {(p, st): n for p, st, n in instances}
        pools = {p for p, _ in seen} or {"default"}
        for pool in sorted(pools):
            for ist in InstanceState:
                gi.add_metric([pool, ist.value], seen.get((pool, ist.value), 0))
        yield gi
        passes = GaugeMetricFamily("swarmstation_scheduler_passes", "Scheduler passes run by this replica")
        passes.add_metric([], self.state.loops.passes)
        yield passes


def render(state: AppState, registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def make_registry(state: AppState) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StateCollector(state))
    return registry
