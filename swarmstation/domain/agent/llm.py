"""The chat agent's LLM mode, its pure half: the functions the model may call (their JSON
schemas), the system prompt and the chat messages of a turn, the tool cards the model is shown,
and the model's tool calls read back from a whole answer or from streamed deltas.

Theory of operation. The model never sees the catalog: it asks ``search_tools(query)`` and gets
the few best tools of the retriever with their ports and prices. It proposes a pipeline with
``propose_plan(pipeline)``; the caller validates and quotes it exactly as ``POST /v1/runs``
would and answers the verdict (the errors, or the quote) back as the tool's result, so the
model can fix a plan it got wrong. ``get_balance()`` and ``get_price(tool)`` answer from the
API's data. There is no function that runs anything: approval stays with the user.

The loop that talks to the endpoint (``control/agent_llm.py``) owns the I/O and the clock; this
module only builds and reads plain data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from swarmstation.domain.agent.types import CatalogTool, MediaRef, PriorPlan, Retriever
from swarmstation.domain.tools.spec import InputSpec

__all__ = [
    "MAX_HISTORY_MESSAGES",
    "MAX_SEARCH_RESULTS",
    "TOOL_NAMES",
    "ModelTurn",
    "ToolCall",
    "TurnAssembler",
    "assistant_message",
    "build_messages",
    "parse_tool_calls",
    "plan_params",
    "search_catalog",
    "system_prompt",
    "tool_card",
    "tool_message",
    "tool_schemas",
    "transcript",
]

#: How many tools one search answers: enough for the model to choose, far from the whole catalog.
MAX_SEARCH_RESULTS = 5
#: The earlier messages of the branch the model is shown (the latest ones).
MAX_HISTORY_MESSAGES = 12
#: The longest text of one earlier message the model is shown.
MAX_HISTORY_CHARS = 1500
TOOL_NAMES = ("search_tools", "propose_plan", "get_balance", "get_price")

_TONES = {
    "friendly": "Be warm and encouraging, in a sentence or two.",
    "neutral": "Be plain and factual, in a sentence or two.",
    "concise": "Be as brief as possible: a few words when they suffice.",
}

_PIPELINE_SHAPE = (
    'A pipeline is {"inputs": {}, "steps": {STEP_ID: {"tool": SLUG, "inputs": {PORT: VALUE}}}}. '
    'A VALUE is a literal (a string, a number, an image ref such as "upload:..." or "output:..."), '
    'or {"from": STEP_ID, "output": PORT} to feed another step\'s output port into this input. '
    'Add "variations": {"count": N} to a step for N images. Step ids are short identifiers '
    '(letters, digits, "_" or "-"). Use only the tools and ports search_tools showed you.'
)


def tool_schemas() -> list[dict[str, Any]]:
    """The ``tools`` of a chat completion request: the four functions the model may call."""

    def function(
        name: str, description: str, properties: dict[str, Any], required: list[str]
    ) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                "parameters": {"type": "object", "properties": properties, "required": required},
            },
        }

    return [
        function(
            "search_tools",
            "Find the platform's tools for what the user wants: answers the best few tools with their "
            "input and output ports and their prices.",
            {"query": {"type": "string", "description": "What the tool should do, in a few words"}},
            ["query"],
        ),
        function(
            "propose_plan",
            "Propose a pipeline to the user, who sees it with its price and decides whether to run it. "
            "Answers the quote, or the validation errors to fix. Nothing runs until the user approves. "
            + _PIPELINE_SHAPE,
            {
                "pipeline": {"type": "object", "description": "The pipeline in its wire form"},
                "explanation": {"type": "string", "description": "One sentence on what the plan does"},
            },
            ["pipeline"],
        ),
        function("get_balance", "The user's credits: available and held by runs in progress.", {}, []),
        function(
            "get_price",
            "What one run of a tool costs, in credits, with its defaults.",
            {"tool": {"type": "string", "description": "The tool's slug"}},
            ["tool"],
        ),
    ]


def system_prompt(
    *, name: str, tone: str, media: Sequence[MediaRef], prior: PriorPlan | None, seed: int
) -> str:
    """The system message: who the agent is and how it speaks (the persona), what it may do,
    the images the user has and the plan an iteration would edit."""
    lines = [
        f"You are {name}, the assistant of an image generation platform. "
        + _TONES.get(tone, _TONES["friendly"]),
        "You help the user find tools and propose a plan (a pipeline of tools) with its price. "
        "You cannot run anything: the user approves a plan you propose, or not.",
        "Call search_tools to find tools (you do not know the catalog otherwise), then propose_plan. "
        "If propose_plan answers errors, fix the pipeline and propose it again. Use get_balance and "
        "get_price to answer questions about credits and prices. If no tool can do what is asked, "
        "say so politely and say what the platform can do instead.",
        _PIPELINE_SHAPE,
        f"For a new image use the seed {seed} unless the user gives one.",
    ]
    if media:
        listed = ", ".join(
            f"{m.ref} ({'attached' if m.source == 'attachment' else 'an earlier result'})" for m in media
        )
        lines.append(f"The images the user has, the newest last: {listed}.")
    else:
        lines.append("The user has no image yet.")
    if prior is not None:
        lines.append(
            "The latest plan in this conversation (edit it when the user asks for a change): "
            + json.dumps(prior.pipeline, sort_keys=True, separators=(",", ":"))
        )
    return "\n".join(lines)


def transcript(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The earlier messages of the branch as chat messages, oldest first, the latest
    :data:`MAX_HISTORY_MESSAGES`: user messages as ``user``, the agent's messages, plans and
    results as ``assistant`` (a plan by its tools and price, a result by its output refs).
    ``items`` are wire-form items (``type`` and the body's fields)."""
    out: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type")
        if kind == "user_message":
            text = str(item.get("text") or "")
            images = [str(i) for i in item.get("images") or []]
            if images:
                text = f"{text}\n[attached: {', '.join(images)}]".strip()
            out.append({"role": "user", "content": _cut(text)})
        elif kind == "agent_message" and item.get("kind") != "greeting":
            out.append({"role": "assistant", "content": _cut(str(item.get("text") or ""))})
        elif kind == "plan":
            total = (item.get("quote") or {}).get("total")
            chain = " → ".join(str(c) for c in item.get("chain") or [])
            out.append({"role": "assistant", "content": f"[proposed plan: {chain}, {total} credits]"})
        elif kind == "result":
            refs = [str(o.get("ref")) for o in item.get("outputs") or []]
            out.append({"role": "assistant", "content": f"[result: {', '.join(refs) or 'no files'}]"})
        elif kind == "error":
            out.append({"role": "assistant", "content": _cut(f"[error: {item.get('message')}]")})
    return out[-MAX_HISTORY_MESSAGES:]


