"""Charging jobs: the quote before a run, one hold at submission, one settlement at its end.

`quote` prices a bound job (domain/prices.py) from the tool's price model or, without one, from
what the tool costs us (`cost_basis`: p95 GPU seconds of its recent runs x its pool's $/hour).
`hold_for_job` places ONE hold of the quote in the submission's transaction and records the
plan in `job_charges`; `settle_job` runs in the transaction of the job's terminal transition
(control/jobs.py calls it from complete, fail and cancel) and captures the actual charge, with
the LoRA authors' royalties out of it, or releases everything. The ledger's idempotency keys
(`hold:job:<id>`, `capture:job:<id>`, `release:job:<id>`) and the settled mark on the locked
charge row make a second settlement (two replicas, a retried report) a no-op.

A step job of a pipeline run places no hold of its own: its `JobCharge.hold_id` is the run's hold
(`RunHold`, control/runs.py), its quote at most its share of it, and its settlement captures a
*part* of that hold (`ledger.capture_part`, key `capture:job:<id>`; nothing when the charge is
0: the share stays held until the run ends and `control/runs.py` releases what is left). The
runner sums the parts into `Run.captured` and the step's `RunStep.cost`. A saved pipeline's
author earns `pipeline_royalty_bps` of each part when the payer is someone else, beside the
LoRA authors, all within `max_royalty_bps`.

What is charged when (README "Prices and charges" says the same):
- completed: the price — per run (or derived) the quote; per megapixel the images it made; per
  GPU second its measured run seconds — never more than the hold; the rest is released;
- failed, for whatever reason (lost instance, provider, our bug, attempts exhausted, a ComfyUI
  error — its inputs were validated before we accepted it): nothing;
- cancelled before it started: nothing; after it started: its GPU seconds at the plan's rate
  (the tool's per-second price, else the derived rate), up to the hold.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from swarmstation.control import ledger
from swarmstation.domain.credits import BPS, HoldState, RoyaltyShare, royalty_amounts, royalty_shares
from swarmstation.domain.prices import (
    ChargePlan,
    CostBasis,
    JobEnd,
    Outcome,
    OutputSize,
    PriceKind,
    PriceModel,
    actual_charge,
    plan_charge,
)
from swarmstation.domain.states import InstanceState, JobState
from swarmstation.domain.stats import percentile
from swarmstation.store.models import (
    Hold,
    Instance,
    Job,
    JobCharge,
    Output,
    Pool,
    Tool,
    ToolPrice,
    User,
)

if TYPE_CHECKING:
    from swarmstation.config import Settings

log = logging.getLogger(__name__)

JOB_REF = "job"
RUN_REF = "run"
LORA_REF = "lora"
PIPELINE_REF = "pipeline"


@dataclass(frozen=True)
class ChargeSettings:
    """The settings charging obeys (from `Settings`)."""

    credits_per_usd: int
    markup: Decimal
    min_credits: int
    default_gpu_seconds: Decimal
    default_price_per_hour: Decimal
    lora_royalty_bps: int
    max_royalty_bps: int
    charge_admins: bool
    sample_runs: int
    pipeline_royalty_bps: int = 500
    # the most tokens one run of each LLM tool can use (LocalTool.max_tokens), by slug
    token_bounds: Mapping[str, int] = field(default_factory=dict)
    # > 0: a quote's cost basis may come from this process's memory, read at most this many
    # seconds ago (`CostBases`); 0: read from the database for every quote
    basis_ttl_seconds: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ChargeSettings:
        from swarmstation.localtools.registry import local_tools  # the tools import config

        return cls(
            credits_per_usd=settings.credits_per_usd,
            markup=settings.price_markup,
            min_credits=settings.min_price_credits,
            default_gpu_seconds=settings.default_gpu_seconds_estimate,
            default_price_per_hour=settings.default_gpu_price_per_hour,
            lora_royalty_bps=settings.lora_royalty_bps,
            max_royalty_bps=settings.max_royalty_bps,
            charge_admins=settings.charge_admins,
            sample_runs=settings.price_sample_runs,
            pipeline_royalty_bps=settings.pipeline_royalty_bps,
            token_bounds={slug: tool.max_tokens(settings) for slug, tool in local_tools().items()},
        )


# -- prices -----------------------------------------------------------------------------------


def price_model(s: Session, slug: str) -> PriceModel | None:
    row = s.get(ToolPrice, slug)
    return PriceModel(PriceKind(row.model), row.credits, row.cap) if row is not None else None


def _decimal(value: float) -> Decimal:
    # a float column's value as the decimal text it was written as (0.36, not 0.35999...)
    return Decimal(repr(value))


def measured_gpu_seconds(s: Session, tool_slug: str, sample: int) -> list[Decimal]:
    """The run seconds of the tool's last `sample` completed jobs (the worker's `run_seconds`,
    else started → finished)."""
    # Columns only: every quote reads these rows, and full jobs (workflows, inputs) cost far more.
    rows = s.execute(
        select(Job.timings, Job.started_at, Job.finished_at)
        .where(Job.tool_slug == tool_slug, Job.state == JobState.COMPLETED, Job.finished_at.is_not(None))
        .order_by(Job.finished_at.desc())
        .limit(sample)
    )
    return [x for x in (_run_seconds(*row) for row in rows) if x is not None]


def _run_seconds(
    timings: Mapping[str, Any] | None, started_at: datetime | None, finished_at: datetime | None
) -> Decimal | None:
    """A completed job's run seconds: the worker's `run_seconds`, else started → finished."""
    measured = (timings or {}).get("run_seconds")
    if isinstance(measured, int | float) and not isinstance(measured, bool):
        return _decimal(float(measured))
    if started_at is not None and finished_at is not None:
        return _decimal((finished_at - started_at).total_seconds())
    return None


def pool_price_per_hour(s: Session, pool_name: str, default: Decimal) -> Decimal:
    """The pool's $/hour: the dearest of its live instances' known prices (a job may run on any);
    for a pool of the local provider 0 (the minimum price applies); else `default`."""
    prices = [
        p
        for p in s.scalars(
            select(Instance.price_per_hour).where(
                Instance.pool == pool_name, Instance.state != InstanceState.TERMINATED
            )
        )
        if p is not None
    ]
    if prices:
        return _decimal(max(prices))
    pool = s.get(Pool, pool_name)
    return Decimal(0) if pool is not None and pool.provider == "local" else default


#: How long the submission path keeps a tool's recent run times and a pool's price in memory
#: (`ChargeSettings.basis_ttl_seconds` of the API's pricing). A quote is an estimate: it may lag
#: another replica's completions and a new instance price by this long; the hold is the quote and
#: the capture never exceeds it, exactly, whatever the basis was.
BASIS_TTL_SECONDS = 5.0


class CostBases:
    """One database's cost bases in this process's memory: each tool's run seconds of its last
    completed jobs (newest first) and each pool's price, each read again once older than the TTL.
    A completion in this process puts its run time in front at once (`observe_run`); another
    replica's are seen at the next read. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._runs: dict[str, tuple[float, int, list[Decimal]]] = {}
        self._prices: dict[tuple[str, Decimal], tuple[float, Decimal]] = {}

    def runs(self, s: Session, slug: str, sample: int, ttl: float) -> list[Decimal]:
        now = self._clock()
        with self._lock:
            hit = self._runs.get(slug)
            if hit is not None and hit[1] == sample and now - hit[0] < ttl:
                return list(hit[2])
        measured = measured_gpu_seconds(s, slug, sample)
        with self._lock:
            self._runs[slug] = (now, sample, measured)
        return list(measured)

    def price(self, s: Session, pool: str, default: Decimal, ttl: float) -> Decimal:
        now = self._clock()
        with self._lock:
            hit = self._prices.get((pool, default))
            if hit is not None and now - hit[0] < ttl:
                return hit[1]
        price = pool_price_per_hour(s, pool, default)
        with self._lock:
            self._prices[(pool, default)] = (now, price)
        return price

    def observe_run(self, slug: str, seconds: Decimal) -> None:
        """A job of `slug` completed here with `seconds` of run time: the newest of its runs."""
        with self._lock:
            hit = self._runs.get(slug)
            if hit is not None:
                read_at, sample, runs = hit
                self._runs[slug] = (read_at, sample, [seconds, *runs][:sample])


