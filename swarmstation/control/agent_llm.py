"""The chat agent's LLM mode (issue 16): the model calls functions (`search_tools`,
`propose_plan`, `get_balance`, `get_price`) in a bounded loop, through the configured
OpenAI-compatible endpoint, and its valid plan becomes the conversation's plan item.

Theory of operation. `reply` is what `control/conversations.py` calls instead of the offline
planner when the LLM mode is on (`agent_mode` llm, or auto with `llm_base_url` set). It builds
the turn's messages (domain/agent/llm.py), then `converse` asks the model, runs the functions
it calls against a `Toolbox` and answers their results back, until the model answers text, for
at most `agent_llm_max_rounds` rounds and `agent_llm_timeout_seconds` in all. `propose_plan` is
checked and quoted exactly as `POST /v1/runs` would (`runs.check_pipeline`, `runs.quote_pipeline`):
errors go back to the model as the function's result, a valid pipeline is kept (the last one
wins) and the conversation turns it into a plan item with its quote. The model has no function
that runs anything.

When the endpoint fails (unreachable, an HTTP error, a timeout, no answer within the rounds) the
reply is `LLMTurn(None, note)`: the conversation falls back to the offline planner and says so.
A plan already proposed before a failure is kept. Nothing here raises to the caller.

The endpoint is `integrations/llm_functions.py` (function calling on the `openai` SDK).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sqlalchemy.orm import Session

from swarmstation.control import ledger
from swarmstation.control import runs as runs_ops
from swarmstation.control.charging import ChargeSettings, price_view
from swarmstation.control.submission import MatcherSource, SubmissionLimits
from swarmstation.domain.agent import llm
from swarmstation.domain.agent.lexical import LexicalRetriever
from swarmstation.domain.agent.types import CatalogTool, Context, Proposal, Retriever
from swarmstation.domain.errors import SwarmError
from swarmstation.domain.pipelines import pipeline_to_dict
from swarmstation.integrations.llm_functions import ChatEndpoint, LLMFailed
from swarmstation.store.models import ConversationItem, Tool, User

if TYPE_CHECKING:
    from swarmstation.config import Settings

log = logging.getLogger(__name__)

__all__ = [
    "Answer",
    "ChatEndpoint",
    "Endpoint",
    "LLMFailed",
    "LLMTurn",
    "Outcome",
    "SessionToolbox",
    "Toolbox",
    "converse",
    "mode",
    "reply",
]


@dataclass(frozen=True)
class Answer:
    """The model answered in words (a question, a refusal) without a plan: its text and the
    figures it asked for (`balance`, `price`, `tool`), as an agent_message body."""

    text: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class LLMTurn:
    """What the LLM made of a message: a proposal, an answer, or None (fall back to the offline
    planner), and a note for the user when it fell back."""

    decision: Proposal | Answer | None
    note: str | None = None


class Endpoint(Protocol):
    def turn(
        self, messages: Sequence[Mapping[str, Any]], *, stream: bool, timeout_seconds: float
    ) -> llm.ModelTurn: ...


class Toolbox(Protocol):
    """What the functions the model calls do. Each answers a JSON-able result for the model."""

    def search_tools(self, query: str) -> dict[str, Any]: ...

    def propose_plan(self, pipeline: object, explanation: str) -> tuple[dict[str, Any], Proposal | None]: ...

    def get_balance(self) -> dict[str, Any]: ...

    def get_price(self, tool: str) -> dict[str, Any]: ...


def mode(settings: Settings) -> Literal["offline", "llm"]:
    """offline: the planner; llm: the LLM loop (which notes it when no endpoint is set)."""
    if settings.agent_mode == "offline":
        return "offline"
    if settings.agent_mode == "auto":
        return "llm" if settings.llm_base_url else "offline"
    return "llm"


# -- the loop --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a conversation with the model came to: the last valid proposal, the model's final
    text, the functions it called (in order) and the last figures they answered."""

    proposal: Proposal | None = None
    text: str = ""
    called: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    rounds: int = 0


