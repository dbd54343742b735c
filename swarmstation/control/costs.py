"""Cost reports: instance bills from their provider rates, shared among jobs (domain/pricing.py).

An instance is billed at its rate while it runs: from its creation to its end, less the time it
was parked (protocols.md §2.5: a stopped instance bills storage only, which is not counted here).
Its running spans come from its state history — a parked period runs from the change into STOPPED
to the next resume (the change into PROVISIONING), so the time a parked instance spends being
drained counts as parked too — and each span is billed on its own with the jobs that started in
it, so the job costs still add up to the instance's bill.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from swarmstation.domain.pricing import BilledInstance, JobCost, JobRun, bill
from swarmstation.domain.states import InstanceState
from swarmstation.store.models import Instance, InstanceTransition, Job, JobCharge

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


Span = tuple[datetime, datetime | None]  # [start, end); end None: still running


def running_spans(
    created_at: datetime, ended_at: datetime | None, changes: Iterable[tuple[datetime, str]]
) -> list[Span]:
    """The spans in which an instance ran (was billed for its GPU), from its state changes
    `(at, to_state)` in order: it runs from creation, stops running when it is parked (into
    STOPPED) and runs again when it is resumed (into PROVISIONING from there), until `ended_at`."""
    spans: list[Span] = []
    start: datetime | None = created_at
    for at, to_state in changes:
        if to_state == InstanceState.STOPPED and start is not None:
            spans.append((start, max(start, at)))
            start = None
        elif to_state == InstanceState.PROVISIONING and start is None:
            start = at
    if start is not None:
        spans.append((start, ended_at))
    return spans or [(created_at, created_at)]


@dataclass
class SpansBill:
    cost: float
    unattributed: float
    jobs: list[JobCost]


def bill_spans(
    instance_id: str, price_per_hour: float, spans: Sequence[Span], runs: Sequence[JobRun], *, now: datetime
) -> SpansBill:
    """Bill each running span with the jobs that started in it (a job never runs across a park: only
    idle instances are parked). The job costs plus the unattributed part add up to the cost."""
    by_span: list[list[JobRun]] = [[] for _ in spans]
    for run in runs:
        # the last span that began at or before the job's start (the first span for a stray earlier one)
        index = 0
        for k, (start, _) in enumerate(spans):
            if start <= run.started_at:
                index = k
        by_span[index].append(run)
    total = SpansBill(0.0, 0.0, [])
    for (start, end), inside in zip(spans, by_span, strict=True):
        span_bill, job_costs = bill(BilledInstance(instance_id, price_per_hour, start, end), inside, now=now)
        total.cost += span_bill.cost
        total.unattributed += span_bill.unattributed
        total.jobs.extend(job_costs)
    return total


@dataclass(frozen=True)
class InstanceBills:
    """Each instance alive since `since` with its bill (domain/pricing.py), and the jobs billed."""

    bills: list[tuple[Instance, SpansBill]]
    jobs: dict[str, Job]


def instance_bills(s: Session, *, now: datetime, since: datetime | None = None) -> InstanceBills:
    """Bill every instance not terminated before `since`: its running spans (parked periods cut
    out) charged at its price, split over the jobs that ran on it and its idle remainder."""
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
    # the state changes that start and end parked periods, in order, per instance
    changes: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    if ids:
        for t in s.scalars(
            select(InstanceTransition)
            .where(
                InstanceTransition.instance_id.in_(ids),
                InstanceTransition.to_state.in_([InstanceState.STOPPED, InstanceState.PROVISIONING]),
            )
            .order_by(InstanceTransition.id)
        ):
            changes[t.instance_id].append((t.at, t.to_state))
    bills: list[tuple[Instance, SpansBill]] = []
    for inst in instances:
        runs = [
            JobRun(j.id, inst.id, j.started_at, j.finished_at)  # type: ignore[arg-type]
            for j in jobs
            if j.instance_id == inst.id
        ]
        spans = running_spans(inst.created_at, inst.terminated_at, changes.get(inst.id, []))
        bills.append((inst, bill_spans(inst.id, inst.price_per_hour or 0.0, spans, runs, now=now)))
    return InstanceBills(bills=bills, jobs={j.id: j for j in jobs})


def cost_report(s: Session, *, group_by: GroupBy, now: datetime, since: datetime | None = None) -> CostReport:
    loaded = instance_bills(s, now=now, since=since)
    by_id = loaded.jobs
    rows: dict[str, CostRow] = defaultdict(lambda: CostRow(key=""))
    billed = attributed = unattributed = 0.0
    unpriced = 0
    for inst, instance_bill in loaded.bills:
        if inst.price_per_hour is None:
            unpriced += 1
        job_costs = instance_bill.jobs
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
        instances=len(loaded.bills),
        jobs=len(loaded.jobs) + external_jobs,
        notes=notes,
    )


# -- profit and loss: what the jobs earned (captured credits) against what they cost us ------------
PnlGroupBy = Literal["tool", "user", "day"]
_MICRO = Decimal("0.000001")


@dataclass
class PnlRow:
    key: str
    revenue_credits: int = 0  # captured from the payers
    royalty_credits: int = 0  # paid out of it to LoRA authors
    jobs_charged: int = 0
    cost: Decimal = Decimal(0)  # what the jobs cost us, $ (cost_report's job costs)
    jobs: int = 0


@dataclass
class PnlReport:
    group_by: str
    credits_per_usd: int
    rows: list[PnlRow]
    unattributed_cost: Decimal  # idle instances that ran no job (included in the rows' costs)
    notes: list[str] = field(default_factory=list)


def pnl_report(
    s: Session, *, group_by: PnlGroupBy, now: datetime, credits_per_usd: int, since: datetime | None = None
) -> PnlReport:
    """Revenue (credits captured at settlement, and the royalties paid out of them) against the
    jobs' costs, by tool, user or day (the day a job finished). Revenue is exact (integer
    credits); costs come from the instance bills (`cost_report`)."""
    costs = cost_report(s, group_by=group_by, now=now, since=since)
    # cost rows include the idle instances' bills ("(idle, no jobs)", or their day)
    rows = {c.key: PnlRow(key=c.key, cost=Decimal(repr(c.cost)), jobs=c.jobs) for c in costs.rows}
    q = (
        select(JobCharge, Job)
        .join(Job, Job.id == JobCharge.job_id)
        .where(JobCharge.settled_at.is_not(None), Job.finished_at.is_not(None))
    )
    if since is not None:
        q = q.where(Job.finished_at >= since)
    for charge, job in s.execute(q).tuples():
        assert job.finished_at is not None
        keys = {"tool": job.tool_slug, "user": job.user_id, "day": job.finished_at.date().isoformat()}
        key = keys[group_by]
        row = rows.setdefault(key, PnlRow(key=key))
        row.revenue_credits += charge.captured or 0
        row.royalty_credits += charge.royalties_paid
        row.jobs_charged += 1
    return PnlReport(
        group_by=group_by,
        credits_per_usd=credits_per_usd,
        rows=sorted(rows.values(), key=lambda r: (-r.revenue_credits, r.key)),
        unattributed_cost=Decimal(repr(costs.unattributed)),
        notes=costs.notes,
    )


def usd(credits: int, credits_per_usd: int) -> Decimal:
    """Credits in dollars, to the micro-dollar."""
    return (Decimal(credits) / credits_per_usd).quantize(_MICRO)
