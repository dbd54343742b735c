"""Prometheus metrics: gauges read from the database at scrape time, so every replica agrees."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Any

from fastapi import Request
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from swarmstation.api.deps import AppState
from swarmstation.api.views import hit_rates
from swarmstation.auth import hash_secret
from swarmstation.config import reveal
from swarmstation.domain.errors import Unauthorized
from swarmstation.domain.pipelines.states import RunState
from swarmstation.domain.states import InstanceState, JobState
from swarmstation.store.models import Instance, Job, Run


class StateCollector(Collector):
    def __init__(self, state: AppState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        with self.state.sessions() as s, s.begin():
            jobs = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
            runs = dict(s.execute(select(Run.state, func.count()).group_by(Run.state)).all())
            instances = s.execute(
                select(Instance.pool, Instance.state, func.count()).group_by(Instance.pool, Instance.state)
            ).all()
            caches = [
                (i.id, i.info)
                for i in s.scalars(select(Instance).where(Instance.state != InstanceState.TERMINATED))
            ]
        g = GaugeMetricFamily("swarmstation_jobs", "Jobs by state", labels=["state"])
        for st in JobState:
            g.add_metric([st.value], jobs.get(st, 0))
        yield g
        gr = GaugeMetricFamily("swarmstation_runs", "Pipeline runs by state", labels=["state"])
        for rst in RunState:
            gr.add_metric([rst.value], runs.get(rst, 0))
        yield gr
        gi = GaugeMetricFamily(
            "swarmstation_instances", "Instances by pool and state", labels=["pool", "state"]
        )
        seen = {(p, st): n for p, st, n in instances}
        pools = {p for p, _ in seen} or {"default"}
        for pool in sorted(pools):
            for ist in InstanceState:
                gi.add_metric([pool, ist.value], seen.get((pool, ist), 0))
        yield gi
        hit = GaugeMetricFamily(
            "swarmstation_instance_cache_hit_ratio",
            "Model requests served from cache",
            labels=["instance", "unit"],
        )
        for instance_id, info in caches:
            rate, byte_rate = hit_rates(info)
            if rate is not None:
                hit.add_metric([instance_id, "requests"], rate)
            if byte_rate is not None:
                hit.add_metric([instance_id, "bytes"], byte_rate)
        yield hit
        passes = GaugeMetricFamily("swarmstation_scheduler_passes", "Scheduler passes run by this replica")
        passes.add_metric([], self.state.loops.passes)
        yield passes


# Per job, observed when a job completes on this replica.
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
JOB_REGISTRY = CollectorRegistry()
JOB_SECONDS = Histogram(
    "swarmstation_job_seconds",
    "Where a completed job's time went: queue wait, model fetch, run",
    ["phase"],
    buckets=_BUCKETS,
    registry=JOB_REGISTRY,
)
_PHASES = {"queue_wait": "queue_wait_seconds", "model_fetch": "model_fetch_seconds", "run": "run_seconds"}


def observe_job(timings: dict[str, Any]) -> None:
    for phase, key in _PHASES.items():
        value = timings.get(key)
        if isinstance(value, int | float):
            JOB_SECONDS.labels(phase).observe(float(value))


def require_metrics_token(request: Request, state: AppState) -> None:
    """When the operator set `metrics_token`, a scrape must send it as a bearer token (401
    otherwise); unset, /metrics is open, as for the embedded default that listens on loopback.
    Wrong tokens count as failed authentications, like wrong API keys."""
    expected = reveal(state.settings.metrics_token)
    if not expected:
        return
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    presented = value.strip() if scheme.lower() == "bearer" else ""
    if presented and hmac.compare_digest(presented.encode(), expected.encode()):
        return
    if presented:
        state.auth_throttle.check(request)
        state.auth_throttle.failed(request, "metrics token", hash_secret(presented))
    raise Unauthorized("/metrics needs 'Authorization: Bearer <metrics token>'")


def render(state: AppState, registry: CollectorRegistry) -> bytes:
    return generate_latest(registry) + generate_latest(JOB_REGISTRY)


def make_registry(state: AppState) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StateCollector(state))
    return registry