_BASES: weakref.WeakKeyDictionary[object, CostBases] = weakref.WeakKeyDictionary()
_BASES_LOCK = threading.Lock()


def cost_bases(s: Session) -> CostBases:
    """The in-memory cost bases of the database `s` is bound to."""
    bind = s.get_bind()
    engine = getattr(bind, "engine", bind)
    with _BASES_LOCK:
        bases = _BASES.get(engine)
        if bases is None:
            bases = _BASES[engine] = CostBases()
        return bases


def observe_completion(s: Session, job: Job) -> None:
    """A completed job's run time joins its tool's cached runs (nothing when none are cached)."""
    seconds = _run_seconds(job.timings, job.started_at, job.finished_at)
    if seconds is not None:
        cost_bases(s).observe_run(job.tool_slug, seconds)


def is_local(tool: Tool) -> bool:
    """A tool that runs on the control plane (an LLM text tool, an image utility), not on a GPU."""
    return str((tool.spec or {}).get("kind", "comfyui")) != "comfyui"


def cost_basis(s: Session, tool: Tool, cfg: ChargeSettings) -> CostBasis:
    ttl = cfg.basis_ttl_seconds
    bases = cost_bases(s) if ttl > 0 else None
    measured = (
        bases.runs(s, tool.slug, cfg.sample_runs, ttl)
        if bases is not None
        else measured_gpu_seconds(s, tool.slug, cfg.sample_runs)
    )
    # percentile works in floats; the result goes back through its decimal text, once
    p95 = _decimal(percentile([float(x) for x in measured], 0.95)) if measured else cfg.default_gpu_seconds
    # a local tool uses no GPU: without a price model it costs the minimum
    if is_local(tool):
        per_hour = Decimal(0)
    elif bases is not None:
        per_hour = bases.price(s, tool.pool, cfg.default_price_per_hour, ttl)
    else:
        per_hour = pool_price_per_hour(s, tool.pool, cfg.default_price_per_hour)
    return CostBasis(
        gpu_seconds_p95=p95,
        price_per_hour=per_hour,
        markup=cfg.markup,
        credits_per_usd=cfg.credits_per_usd,
        min_credits=cfg.min_credits,
    )