def converse(
    endpoint: Endpoint,
    toolbox: Toolbox,
    messages: list[dict[str, Any]],
    *,
    max_rounds: int,
    timeout_seconds: float,
    stream: bool,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Ask the model, run the functions it calls, answer their results, until it answers text
    (at most `max_rounds` answers, `timeout_seconds` in all). `messages` grows with the chat.
    Raises LLMFailed when the endpoint fails or the model does not settle, unless it proposed
    a valid plan already (then the outcome has it, and no text)."""
    out = Outcome()
    deadline = clock() + timeout_seconds
    while out.rounds < max_rounds:
        left = deadline - clock()
        if left <= 0:
            return _unsettled(out, f"the LLM did not finish within {timeout_seconds:g} seconds")
        try:
            turn = endpoint.turn(messages, stream=stream, timeout_seconds=left)
        except LLMFailed as exc:
            return _unsettled(out, str(exc))
        out.rounds += 1
        if not turn.calls:
            out.text = turn.text.strip()
            if not out.text and out.proposal is None:
                raise LLMFailed("the LLM gave an empty answer")
            return out
        messages.append(llm.assistant_message(turn))
        for call in llm.parse_tool_calls(turn):
            out.called.append(call.name)
            result = _run_call(toolbox, call, out)
            messages.append(llm.tool_message(call.id, result))
    return _unsettled(out, f"the LLM did not settle within {max_rounds} rounds of tool calls")


def _unsettled(out: Outcome, why: str) -> Outcome:
    if out.proposal is not None:
        log.info("LLM agent: %s; keeping the plan it proposed", why)
        return out
    raise LLMFailed(why)


def _run_call(toolbox: Toolbox, call: llm.ToolCall, out: Outcome) -> dict[str, Any]:
    if call.error is not None:
        return {"ok": False, "error": call.error}
    args = call.arguments
    if call.name == "search_tools":
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            return {"ok": False, "error": "query: a non-empty string is required"}
        return toolbox.search_tools(query)
    if call.name == "propose_plan":
        if "pipeline" not in args:
            return {"ok": False, "error": "pipeline: required"}
        explanation = args.get("explanation")
        result, proposal = toolbox.propose_plan(
            args["pipeline"], explanation if isinstance(explanation, str) else ""
        )
        if proposal is not None:
            out.proposal = proposal
            out.figures["price"] = result.get("quote", {}).get("total")
        return result
    if call.name == "get_balance":
        result = toolbox.get_balance()
        out.figures.update({"question": "balance", **{k: result.get(k) for k in ("balance", "held")}})
        return result
    tool = args.get("tool")
    if not isinstance(tool, str) or not tool.strip():
        return {"ok": False, "error": "tool: a tool's slug is required"}
    result = toolbox.get_price(tool.strip())
    if result.get("ok"):
        out.figures.update({"question": "price", "tool": result.get("tool"), "price": result.get("estimate")})
    return result


# -- the functions, against the database ----------------------------------------------------------


@dataclass
class SessionToolbox:
    """The functions as the API's data answers them, for one user's message."""

    s: Session
    user: User
    settings: Settings
    catalog: Sequence[CatalogTool]
    now: datetime
    matchers: MatcherSource | None = None
    retriever: Retriever | None = None
    seed: int = 0
    _pricing: ChargeSettings | None = None

    def _charge_settings(self) -> ChargeSettings:
        if self._pricing is None:
            self._pricing = ChargeSettings.from_settings(self.settings)
        return self._pricing

    def _price(self, slug: str) -> dict[str, Any] | None:
        row = self.s.get(Tool, slug)
        if row is None:
            return None
        view = price_view(self.s, row, self._charge_settings())
        return {"model": view.model, "credits": view.credits, "cap": view.cap, "estimate": view.estimate}

    def search_tools(self, query: str) -> dict[str, Any]:
        found = llm.search_catalog(query, self.catalog, self.retriever or LexicalRetriever())
        return {"ok": True, "tools": [llm.tool_card(t, self._price(t.spec.slug)) for t in found]}

    def propose_plan(self, pipeline: object, explanation: str) -> tuple[dict[str, Any], Proposal | None]:
        try:
            checked = runs_ops.check_pipeline(self.s, pipeline_dict=pipeline, settings=self.settings)
            quoted = runs_ops.quote_pipeline(
                self.s,
                user=self.user,
                pipeline=checked.pipeline,
                inputs={},
                pricing=self._charge_settings(),
                specs=checked.specs,
                rows=checked.rows,
                matchers=self.matchers,
                limits=SubmissionLimits.from_settings(self.settings),
                now=self.now,
            )
        except SwarmError as exc:
            errors = [{"field": e.field, "reason": e.reason} for e in getattr(exc, "errors", ())]
            return {"ok": False, "error": exc.detail, "errors": errors}, None
        wire = pipeline_to_dict(checked.pipeline)
        chain = tuple(wire["steps"][sid]["tool"] for sid in checked.order)
        available = ledger.balance(self.s, self.user.id).available
        shortfall = max(0, quoted.total - available) if quoted.charged else 0
        result = {
            "ok": True,
            "quote": {
                "total": quoted.total,
                "steps": [{"step": x.step, "credits": x.credits} for x in quoted.steps],
            },
            "balance": available,
            "shortfall": shortfall,
            "note": "The user sees this plan with its price and approves it or not; you cannot run it.",
        }
        proposal = Proposal(
            pipeline=wire,
            chain=chain,
            params=llm.plan_params(wire, chain),
            explanation=explanation or " → ".join(chain),
            intent="chain" if len(chain) > 1 else "create",
        )
        return result, proposal

    def get_balance(self) -> dict[str, Any]:
        bal = ledger.balance(self.s, self.user.id)
        return {"ok": True, "balance": bal.available, "held": bal.held}

    def get_price(self, tool: str) -> dict[str, Any]:
        price = self._price(tool)
        if price is None:
            return {"ok": False, "error": f"no tool {tool!r}: search_tools finds tools by what they do"}
        return {"ok": True, "tool": tool, **price}


# -- a reply ---------------------------------------------------------------------------------------


def reply(
    s: Session,
    *,
    user: User,
    text: str,
    images: Sequence[str],
    context: Context,
    branch: Sequence[ConversationItem],
    settings: Settings,
    now: datetime,
    matchers: MatcherSource | None = None,
    retriever: Retriever | None = None,
    endpoint: Endpoint | None = None,
) -> LLMTurn:
    """The LLM's reply to the user's message `text` (with `images` attached) under `branch`
    (the items before it). Never raises: a failure is `LLMTurn(None, note)`."""
    toolbox = SessionToolbox(s, user, settings, context.catalog, now, matchers, retriever, context.seed)
    own: ChatEndpoint | None = None
    try:
        if endpoint is None:
            endpoint = own = ChatEndpoint.from_settings(settings)
        system = llm.system_prompt(
            name=settings.agent_name,
            tone=settings.agent_tone,
            media=context.media,
            prior=context.prior,
            seed=context.seed,
        )
        history = llm.transcript([{"type": i.type, **i.data} for i in branch])
        messages = llm.build_messages(system, history, text, images)
        outcome = converse(
            endpoint,
            toolbox,
            messages,
            max_rounds=settings.agent_llm_max_rounds,
            timeout_seconds=settings.agent_llm_timeout_seconds,
            stream=settings.agent_llm_stream,
        )
    except LLMFailed as exc:
        return LLMTurn(None, _fallback_note(str(exc)))
    except Exception:  # a bug here must not lose the message: the planner answers instead
        log.exception("the LLM agent failed")
        return LLMTurn(None, _fallback_note("the LLM agent failed"))
    finally:
        if own is not None:
            own.close()
    if outcome.proposal is not None:
        proposal = outcome.proposal
        if outcome.text:
            proposal = Proposal(
                proposal.pipeline, proposal.chain, proposal.params, outcome.text, proposal.intent
            )
        return LLMTurn(proposal)
    data: dict[str, Any] = {"kind": "answer", "suggestions": []}
    data.update(
        {k: v for k, v in outcome.figures.items() if k in ("question", "balance", "held", "price", "tool")}
    )
    return LLMTurn(Answer(outcome.text, data))


def _fallback_note(why: str) -> str:
    return f"The language model was not available: {why.rstrip('.')}. I answered without it."
