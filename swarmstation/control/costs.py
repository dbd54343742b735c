"""Cost reports: instance bills from their provider rates, shared among jobs (domain/pricing.py)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from swarmstation.domain.pricing import BilledInstance, JobRun, bill
from swarmstation.store.models import Instance, Job

GroupBy = Literal["pool", "instance", "user", "day", "tool", "backend"]


@dataclass
class CostRow:
    key: str
    cost: float = 0.0
    gpu_seconds: float = 0.0
    jobs: int = 0


@dataclass
class CostReport:
    group_by: str
    rows: list[CostRow]
    billed: float
    attributed: float
    unattributed: float
    instances: int
    jobs: int
    notes: list[str] = field(default_factory=list)


def _key(group_by: GroupBy, **keys: str) -> str:
    return keys[group_by]


def cost_report(s: Session, *, group_by: GroupBy, now: datetime, since: datetime | None = None) -> CostReport:
    q = select(Instance)
    if since is not None:
        q = q.where((Instance.terminated_at.is_(None)) | (Instance.terminated_at >= since))
    instances = list(s.scalars(q))
    ids = [i.id for i in instances]
    jobs = (
        list(
            s.scalars(
                select(Job).where(
                    Job.instance_id.in_(ids), Job.started_at.is_not(None), Job.finished_at.is_not(None)
                )
            )
        )
        if ids
        else []
    )
    by_id = {j.id: j for j in jobs}
    rows: dict[str, CostRow] = defaultdict(lambda: CostRow(key=""))
    billed = attributed = unattributed = 0.0
    unpriced = 0
    for inst in instances:
        if inst.price_per_hour is None:
            unpriced += 1
        billed_inst = BilledInstance(inst.id, inst.price_per_hour or 0.0, inst.created_at, inst.terminated_at)
        runs = [
            JobRun(j.id, inst.id, j.started_at, j.finished_at)  # type: ignore[arg-type]
            for j in jobs
            if j.instance_id == inst.id
        ]
        instance_bill, job_costs = bill(billed_inst, runs, now=now)
        billed += instance_bill.cost
        unattributed += instance_bill.unattributed
        if instance_bill.unattributed:
            key = _key(
                group_by,
                pool=inst.pool,
                instance=inst.id,
                user="(idle, no jobs)",
                day=inst.created_at.date().isoformat(),
                tool="(idle, no jobs)",
                backend="pool",
            )
            row = rows[key]
            row.key, row.cost = key, row.cost + instance_bill.unattributed
        for jc in job_costs:
            job = by_id[jc.job_id]
            assert job.finished_at is not None
            key = _key(
                group_by,
                pool=inst.pool,
                instance=inst.id,
                user=job.user_id,
                day=job.finished_at.date().isoformat(),
                tool=job.tool_slug,
                backend="pool",
            )
            row = rows[key]
            row.key = key
            row.cost += jc.total
            row.gpu_seconds += jc.gpu_seconds
            row.jobs += 1
            attributed += jc.total
    # Jobs run by ComfyUI Deploy carry their own cost: GPU seconds at its per-second rate.
    external = select(Job).where(Job.backend == "comfydeploy", Job.finished_at.is_not(None))
    if since is not None:
        external = external.where(Job.finished_at >= since)
    external_jobs = 0
    for job in s.scalars(external):
        cost = float((job.timings or {}).get("cost_usd", 0.0))
        assert job.finished_at is not None
        key = _key(
            group_by,
            pool="comfydeploy",
            instance="comfydeploy",
            user=job.user_id,
            day=job.finished_at.date().isoformat(),
            tool=job.tool_slug,
            backend="comfydeploy",
        )
        row = rows[key]
        row.key = key
        row.cost += cost
        row.gpu_seconds += float((job.timings or {}).get("run_seconds", 0.0))
        row.jobs += 1
        billed += cost
        attributed += cost
        external_jobs += 1
    notes = [f"{unpriced} instances have no known price (counted at $0/h)"] if unpriced else []
    return CostReport(
        group_by=group_by,
        rows=sorted(rows.values(), key=lambda r: (-r.cost, r.key)),
        billed=billed,
        attributed=attributed,
        unattributed=unattributed,
        instances=len(instances),
        jobs=len(jobs) + external_jobs,
        notes=notes,
    )
