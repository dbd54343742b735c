"""POST /v1/quotes: what a run would cost, without running anything (control/charging.py for one
tool, control/runs.py for a pipeline)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from swarmstation.api.deps import DB, CurrentUser, State
from swarmstation.api.schemas import Strict
from swarmstation.control import charging, submission
from swarmstation.control import runs as runs_ops
from swarmstation.control.charging import PipelineRoyalty
from swarmstation.control.saved_pipelines import resolve_for_run
from swarmstation.domain.errors import InvalidInput
from swarmstation.store.models import User

router = APIRouter(prefix="/v1", tags=["public"])


class QuoteCreate(Strict):
    """The body of POST /v1/jobs (`tool`, `inputs`), or of POST /v1/runs (`pipeline` or
    `pipeline_id` and `version`, `inputs`): the quote is for exactly that run."""

    tool: str | None = Field(
        default=None, min_length=1, max_length=63, description="Tool slug, e.g. sdxl-txt2img"
    )
    pipeline: dict[str, Any] | None = Field(default=None, description="A pipeline in its wire form")
    pipeline_id: str | None = Field(default=None, min_length=1, max_length=36, description="A saved pipeline")
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    inputs: dict[str, Any] = Field(default_factory=dict)


class StepQuoteOut(BaseModel):
    step: str
    tool: str
    items: int = Field(description="How many jobs the step fans out to")
    credits: int = Field(description="The most the step can cost, in credits")
    lines: list[dict[str, Any]] = Field(description="Each item's quote lines, with its `item` index")


class QuoteOut(BaseModel):
    total: int = Field(description="The most the run can cost, in credits: what submitting it holds")
    lines: list[dict[str, Any]] = Field(
        description="One tool: {kind: tool, tool, model, credits}, then {kind: royalty, lora, author, bps, "
        "credits, included: true} per LoRA of another author. A pipeline: {kind: step, step, tool, items, "
        "credits} per step, then its royalties ({kind: royalty, step, lora | pipeline, author, bps, "
        "credits}). Royalties are paid out of the total, never added to it"
    )
    charged: bool = Field(description="False when this user's runs are free (an admin's, by default)")
    steps: list[StepQuoteOut] | None = Field(
        default=None, description="A pipeline's steps (None for one tool)"
    )


@router.post("/quotes", response_model=QuoteOut, response_model_exclude_none=True)
def create_quote(body: QuoteCreate, s: DB, user: CurrentUser, state: State) -> QuoteOut:
    """The quote of a run of `tool` with `inputs`, checked as POST /v1/jobs checks them (unknown
    tool 404, bad inputs 422); or of a pipeline, checked as POST /v1/runs checks it (422 naming
    the step and the port). Nothing is written or held."""
    given = [x for x in (body.tool, body.pipeline, body.pipeline_id) if x is not None]
    if len(given) != 1:
        raise InvalidInput.at("tool", "give one of: a tool, a pipeline or a pipeline_id")
    if body.version is not None and body.pipeline_id is None:
        raise InvalidInput.at("version", "a version goes with a pipeline_id")
    cfg = charging.ChargeSettings.from_settings(state.settings)
    if body.tool is None:
        return _pipeline_quote(body, s, user, state, cfg)
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


def _pipeline_quote(
    body: QuoteCreate, s: DB, user: User, state: State, cfg: charging.ChargeSettings
) -> QuoteOut:
    me = s.get(User, user.id)
    assert me is not None  # authenticated just now
    definition: Any = body.pipeline
    inputs: dict[str, Any] = body.inputs
    royalty: PipelineRoyalty | None = None
    if body.pipeline_id is not None:
        ref = resolve_for_run(s, user=me, pipeline_id=body.pipeline_id, version=body.version, inputs=inputs)
        definition, inputs = ref.definition, ref.inputs
        royalty = PipelineRoyalty(ref.pipeline_id, ref.author_id, state.settings.pipeline_royalty_bps)
    checked = runs_ops.check_pipeline(s, pipeline_dict=definition, settings=state.settings)
    quoted = runs_ops.quote_pipeline(
        s,
        user=me,
        pipeline=checked.pipeline,
        inputs=inputs,
        pricing=cfg,
        specs=checked.specs,
        rows=checked.rows,
        matchers=state.matchers,
        limits=submission.SubmissionLimits.from_settings(state.settings),
        royalty=royalty,
        now=state.clock(),
    )
    return QuoteOut(
        total=quoted.total,
        lines=quoted.lines,
        charged=quoted.charged,
        steps=[StepQuoteOut(**x.as_dict()) for x in quoted.steps],
    )
