"""Admin: revenue, cost and jobs over time (GET /v1/admin/costs/series), for the studio's charts.

The P&L report (GET /v1/admin/costs/pnl?group_by=day) has days only and leaves out the days with
nothing; a chart wants every bucket, by the hour too. The numbers are the same as the reports':
revenue is the credits captured at settlement (and the royalties paid from them), in the bucket
of the job's end; costs are the instance bills shared among their jobs (control/costs.py), a
job's share in the bucket of its end, an instance's idle share (no job carried it) in the bucket
of its creation, as the day report has it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from swarmstation.api.deps import DB, AdminUser, State
from swarmstation.control.costs import instance_bills, usd
from swarmstation.domain.errors import InvalidInput
from swarmstation.store.models import Job, JobCharge

router = APIRouter(prefix="/v1/admin", tags=["admin"])

Bucket = Literal["hour", "day"]
STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
DEFAULT_SPAN = {"hour": timedelta(hours=48), "day": timedelta(days=30)}
MAX_BUCKETS = 2000


class SeriesPoint(BaseModel):
    start: datetime = Field(description="The bucket's start (UTC); it lasts one hour or one day")
    revenue_credits: int = Field(description="Captured from the payers for jobs that ended in it")
    royalty_credits: int = Field(description="Paid out of that revenue to LoRA authors")
    revenue_usd: Decimal
    royalty_usd: Decimal
    cost_usd: Decimal = Field(
        description="What the jobs that ended in it cost us, plus idle instances made in it"
    )
    jobs: int = Field(description="Jobs that ended in it (on our instances or ComfyUI Deploy)")


class SeriesOut(BaseModel):
    bucket: str
    since: datetime
    until: datetime
    credits_per_usd: int
    points: list[SeriesPoint] = Field(description="Every bucket from `since` to now, oldest first")


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def floor(at: datetime, bucket: Bucket) -> datetime:
    at = _utc(at)
    at = at.replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0) if bucket == "day" else at


def _costs(s: Session, since: datetime, now: datetime) -> list[tuple[datetime, float, bool]]:
    """(when, $, is a job) for each job's cost and each instance's idle cost since `since`."""
    loaded = instance_bills(s, now=now, since=since)
    out: list[tuple[datetime, float, bool]] = []
    for inst, billed in loaded.bills:
        if billed.unattributed:
            out.append((inst.created_at, billed.unattributed, False))
        for jc in billed.jobs:
            at = loaded.jobs[jc.job_id].finished_at
            assert at is not None
            out.append((at, jc.total, True))
    external = select(Job).where(Job.backend == "comfydeploy", Job.finished_at >= since)
    for job in s.scalars(external):
        assert job.finished_at is not None
        out.append((job.finished_at, float((job.timings or {}).get("cost_usd", 0.0)), True))
    return out


@router.get("/costs/series", response_model=SeriesOut)
def cost_series(
    s: DB,
    _: AdminUser,
    state: State,
    bucket: Annotated[Bucket, Query()] = "hour",
    since: datetime | None = None,
) -> SeriesOut:
    """Revenue, royalties, cost and jobs per hour or day, every bucket from `since` (default: 48
    hours or 30 days back) to now, empty ones as zeros."""
    if since is not None and since.tzinfo is None:
        raise InvalidInput("since: give a time zone, e.g. 2026-11-01T00:00:00Z")
    now = _utc(state.clock())
    first = floor(since or now - DEFAULT_SPAN[bucket], bucket)
    last = floor(now, bucket)
    if first > last:
        raise InvalidInput("since: in the future")
    count = int((last - first) / STEP[bucket]) + 1
    if count > MAX_BUCKETS:
        raise InvalidInput(
            f"since: at most {MAX_BUCKETS} buckets of one {bucket}; choose a later since or days"
        )
    starts = [first + n * STEP[bucket] for n in range(count)]
    index = {at: n for n, at in enumerate(starts)}
    revenue = [0] * count
    royalty = [0] * count
    cost = [0.0] * count
    jobs = [0] * count
    q = (
        select(JobCharge.captured, JobCharge.royalties_paid, Job.finished_at)
        .join(Job, Job.id == JobCharge.job_id)
        .where(JobCharge.settled_at.is_not(None), Job.finished_at >= first)
    )
    for captured, royalties, finished in s.execute(q).tuples():
        n = index.get(floor(finished, bucket))  # type: ignore[arg-type]
        if n is not None:
            revenue[n] += captured or 0
            royalty[n] += royalties
    for at, dollars, is_job in _costs(s, first, now):
        n = index.get(floor(at, bucket))
        if n is None:
            continue
        cost[n] += dollars
        jobs[n] += int(is_job)
    rate = state.settings.credits_per_usd
    return SeriesOut(
        bucket=bucket,
        since=first,
        until=last + STEP[bucket],
        credits_per_usd=rate,
        points=[
            SeriesPoint(
                start=starts[n],
                revenue_credits=revenue[n],
                royalty_credits=royalty[n],
                revenue_usd=usd(revenue[n], rate),
                royalty_usd=usd(royalty[n], rate),
                cost_usd=Decimal(repr(cost[n])).quantize(Decimal("0.000001")),
                jobs=jobs[n],
            )
            for n in range(count)
        ],
    )
