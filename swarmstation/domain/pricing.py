"""What instances cost, and how an instance's bill is shared among the jobs it ran.

An instance costs its provider's rate from creation to destruction (or `now` while it lives).
A job's cost is its GPU seconds (started → finished on that instance) at that rate, plus a share
of the instance's remaining time — start-up, idle, downloads — in proportion to its GPU seconds.
So the job costs of an instance add up to its bill exactly; an instance that ran no job leaves
its whole bill unattributed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class BilledInstance:
    instance_id: str
    price_per_hour: float
    created_at: datetime
    ended_at: datetime | None  # None while it lives


@dataclass(frozen=True)
class JobRun:
    job_id: str
    instance_id: str
    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True)
class InstanceBill:
    instance_id: str
    seconds: float
    busy_seconds: float
    cost: float
    unattributed: float  # the part no job carries (an instance that ran nothing)


@dataclass(frozen=True)
class JobCost:
    job_id: str
    instance_id: str
    gpu_seconds: float
    gpu_cost: float
    overhead_cost: float  # its share of start-up, idle and download time

    @property
    def total(self) -> float:
        return self.gpu_cost + self.overhead_cost


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


def bill(
    instance: BilledInstance, runs: Sequence[JobRun], *, now: datetime
) -> tuple[InstanceBill, list[JobCost]]:
    end = instance.ended_at or now
    total_seconds = _seconds(instance.created_at, end)
    rate = instance.price_per_hour / 3600.0
    cost = total_seconds * rate
    mine = [r for r in runs if r.instance_id == instance.instance_id]
    busy = {r.job_id: _seconds(r.started_at, min(r.finished_at, end)) for r in mine}
    busy_total = sum(busy.values())
    # Jobs that ran at the same time on a multi-slot instance share its time: when their GPU
    # seconds add up to more than the bill, each carries its share of the bill and no overhead.
    scale = min(1.0, cost / (busy_total * rate)) if busy_total > 0 and rate > 0 else 1.0
    overhead = max(0.0, cost - busy_total * rate * scale)
    jobs = [
        JobCost(
            job_id=r.job_id,
            instance_id=instance.instance_id,
            gpu_seconds=busy[r.job_id],
            gpu_cost=busy[r.job_id] * rate * scale,
            overhead_cost=overhead * busy[r.job_id] / busy_total if busy_total > 0 else 0.0,
        )
        for r in sorted(mine, key=lambda r: (r.started_at, r.job_id))
    ]
    return (
        InstanceBill(
            instance_id=instance.instance_id,
            seconds=total_seconds,
            busy_seconds=busy_total,
            cost=cost,
            unattributed=cost if busy_total == 0 else 0.0,
        ),
        jobs,
    )
