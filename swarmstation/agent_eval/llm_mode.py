"""`swarmstation eval-agent --mode llm`: the labelled set decided by the LLM agent (the loop of
control/agent_llm.py against the configured endpoint) instead of the offline planner.

There is no database here, so the functions the model calls answer from the bundled catalog:
`search_tools` ranks it as in the live agent (prices unknown), `propose_plan` validates with the
pipeline engine's own checks (`pipeline_from_dict`, `validate_pipeline`: tools, ports, types,
limits) without a quote, `get_balance` answers a fixed figure and `get_price` no estimate.

An outcome becomes a decision to judge: a valid proposal is a `Proposal` (its parameters read
from the pipeline, `domain.agent.llm.plan_params`); an answer after `get_balance` or
`get_price` is a `Question` of that kind; any other answer in words counts as declining
(`Abstain`), so questions about a tool, a run or the capabilities score low in this mode. A
message the endpoint failed on is also an `Abstain` and is counted in `llm_errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from swarmstation.control.agent_llm import Outcome, converse
from swarmstation.domain.agent import llm
from swarmstation.domain.agent.lexical import LexicalRetriever
from swarmstation.domain.agent.types import (
    Abstain,
    CatalogTool,
    Context,
    Decision,
    Proposal,
    Question,
    Retriever,
)
from swarmstation.domain.errors import InvalidInput
from swarmstation.domain.pipelines import pipeline_from_dict, pipeline_to_dict, validate_pipeline
from swarmstation.integrations.llm_functions import ChatEndpoint, LLMFailed

if TYPE_CHECKING:
    from swarmstation.config import Settings

__all__ = ["EVAL_BALANCE", "CatalogToolbox", "LLMDecider"]

#: What get_balance answers in the evaluation (no user, no ledger).
EVAL_BALANCE = 1000


@dataclass
class CatalogToolbox:
    """The four functions over a catalog, without a database."""

    catalog: Sequence[CatalogTool]
    retriever: Retriever
    max_steps: int = 20
    max_items: int = 16

    def search_tools(self, query: str) -> dict[str, Any]:
        found = llm.search_catalog(query, self.catalog, self.retriever)
        return {"ok": True, "tools": [llm.tool_card(t, None) for t in found]}

    def propose_plan(self, pipeline: object, explanation: str) -> tuple[dict[str, Any], Proposal | None]:
        specs = {t.spec.slug: t.spec for t in self.catalog}
        try:
            parsed = pipeline_from_dict(pipeline)
            order = validate_pipeline(parsed, specs, max_steps=self.max_steps, max_items=self.max_items)
        except InvalidInput as exc:
            errors = [{"field": e.field, "reason": e.reason} for e in exc.errors]
            return {"ok": False, "error": exc.detail, "errors": errors}, None
        wire = pipeline_to_dict(parsed)
        chain = tuple(wire["steps"][sid]["tool"] for sid in order)
        proposal = Proposal(wire, chain, llm.plan_params(wire, chain), explanation or " → ".join(chain))
        return {"ok": True, "quote": {"total": None}, "note": "the user approves it or not"}, proposal

    def get_balance(self) -> dict[str, Any]:
        return {"ok": True, "balance": EVAL_BALANCE, "held": 0}

    def get_price(self, tool: str) -> dict[str, Any]:
        if tool not in {t.spec.slug for t in self.catalog}:
            return {"ok": False, "error": f"no tool {tool!r}: search_tools finds tools by what they do"}
        return {"ok": True, "tool": tool, "model": "unknown", "estimate": None}


@dataclass
class LLMDecider:
    """A `decide_fn` for `agent_eval.evaluate`: one LLM conversation per message."""

    settings: Settings
    endpoint: ChatEndpoint
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMDecider:
        return cls(settings, ChatEndpoint.from_settings(settings))

    def __call__(self, text: str, context: Context, *, retriever: Retriever | None = None) -> Decision:
        toolbox = CatalogToolbox(context.catalog, retriever or LexicalRetriever())
        system = llm.system_prompt(
            name=self.settings.agent_name,
            tone=self.settings.agent_tone,
            media=context.media,
            prior=context.prior,
            seed=context.seed,
        )
        attached = [m.ref for m in context.media if m.source == "attachment"]
        messages = llm.build_messages(system, [], text, attached)
        try:
            outcome = converse(
                self.endpoint,
                toolbox,
                messages,
                max_rounds=self.settings.agent_llm_max_rounds,
                timeout_seconds=self.settings.agent_llm_timeout_seconds,
                stream=self.settings.agent_llm_stream,
            )
        except LLMFailed as exc:
            self.errors.append(str(exc))
            return Abstain(f"the LLM failed: {exc}")
        return decision_of(outcome)


def decision_of(outcome: Outcome) -> Decision:
    """How an outcome is judged (see the module docstring)."""
    if outcome.proposal is not None:
        return outcome.proposal
    if "get_price" in outcome.called and outcome.figures.get("question") == "price":
        return Question("price", tool=outcome.figures.get("tool"))
    if "get_balance" in outcome.called:
        return Question("balance")
    return Abstain(outcome.text or "the LLM declined")