@dataclass(frozen=True)
class PriceView:
    """A tool's price as `GET /v1/tools` shows it: the model, its unit credits and cap, and an
    estimate of one run with the tool's defaults (None when it depends on the inputs)."""

    model: str
    credits: int | None
    cap: int | None
    estimate: int | None


def price_view(s: Session, tool: Tool, cfg: ChargeSettings) -> PriceView:
    model = price_model(s, tool.slug)
    basis = cost_basis(s, tool, cfg)
    try:
        estimate: int | None = plan_charge(
            model,
            workflow=tool.spec.get("workflow", {}),
            basis=basis,
            max_tokens=cfg.token_bounds.get(tool.slug, 0),
        ).quote
    except ValueError:  # per megapixel on a workflow whose size the inputs decide
        estimate = None
    if model is None:
        return PriceView(PriceKind.DERIVED.value, estimate, None, estimate)
    return PriceView(model.kind.value, model.credits, model.cap, estimate)


def set_price(s: Session, tool: Tool, model: PriceModel, *, admin_id: str, now: datetime) -> None:
    """Set a tool's price model. Raises PriceSpecError for per megapixel on a tool whose workflow
    does not say its output size."""
    if model.kind == PriceKind.PER_MEGAPIXEL:
        plan_charge(model, workflow=tool.spec.get("workflow", {}), basis=_NO_COST)
    row = s.get(ToolPrice, tool.slug)
    if row is None:
        row = ToolPrice(tool_slug=tool.slug, model=model.kind.value, credits=model.credits, updated_at=now)
        s.add(row)
    row.model, row.credits, row.cap = model.kind.value, model.credits, model.cap
    row.updated_by, row.updated_at = admin_id, now
    s.flush()


def clear_price(s: Session, tool: Tool) -> None:
    row = s.get(ToolPrice, tool.slug)
    if row is not None:
        s.delete(row)
        s.flush()


_NO_COST = CostBasis(Decimal(0), Decimal(0), Decimal(0), 1, 0)


# -- quotes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineRoyalty:
    """A saved pipeline's author's share of a run's step charges (`bps`), when the payer is
    someone else."""

    pipeline_id: str
    author_id: str
    bps: int


@dataclass(frozen=True)
class Quote:
    """The most a run can cost (`total`, the hold) and its lines: the tool, then each LoRA
    author's royalty (paid out of the total, never added to it)."""

    total: int
    plan: ChargePlan
    shares: tuple[RoyaltyShare, ...]
    lines: tuple[dict[str, Any], ...]