def _cut(text: str) -> str:
    return text if len(text) <= MAX_HISTORY_CHARS else text[: MAX_HISTORY_CHARS - 1] + "…"


def build_messages(
    system: str, history: Sequence[Mapping[str, Any]], text: str, images: Sequence[str]
) -> list[dict[str, Any]]:
    """The chat of one turn: the system message, the history, the user's message."""
    said = text.strip()
    if images:
        said = f"{said}\n[attached: {', '.join(images)}]".strip()
    return [
        {"role": "system", "content": system},
        *[dict(m) for m in history],
        {"role": "user", "content": said},
    ]


def _port(inp: InputSpec) -> dict[str, Any]:
    card: dict[str, Any] = {"name": inp.name, "type": inp.type}
    if inp.required:
        card["required"] = True
    if inp.default is not None:
        card["default"] = inp.default
    if inp.choices:
        card["choices"] = list(inp.choices)
    if inp.minimum is not None:
        card["min"] = inp.minimum
    if inp.maximum is not None:
        card["max"] = inp.maximum
    if inp.many:
        card["many"] = True
    if inp.description:
        card["description"] = inp.description
    return card


def tool_card(tool: CatalogTool, price: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the model is told about one tool: slug, name, description, category, base model,
    input and output ports, and its price (``None``: unknown)."""
    spec = tool.spec
    return {
        "slug": spec.slug,
        "name": spec.name,
        "description": spec.description,
        "category": spec.category,
        "base_model": spec.base_model,
        "inputs": [_port(i) for i in spec.inputs],
        "outputs": [{"name": o.name, "type": o.type} for o in spec.outputs],
        "price": dict(price) if price is not None else None,
    }


def search_catalog(
    query: str, catalog: Sequence[CatalogTool], retriever: Retriever, *, limit: int = MAX_SEARCH_RESULTS
) -> list[CatalogTool]:
    """The available tools the retriever ranks best for ``query``, at most ``limit``."""
    available = [t for t in catalog if t.available]
    by_slug = {t.spec.slug: t for t in available}
    ranked = retriever.rank(query, available, limit=min(limit, MAX_SEARCH_RESULTS))
    return [by_slug[r.slug] for r in ranked if r.slug in by_slug]


# -- the model's answers --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelTurn:
    """One answer of the model: its text and its tool calls, each ``{"id", "name",
    "arguments"}`` with the arguments as the JSON text the model wrote."""

    text: str
    calls: tuple[Mapping[str, str], ...] = ()


@dataclass(frozen=True)
class ToolCall:
    """A tool call read: its id, the function's name and its arguments, or why it cannot be
    made (``error``: an unknown function, arguments that are not a JSON object)."""

    id: str
    name: str
    arguments: Mapping[str, Any]
    error: str | None = None


def parse_tool_calls(turn: ModelTurn) -> list[ToolCall]:
    """The turn's tool calls, each checked: a known name, arguments that are a JSON object."""
    out: list[ToolCall] = []
    for raw in turn.calls:
        ident, name, text = str(raw.get("id") or ""), str(raw.get("name") or ""), raw.get("arguments") or ""
        if name not in TOOL_NAMES:
            out.append(
                ToolCall(ident, name, {}, f"unknown function {name!r}: use one of {', '.join(TOOL_NAMES)}")
            )
            continue
        try:
            args = json.loads(text) if str(text).strip() else {}
        except json.JSONDecodeError as exc:
            out.append(ToolCall(ident, name, {}, f"the arguments are not valid JSON ({exc.msg})"))
            continue
        if not isinstance(args, dict):
            out.append(ToolCall(ident, name, {}, "the arguments must be a JSON object"))
            continue
        out.append(ToolCall(ident, name, args))
    return out


def assistant_message(turn: ModelTurn) -> dict[str, Any]:
    """The model's answer as the chat message that goes back into the history."""
    message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
    if turn.calls:
        message["tool_calls"] = [
            {
                "id": str(c.get("id") or ""),
                "type": "function",
                "function": {"name": str(c.get("name") or ""), "arguments": str(c.get("arguments") or "")},
            }
            for c in turn.calls
        ]
    return message


def tool_message(call_id: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """A tool's result as the chat message answering the call ``call_id``."""
    return {
        "role": "tool",
        "tool_call_id": call_id,
        "content": json.dumps(result, sort_keys=True, default=str),
    }


@dataclass
class TurnAssembler:
    """Streamed deltas (``choices[0].delta`` of each chunk, as dicts) in, one :class:`ModelTurn`
    out: content is concatenated, tool calls are gathered by their ``index`` (the id and name
    come in the first delta of a call, its arguments in pieces)."""

    _text: list[str] = field(default_factory=list)
    _calls: dict[int, dict[str, str]] = field(default_factory=dict)

    def add(self, delta: Mapping[str, Any]) -> None:
        content = delta.get("content")
        if content:
            self._text.append(str(content))
        for piece in delta.get("tool_calls") or []:
            index = int(piece.get("index") or 0)
            call = self._calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
            if piece.get("id"):
                call["id"] = str(piece["id"])
            function = piece.get("function") or {}
            if function.get("name"):
                call["name"] += str(function["name"])
            if function.get("arguments"):
                call["arguments"] += str(function["arguments"])

    def turn(self) -> ModelTurn:
        calls = tuple(self._calls[i] for i in sorted(self._calls))
        return ModelTurn("".join(self._text), calls)


# -- a proposal's parameters ----------------------------------------------------------------------

#: Inputs that carry the user's words or images, not parameters.
_NOT_PARAMS = frozenset({"prompt", "negative_prompt", "idea", "style", "image", "images"})
#: A generation tool's family, by its slug's prefix, as the offline planner names it.
_FAMILIES = {"sdxl-": "sdxl", "sd15-": "sd15", "flux-": "flux"}


def plan_params(pipeline: Mapping[str, Any], chain: Sequence[str]) -> dict[str, Any]:
    """The parameters a proposed pipeline sets, named as the offline planner names them: its
    steps' literal scalar inputs (width, height, steps, cfg, seed, format, …), ``count`` from a
    step's variations, ``model`` from a generation tool's family, ``scale`` for the 4x upscaler."""
    out: dict[str, Any] = {}
    for step in (pipeline.get("steps") or {}).values():
        if not isinstance(step, Mapping):
            continue
        for name, value in (step.get("inputs") or {}).items():
            if name in _NOT_PARAMS or isinstance(value, Mapping | list):
                continue
            out.setdefault(str(name), value)
        variations = step.get("variations")
        if isinstance(variations, Mapping) and isinstance(variations.get("count"), int):
            out.setdefault("count", variations["count"])
    for slug in chain:
        for prefix, family in _FAMILIES.items():
            if slug.startswith(prefix):
                out.setdefault("model", family)
        if slug == "upscale-4x":
            out.setdefault("scale", 4)
    return out
