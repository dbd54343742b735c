"""POST /v1/quotes: what a run would cost, without running anything (control/charging.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from swarmstation.api.deps import DB, CurrentUser, State
from swarmstation.api.schemas import JobCreate
from swarmstation.control import charging, submission

router = APIRouter(prefix="/v1", tags=["public"])


class QuoteCreate(JobCreate):
    """The body of POST /v1/jobs: the quote is for exactly that run."""


class QuoteOut(BaseModel):
    total: int = Field(description="The most the run can cost, in credits: what submitting it holds")
    lines: list[dict[str, Any]] = Field(
        description="{kind: tool, tool, model, credits}, then {kind: royalty, lora, author, bps, credits, "
        "included: true} per LoRA of another author: royalties are paid out of the total, not added"
    )
    charged: bool = Field(description="False when this user's runs are free (an admin's, by default)")


@router.post("/quotes", response_model=QuoteOut)
def create_quote(body: QuoteCreate, s: DB, user: CurrentUser, state: State) -> QuoteOut:
    """The quote of a run of `tool` with `inputs`, checked as POST /v1/jobs checks them (unknown
    tool 404, bad inputs 422). Nothing is written or held."""
    cfg = charging.ChargeSettings.from_settings(state.settings)
    prepared = submission.prepare(
        s,
        user=user,
        tool_slug=body.tool,
        inputs=body.inputs,
        matchers=state.matchers,
        limits=submission.SubmissionLimits.from_settings(state.settings),
        now=state.clock(),
        random_seed=0,  # a quote does not depend on the seed
    )
    priced = submission.quote_run(s, prepared, user=user, pricing=cfg)
    return QuoteOut(total=priced.total, lines=list(priced.lines), charged=charging.is_charged(user, cfg))
