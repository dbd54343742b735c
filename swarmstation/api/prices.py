"""Admin: a tool's price model (PUT/DELETE /v1/admin/tools/{slug}/price) and the profit and loss
report (GET /v1/admin/costs/pnl)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from swarmstation.api.deps import DB, AdminUser, State
from swarmstation.api.schemas import INT64_MAX, PriceOut, Strict
from swarmstation.control import charging
from swarmstation.control.costs import PnlGroupBy, pnl_report, usd
from swarmstation.domain.errors import InvalidInput
from swarmstation.domain.prices import PriceKind, PriceModel
from swarmstation.store import queries

router = APIRouter(prefix="/v1/admin", tags=["admin"])

Credits = Annotated[int, Field(ge=0, le=INT64_MAX // 1_000_000)]


class PriceSet(Strict):
    model: Literal["per_run", "per_megapixel", "per_gpu_second", "per_1k_tokens"]
    credits: Credits = Field(description="Credits per run, output megapixel, GPU second or 1000 tokens")
    cap: Credits | None = Field(None, description="per_gpu_second only (required): the most one run costs")


def price_out(view: charging.PriceView) -> PriceOut:
    return PriceOut(model=view.model, credits=view.credits, cap=view.cap, estimate=view.estimate)


@router.put("/tools/{slug}/price", response_model=PriceOut)
def set_tool_price(slug: str, body: PriceSet, s: DB, admin: AdminUser, state: State) -> PriceOut:
    """Set a tool's price model; later quotes and submissions use it (jobs already submitted keep
    the quote they hold)."""
    tool = queries.tool_by_slug(s, slug)
    model = PriceModel(PriceKind(body.model), body.credits, body.cap)  # PriceSpecError: 422
    charging.set_price(s, tool, model, admin_id=admin.id, now=state.clock())
    return price_out(charging.price_view(s, tool, charging.ChargeSettings.from_settings(state.settings)))


@router.delete("/tools/{slug}/price", response_model=PriceOut)
def clear_tool_price(slug: str, s: DB, _: AdminUser, state: State) -> PriceOut:
    """Remove a tool's price model: its price is derived from what it costs us again."""
    tool = queries.tool_by_slug(s, slug)
    charging.clear_price(s, tool)
    return price_out(charging.price_view(s, tool, charging.ChargeSettings.from_settings(state.settings)))


class PnlRowOut(BaseModel):
    key: str
    revenue_credits: int = Field(description="Captured from the payers")
    royalty_credits: int = Field(description="Paid out of the revenue to LoRA authors")
    revenue_usd: Decimal
    royalty_usd: Decimal
    net_revenue_usd: Decimal = Field(description="Revenue less royalties")
    cost_usd: Decimal = Field(description="What the jobs cost us (GET /v1/admin/costs)")
    margin_usd: Decimal = Field(description="Net revenue less cost")
    jobs: int = Field(description="Jobs that ran on our instances or ComfyUI Deploy")
    jobs_charged: int = Field(description="Jobs whose charge was settled")


class PnlOut(BaseModel):
    group_by: str
    credits_per_usd: int
    revenue_credits: int
    royalty_credits: int
    revenue_usd: Decimal
    royalty_usd: Decimal
    cost_usd: Decimal
    margin_usd: Decimal
    unattributed_cost_usd: Decimal = Field(description="Idle instances that ran no job (in the rows' costs)")
    rows: list[PnlRowOut]
    notes: list[str]


def _money(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.000001"))


@router.get("/costs/pnl", response_model=PnlOut)
def pnl(
    s: DB,
    _: AdminUser,
    state: State,
    group_by: Annotated[PnlGroupBy, Query()] = "tool",
    since: datetime | None = None,
) -> PnlOut:
    """Revenue (captured credits, in $ at credits_per_usd, and the royalties paid from it) against
    what the jobs cost us, by tool, user or day."""
    if since is not None and since.tzinfo is None:
        raise InvalidInput("since: give a time zone, e.g. 2026-11-01T00:00:00Z")
    rate = state.settings.credits_per_usd
    report = pnl_report(s, group_by=group_by, now=state.clock(), credits_per_usd=rate, since=since)
    rows = []
    for r in report.rows:
        revenue, royalty, cost = usd(r.revenue_credits, rate), usd(r.royalty_credits, rate), _money(r.cost)
        rows.append(
            PnlRowOut(
                key=r.key,
                revenue_credits=r.revenue_credits,
                royalty_credits=r.royalty_credits,
                revenue_usd=revenue,
                royalty_usd=royalty,
                net_revenue_usd=revenue - royalty,
                cost_usd=cost,
                margin_usd=revenue - royalty - cost,
                jobs=r.jobs,
                jobs_charged=r.jobs_charged,
            )
        )
    revenue_credits = sum(r.revenue_credits for r in report.rows)
    royalty_credits = sum(r.royalty_credits for r in report.rows)
    cost = sum((r.cost_usd for r in rows), Decimal(0))
    return PnlOut(
        group_by=report.group_by,
        credits_per_usd=rate,
        revenue_credits=revenue_credits,
        royalty_credits=royalty_credits,
        revenue_usd=usd(revenue_credits, rate),
        royalty_usd=usd(royalty_credits, rate),
        cost_usd=cost,
        margin_usd=usd(revenue_credits, rate) - usd(royalty_credits, rate) - cost,
        unattributed_cost_usd=_money(report.unattributed_cost),
        rows=rows,
        notes=report.notes,
    )
