"""What the agent's planner takes and returns: the contract between the pure planner
(``swarmstation.domain.agent``), the conversations use case (``swarmstation.control.conversations``)
and the evaluation (``swarmstation eval-agent``).

The planner is pure: a snapshot of the catalog and of the conversation's state in, one
:data:`Decision` out. Prices, balances and runs are looked up by the caller, which turns a
:class:`Proposal` into a plan item with the pipeline engine's quote, and a :class:`Question` into
an answer from the API's own data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from swarmstation.domain.tools.spec import ToolSpec


@dataclass(frozen=True)
class CatalogTool:
    """A tool as the planner sees it: its spec, whether it can run now, and example requests."""

    spec: ToolSpec
    available: bool = True
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class MediaRef:
    """An image the user has: attached to this message (``source="attachment"``) or produced
    earlier in the conversation (``source="output"``), newest last. ``ref`` is what a pipeline
    input takes (an upload ref or an output ref)."""

    ref: str
    source: Literal["attachment", "output"]
    kind: str = "image"


@dataclass(frozen=True)
class PriorPlan:
    """The conversation's latest plan, which an iteration ("more vibrant") edits."""

    pipeline: Mapping[str, Any]
    chain: tuple[str, ...]


@dataclass(frozen=True)
class Context:
    """Everything the planner may know about one turn."""

    catalog: Sequence[CatalogTool]
    media: Sequence[MediaRef] = ()
    prior: PriorPlan | None = None
    #: A seed the caller drew for this turn (the planner never draws randomness itself).
    seed: int = 0


@dataclass(frozen=True)
class Proposal:
    """A plan: a pipeline in the wire shape of ``POST /v1/runs`` (``inputs`` and ``steps``, every
    input a literal, ``{"input": NAME}`` or ``{"from": STEP, "output": PORT}``), the tool chain
    in step order, the parameters the text stated, and why."""

    pipeline: Mapping[str, Any]
    chain: tuple[str, ...]
    params: Mapping[str, Any]
    explanation: str
    intent: Literal["create", "transform", "chain", "iterate"] = "create"


@dataclass(frozen=True)
class Question:
    """A question the caller answers from the API's data: ``price`` (of ``tool`` or of the prior
    plan), ``balance``, ``tool`` (what a tool does), ``run`` (what happened to the last run),
    ``capabilities`` (what the platform can do)."""

    kind: Literal["price", "balance", "tool", "run", "capabilities"]
    tool: str | None = None


@dataclass(frozen=True)
class Abstain:
    """No tool serves the request: why, and what the platform can do instead (tool slugs)."""

    reason: str
    suggestions: tuple[str, ...] = ()


Decision = Proposal | Question | Abstain


@dataclass(frozen=True)
class Ranked:
    slug: str
    score: float


class Retriever(Protocol):
    """Ranks catalog tools for a request, best first. The lexical retriever is pure and lives in
    ``domain/agent``; a dense (embedding) retriever does I/O to load its model and lives outside."""

    def rank(self, query: str, catalog: Sequence[CatalogTool], *, limit: int = 5) -> list[Ranked]: ...


@dataclass(frozen=True)
class Timing:
    """Filled by callers that measure (the evaluation); the planner never reads a clock."""

    ms: float = 0.0
    extra: Mapping[str, float] = field(default_factory=dict)
