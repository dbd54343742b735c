"""The public catalog (GET /v1/catalog): the tools and their prices, and what a credit is worth,
for people who have not signed in — the studio's landing and pricing pages show it. The same
tools and prices as GET /v1/tools, which needs credentials (it is the API's working list)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select

from swarmstation.api.deps import DB, State
from swarmstation.api.prices import price_out
from swarmstation.api.schemas import ToolSummary
from swarmstation.api.views import tool_summary
from swarmstation.control import charging
from swarmstation.store.models import Tool

router = APIRouter(prefix="/v1", tags=["public"])


class Catalog(BaseModel):
    credits_per_usd: int = Field(description="What $1 buys (SWARMSTATION_CREDITS_PER_USD)")
    tools: list[ToolSummary]


@router.get("/catalog", response_model=Catalog)
def catalog(s: DB, state: State) -> Catalog:
    """Every tool with its price and whether it can run here; no credentials needed."""
    cfg = charging.ChargeSettings.from_settings(state.settings)
    tools = s.scalars(select(Tool).order_by(Tool.slug))
    return Catalog(
        credits_per_usd=state.settings.credits_per_usd,
        tools=[
            tool_summary(t, price_out(charging.price_view(s, t, cfg)), settings=state.settings) for t in tools
        ],
    )
