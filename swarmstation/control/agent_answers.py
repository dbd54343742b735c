"""What the agent says when it does not propose a plan: answers to questions from the API's own
data (prices, the balance, what a tool does, what happened to the last run, what the platform
can do), and a polite refusal with what the platform can do instead (control/conversations.py
stores them as agent_message items)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from swarmstation.control import ledger
from swarmstation.control.charging import ChargeSettings, price_view
from swarmstation.domain.agent.types import Abstain, CatalogTool, Question
from swarmstation.domain.pipelines import RunState
from swarmstation.store.models import ConversationItem, Run, Tool, User

if TYPE_CHECKING:
    from swarmstation.config import Settings

__all__ = ["DEPOSIT_URL", "answer", "capabilities", "capability_text", "declined"]

#: Where the studio takes deposits; a plan the balance does not cover points there.
DEPOSIT_URL = "/account"


def capabilities(catalog: Sequence[CatalogTool]) -> list[dict[str, str]]:
    return [
        {
            "slug": t.spec.slug,
            "name": t.spec.name,
            "description": t.spec.description,
            "category": t.spec.category,
        }
        for t in catalog
        if t.available
    ]


def capability_text(catalog: Sequence[CatalogTool]) -> str:
    by_category: dict[str, list[str]] = {}
    for tool in catalog:
        if tool.available:
            by_category.setdefault(tool.spec.category, []).append(tool.spec.name)
    if not by_category:
        return "no tool is available right now"
    return "; ".join(f"{cat}: {', '.join(names)}" for cat, names in by_category.items())


_DECLINE = {
    "friendly": "Sorry, I can't help with that one ({reason}). Here is what I can do: {what}.",
    "neutral": "I can't do that ({reason}). What I can do: {what}.",
    "concise": "Not possible ({reason}). Available: {what}.",
}


def declined(decision: Abstain, catalog: Sequence[CatalogTool], tone: str) -> dict[str, Any]:
    """A polite refusal with what the platform can do (the planner's suggestions first)."""
    tools = {t["slug"]: t for t in capabilities(catalog)}
    suggested = [tools[slug] for slug in decision.suggestions if slug in tools]
    suggestions = suggested or list(tools.values())
    template = _DECLINE.get(tone, _DECLINE["friendly"])
    text = template.format(reason=decision.reason.rstrip("."), what=capability_text(catalog))
    return {"text": text, "kind": "abstain", "suggestions": suggestions}


def answer(
    s: Session,
    user: User,
    q: Question,
    catalog: Sequence[CatalogTool],
    branch: Sequence[ConversationItem],
    everything: Sequence[ConversationItem],
    settings: Settings,
) -> tuple[str, dict[str, Any]]:
    """The answer's text and its body (kind `answer`, the question and the figures it quotes)."""
    base: dict[str, Any] = {"kind": "answer", "question": q.kind, "suggestions": []}
    if q.kind == "balance":
        bal = ledger.balance(s, user.id)
        text = f"You have {bal.available} credits available"
        text += f" ({bal.held} more are held by runs in progress)." if bal.held else "."
        text += f" You can deposit more at {DEPOSIT_URL}."
        return text, {**base, "balance": bal.available, "held": bal.held, "deposit_url": DEPOSIT_URL}
    if q.kind == "price":
        return _price_answer(s, q.tool, branch, settings, base)
    if q.kind == "tool" and q.tool:
        row = s.get(Tool, q.tool)
        if row is None:
            return f"I don't know a tool called {q.tool}.", base
        spec = row.spec
        name, category = spec.get("name", row.slug), spec.get("category", "")
        text = f"{name} ({row.slug}, {category}): {spec.get('description', '')}"
        return text, {**base, "tool": row.slug}
    if q.kind == "run":
        runs = [i for i in branch if i.type == "run"] or [i for i in everything if i.type == "run"]
        if not runs:
            return "Nothing has run in this conversation yet.", base
        run = s.get(Run, runs[-1].run_id) if runs[-1].run_id else None
        if run is None:
            return "The last run of this conversation no longer exists.", base
        text = f"Your last run ({run.id}) is {run.state.value.lower()}"
        if run.state == RunState.FAILED:
            text += f": {run.error or 'no reason was recorded'}"
        text += f". It held {run.quote} credits and was charged {run.captured}."
        return text, {**base, "run_id": run.id, "state": run.state.value, "error": run.error}
    what = capability_text(catalog)
    return f"Here is what I can do: {what}.", {**base, "suggestions": capabilities(catalog)}


def _price_answer(
    s: Session, slug: str | None, branch: Sequence[ConversationItem], settings: Settings, base: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    if slug:
        row = s.get(Tool, slug)
        if row is None:
            return f"I don't know a tool called {slug}.", base
        view = price_view(s, row, ChargeSettings.from_settings(settings))
        name = row.spec.get("name", slug)
        if view.estimate is not None:
            text = f"One run of {name} with its defaults costs up to {view.estimate} credits."
        else:
            text = (
                f"The price of {name} depends on its inputs ({view.credits} credits per unit, {view.model})."
            )
        return text, {**base, "tool": slug, "price": view.estimate}
    plans = [i for i in branch if i.type == "plan"]
    if not plans:
        return "Ask me for something and I'll propose a plan with its price before anything runs.", base
    total = int(plans[-1].data["quote"]["total"])
    return f"The last plan costs up to {total} credits.", {**base, "plan_id": plans[-1].id, "price": total}