def quote(
    s: Session,
    *,
    tool: Tool,
    workflow: dict[str, Any],
    applied_loras: Sequence[tuple[str, str | None]],
    payer: User,
    cfg: ChargeSettings,
    pipeline: PipelineRoyalty | None = None,
) -> Quote:
    """The quote of one bound run of `tool` for `payer`; `applied_loras` are (slug, owner id).
    `pipeline`: the run's saved pipeline, whose author earns a share first when the payer is
    someone else; the LoRA shares get what is left of `max_royalty_bps`."""
    plan = plan_charge(
        price_model(s, tool.slug),
        workflow=workflow,
        basis=cost_basis(s, tool, cfg),
        max_tokens=cfg.token_bounds.get(tool.slug, 0),
    )
    shares: list[RoyaltyShare] = []
    if pipeline is not None and pipeline.author_id != payer.id:
        bps = min(pipeline.bps, cfg.max_royalty_bps)
        if bps > 0:
            shares.append(RoyaltyShare(pipeline.pipeline_id, pipeline.author_id, bps, ref_type=PIPELINE_REF))
    used = sum(x.bps for x in shares)
    shares += royalty_shares(
        applied_loras,
        payer_id=payer.id,
        per_lora_bps=min(cfg.lora_royalty_bps, cfg.max_royalty_bps - used),
        cap_bps=cfg.max_royalty_bps - used,
    )
    lines: list[dict[str, Any]] = [
        {"kind": "tool", "tool": tool.slug, "model": plan.kind.value, "credits": plan.quote}
    ]
    authors = (
        {u.id: u.name for u in s.scalars(select(User).where(User.id.in_([x.author_id for x in shares])))}
        if shares
        else {}  # most runs pay no royalty: no query
    )
    for share in shares:
        lines.append(
            {
                "kind": "royalty",
                share.ref_type: share.lora,  # "lora": its slug, or "pipeline": its id
                "author": authors.get(share.author_id, share.author_id),
                "bps": share.bps,
                "credits": plan.quote * share.bps // BPS,
                "included": True,  # out of the tool's credits: the total does not grow
            }
        )
    return Quote(total=plan.quote, plan=plan, shares=tuple(shares), lines=tuple(lines))


# -- holds and settlement ----------------------------------------------------------------------


def is_charged(user: User, cfg: ChargeSettings) -> bool:
    return user.role != "admin" or cfg.charge_admins


@dataclass(frozen=True)
class RunHold:
    """A step job's part of its run's hold: the job places no hold of its own and may capture at
    most `share` of `hold_id` (control/runs.py)."""

    hold_id: str
    share: int


def hold_for_job(
    s: Session,
    *,
    job: Job,
    payer: User,
    priced: Quote,
    cfg: ChargeSettings,
    now: datetime,
    run_hold: RunHold | None = None,
) -> None:
    """Hold the quote for `job` (in the submission's transaction: with the job or not at all).
    Raises InsufficientCredits (402) when the payer's available credits are fewer. A free job
    (an admin's, or a quote of 0) gets no hold. With `run_hold`, the job is charged out of its
    run's hold instead, its quote at most its share."""
    if not is_charged(payer, cfg) or priced.total <= 0:
        return
    plan = priced.plan
    if run_hold is not None:
        hold_id, quoted = run_hold.hold_id, min(plan.quote, run_hold.share)
        if quoted <= 0:
            return
    else:
        hold_id, quoted = (
            ledger.place_hold(
                s,
                user_id=payer.id,
                amount=priced.total,
                ref_type=JOB_REF,
                ref_id=job.id,
                key=f"hold:job:{job.id}",
                now=now,
            ).id,
            plan.quote,
        )
    s.add(
        JobCharge(
            job_id=job.id,
            user_id=payer.id,
            hold_id=hold_id,
            kind=plan.kind.value,
            quote=quoted,
            unit_credits=plan.unit_credits,
            per_second=str(plan.per_second),
            output_pixels=plan.size.pixels if plan.size else None,
            output_images=plan.size.images if plan.size else None,
            royalties=[_share_json(x) for x in priced.shares],
            created_at=now,
        )
    )
    s.flush()


def _share_json(share: RoyaltyShare) -> dict[str, Any]:
    if share.ref_type == LORA_REF:
        return {"lora": share.lora, "author_id": share.author_id, "bps": share.bps}
    return {share.ref_type: share.lora, "author_id": share.author_id, "bps": share.bps}


def _share_from_json(data: Mapping[str, Any]) -> RoyaltyShare:
    if "lora" in data:
        return RoyaltyShare(str(data["lora"]), str(data["author_id"]), int(data["bps"]))
    return RoyaltyShare(str(data[PIPELINE_REF]), str(data["author_id"]), int(data["bps"]), PIPELINE_REF)


def _plan(charge: JobCharge) -> ChargePlan:
    size = (
        OutputSize(charge.output_pixels, charge.output_images or 0)
        if charge.output_pixels is not None
        else None
    )
    return ChargePlan(
        PriceKind(charge.kind), charge.quote, charge.unit_credits, Decimal(charge.per_second), size
    )


_ENDS = {
    JobState.COMPLETED: JobEnd.COMPLETED,
    JobState.FAILED: JobEnd.FAILED,
    JobState.CANCELLED: JobEnd.CANCELLED,
}


def _outcome(s: Session, job: Job, now: datetime, *, count_images: bool = True) -> Outcome:
    end = _ENDS[job.state]
    started = job.started_at is not None
    seconds = Decimal(0)
    if started and job.started_at is not None:
        measured = (job.timings or {}).get("run_seconds")
        if end == JobEnd.COMPLETED and isinstance(measured, int | float) and not isinstance(measured, bool):
            seconds = _decimal(float(measured))
        else:
            seconds = _decimal(max(0.0, ((job.finished_at or now) - job.started_at).total_seconds()))
    images = (
        len(
            list(
                s.scalars(
                    select(Output.id).where(
                        Output.job_id == job.id,
                        Output.uploaded.is_(True),
                        Output.content_type.like("image/%"),
                    )
                )
            )
        )
        if count_images
        else 0
    )
    return Outcome(end, started=started, gpu_seconds=seconds, images=images, tokens=_tokens(job))


def _tokens(job: Job) -> int:
    """The prompt + completion tokens an LLM tool's job used (`timings["tokens"]`), 0 if unknown."""
    used = (job.timings or {}).get("tokens")
    if not isinstance(used, Mapping):
        return 0
    total = 0
    for name in ("prompt", "completion"):
        n = used.get(name)
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            total += n
    return total


def settle_job(s: Session, job: Job, *, now: datetime) -> int | None:
    """Settle a job that reached a terminal state, in that transition's transaction: capture its
    actual charge (≤ the hold; royalties out of it) or release the hold. Returns the credits
    captured, None when the job has no charge. A second call changes nothing."""
    charge = s.scalar(select(JobCharge).where(JobCharge.job_id == job.id).with_for_update())
    if charge is None:
        return None
    if charge.settled_at is not None:
        return charge.captured
    plan = _plan(charge)
    # only a per-megapixel charge counts the images (a query the other kinds need not make)
    outcome = _outcome(s, job, now, count_images=plan.kind == PriceKind.PER_MEGAPIXEL)
    amount = actual_charge(plan, outcome, hold=charge.quote)
    shares = [_share_from_json(x) for x in charge.royalties]
    hold = s.get(Hold, charge.hold_id)
    if hold is not None and hold.ref_type == RUN_REF:
        return _settle_run_part(s, job, charge, hold, amount, shares, now)
    paid = 0
    if amount > 0:
        royalties = _royalties(amount, shares)
        paid = sum(r.amount for r in royalties)
        ledger.capture(
            s,
            hold_id=charge.hold_id,
            amount=amount,
            key=f"capture:job:{job.id}",
            now=now,
            royalties=royalties,
        )
    else:
        ledger.release(s, hold_id=charge.hold_id, key=f"release:job:{job.id}", now=now)
    charge.captured, charge.royalties_paid, charge.settled_at = amount, paid, now
    s.flush()
    return amount


def _royalties(amount: int, shares: Sequence[RoyaltyShare]) -> list[ledger.Royalty]:
    return [
        ledger.Royalty(user_id=share.author_id, amount=credits, ref_type=share.ref_type, ref_id=share.lora)
        for share, credits in royalty_amounts(amount, shares)
    ]


def _settle_run_part(
    s: Session,
    job: Job,
    charge: JobCharge,
    hold: Hold,
    amount: int,
    shares: Sequence[RoyaltyShare],
    now: datetime,
) -> int:
    """Settle a step job out of its run's hold: capture its part (nothing when 0: the share stays
    held until the run ends). The run's and the step's totals (`Run.captured`, `RunStep.cost`)
    are summed from the charges by the runner (control/runs.py): writing them here would lock
    the run's rows after the job's, the opposite of the runner's order (a deadlock)."""
    paid = 0
    if amount > 0 and hold.state != HoldState.OPEN:
        # The run ended and released its hold before this job's end was recorded (it should
        # not: the runner cancels a run's jobs before it closes the hold): nothing left to take.
        log.warning(
            "job %s: its run's hold %s is closed; its charge of %d is waived", job.id, hold.id, amount
        )
        amount = 0
    amount = min(amount, hold.amount - hold.captured)
    if amount > 0:
        royalties = _royalties(amount, shares)
        paid = sum(r.amount for r in royalties)
        ledger.capture_part(
            s, hold_id=hold.id, amount=amount, key=f"capture:job:{job.id}", now=now, royalties=royalties
        )
    charge.captured, charge.royalties_paid, charge.settled_at = amount, paid, now
    s.flush()
    return amount
