"""Conversations with the chat agent (control/conversations.py) and its persona.

Items are typed by `type` (user_message, agent_message, plan, approval, run, result, error), each
with `id`, `seq` (increasing within the conversation; the SSE event id), `parent_id` and
`created_at`. Nothing is spent without `POST …/plans/{plan_id}/approve`, except a plan whose
quote is below the conversation's `auto_approve_below` (set with PATCH; off by default).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from swarmstation.api.deps import DB, CurrentUser, State
from swarmstation.api.runs import IdempotencyKeyHeader
from swarmstation.api.schemas import INT64_MAX, Strict
from swarmstation.api.sse import Frame, event_stream
from swarmstation.control import conversations as convs
from swarmstation.control.notify import user_runs_key
from swarmstation.store.models import Conversation, ConversationItem, User

router = APIRouter(prefix="/v1", tags=["conversations"])

Id = Annotated[str, Path(min_length=1, max_length=36)]
Credits = Annotated[int, Field(ge=0, le=INT64_MAX)]


# -- what the API receives -------------------------------------------------------------------------
class ConversationCreate(Strict):
    title: str = Field(default="", max_length=200, description="Empty: named after the first message")
    auto_approve_below: Credits | None = Field(
        default=None, description="Run plans quoted below this many credits without asking (None: off)"
    )


class ConversationPatch(Strict):
    """Only the fields given change; `auto_approve_below: null` turns auto-approval off."""

    title: str | None = Field(default=None, max_length=200)
    auto_approve_below: Credits | None = None


class MessageCreate(Strict):
    text: str = Field(default="", max_length=4000, description="What the user says")
    images: list[Annotated[str, Field(min_length=1, max_length=80)]] = Field(
        default_factory=list,
        max_length=convs.MAX_IMAGES,
        description="Attached images: upload refs ('upload:<id>' from POST /v1/uploads) or output refs",
    )
    parent_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=36,
        description="The earlier item to answer (branching); absent: the end of the current branch",
    )


# -- what the API answers --------------------------------------------------------------------------
class ItemBase(BaseModel):
    id: str
    seq: int = Field(description="Increasing within the conversation; the SSE event id")
    parent_id: str | None
    created_at: datetime


class Suggestion(BaseModel):
    slug: str
    name: str
    description: str
    category: str


class UserMessageItem(ItemBase):
    type: Literal["user_message"]
    text: str
    images: list[str]


class AgentMessageItem(ItemBase):
    type: Literal["agent_message"]
    text: str
    kind: str = Field(description="greeting, answer (to a question), abstain (declined) or shortfall")
    suggestions: list[Suggestion] = Field(description="Tools the platform offers instead, when declining")
    question: str | None = Field(
        None, description="An answer's question: price, balance, tool, run, capabilities"
    )
    balance: int | None = None
    held: int | None = None
    price: int | None = None
    shortfall: int | None = None
    tool: str | None = None
    plan_id: str | None = None
    run_id: str | None = None
    state: str | None = None
    error: str | None = None
    deposit_url: str | None = None


class PlanStep(BaseModel):
    id: str
    tool: str
    inputs: dict[str, Any]


class PlanStepQuote(BaseModel):
    step: str
    tool: str
    items: int
    credits: int


class PlanQuote(BaseModel):
    total: int = Field(description="The most the plan can cost, in credits: what approving it holds")
    charged: bool
    steps: list[PlanStepQuote]


class PlanItem(ItemBase):
    type: Literal["plan"]
    pipeline: dict[str, Any] = Field(description="The plan as a pipeline (the wire form of POST /v1/runs)")
    steps: list[PlanStep] = Field(description="In the order they run")
    quote: PlanQuote
    explanation: str
    chain: list[str]
    params: dict[str, Any] = Field(description="What the request stated (size, count, seed, ...)")
    intent: str
    state: Literal["proposed", "approved", "rejected"]
    run_id: str | None
    approvable: bool = Field(description="False when the balance does not cover the quote")
    balance: int = Field(description="The credits available when it was proposed")
    shortfall: int = Field(description="How many more credits the plan needs (0: none)")
    deposit_url: str | None = Field(description="Where to deposit, when there is a shortfall")


class ApprovalItem(ItemBase):
    type: Literal["approval"]
    plan_id: str
    decision: Literal["approved", "rejected"]
    auto: bool = Field(description="Approved by the conversation's auto_approve_below budget")
    run_id: str | None


class RunItem(ItemBase):
    type: Literal["run"]
    plan_id: str
    run_id: str
    state: str = Field(description="The run's state when last seen (GET /v1/runs/{run_id} for details)")


class ResultOutput(BaseModel):
    step: str
    port: str
    ref: str = Field(description="An output ref ('output:<id>') a later step or message can use")
    url: str
    content_type: str


class ResultItem(ItemBase):
    type: Literal["result"]
    plan_id: str
    run_id: str
    outputs: list[ResultOutput]
    values: dict[str, Any] = Field(description="Value outputs by step and port (text, numbers)")


class FieldErrorOut(BaseModel):
    field: str
    reason: str


class ErrorItem(ItemBase):
    type: Literal["error"]
    message: str
    code: str
    errors: list[FieldErrorOut]
    plan_id: str | None
    run_id: str | None


Item = Annotated[
    UserMessageItem | AgentMessageItem | PlanItem | ApprovalItem | RunItem | ResultItem | ErrorItem,
    Field(discriminator="type"),
]


class ConversationSummary(BaseModel):
    id: str
    title: str
    auto_approve_below: int | None
    leaf_id: str | None = Field(description="The end of the current branch")
    created_at: datetime
    updated_at: datetime


class ConversationOut(ConversationSummary):
    items: list[Item] = Field(description="Every item of every branch, by seq")


class ConversationList(BaseModel):
    conversations: list[ConversationSummary]


class ConversationCreated(BaseModel):
    id: str
    items: list[Item] = Field(description="The greeting")


class ReplyOut(BaseModel):
    message: UserMessageItem
    items: list[Item] = Field(description="The agent's reply, in order")


class ApprovalOut(BaseModel):
    run_id: str
    items: list[Item] = Field(description="The approval and run items it added (none on a retry)")


class DecisionOut(BaseModel):
    items: list[Item]


class PersonaOut(BaseModel):
    name: str
    avatar_url: str | None
    greeting: str
    tone: str


def _summary(conv: Conversation) -> ConversationSummary:
    return ConversationSummary(
        id=conv.id,
        title=conv.title,
        auto_approve_below=conv.auto_approve_below,
        leaf_id=conv.leaf_id,
        created_at=conv.created_at,
        updated_at=conv.updated_at,
    )


def _items(rows: list[ConversationItem]) -> list[Any]:
    return [convs.item_dict(r) for r in rows]


def _me(s: DB, user: User) -> User:
    me = s.get(User, user.id)
    assert me is not None  # authenticated just now
    return me


# -- the endpoints ---------------------------------------------------------------------------------
@router.get("/agent/persona", response_model=PersonaOut, tags=["public"])
def persona(state: State) -> PersonaOut:
    """The chat agent's name, avatar, greeting and tone (SWARMSTATION_AGENT_*)."""
    p = convs.Persona.from_settings(state.settings)
    return PersonaOut(name=p.name, avatar_url=p.avatar_url, greeting=p.greeting, tone=p.tone)


@router.post("/conversations", response_model=ConversationCreated, status_code=201)
def create_conversation(
    s: DB, user: CurrentUser, state: State, body: ConversationCreate | None = None
) -> ConversationCreated:
    """A new conversation, opened by the agent's greeting."""
    body = body or ConversationCreate()
    conv = convs.create(
        s,
        user=_me(s, user),
        title=body.title,
        auto_approve_below=body.auto_approve_below,
        persona=convs.Persona.from_settings(state.settings),
        now=state.clock(),
    )
    s.flush()
    return ConversationCreated(id=conv.id, items=_items(convs.items_after(s, conv)))


@router.get("/conversations", response_model=ConversationList)
def list_conversations(
    s: DB, user: CurrentUser, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> ConversationList:
    """The user's conversations, the most recently active first."""
    return ConversationList(conversations=[_summary(c) for c in convs.list_for_user(s, user, limit=limit)])


@router.get("/conversations/{conversation_id}", response_model=ConversationOut)
def get_conversation(conversation_id: Id, s: DB, user: CurrentUser, state: State) -> ConversationOut:
    """The whole conversation: every item of every branch with its parent, and the current leaf.
    Runs that finished since the last read add their result (or error) items first."""
    conv = convs.for_user(s, conversation_id, user)
    if convs.sync_runs(s, conv, state.clock()):
        state.notifier.wake(f"conversation:{conv.id}")
    out = ConversationOut(**_summary(conv).model_dump(), items=_items(convs.items_after(s, conv)))
    return out


@router.patch("/conversations/{conversation_id}", response_model=ConversationSummary)
def patch_conversation(
    conversation_id: Id, body: ConversationPatch, s: DB, user: CurrentUser, state: State
) -> ConversationSummary:
    """Rename it (`title`) or set its auto-approval budget (`auto_approve_below`: plans quoted
    below that many credits run without asking; null turns it off)."""
    conv = convs.for_user(s, conversation_id, user, lock=True)
    convs.update(s, conv, {k: getattr(body, k) for k in body.model_fields_set}, state.clock())
    return _summary(conv)


@router.delete("/conversations/{conversation_id}", status_code=204)
def delete_conversation(conversation_id: Id, s: DB, user: CurrentUser, state: State) -> Response:
    """Delete the conversation (its runs and their charges stay in the history)."""
    conv = convs.for_user(s, conversation_id, user, lock=True)
    convs.delete(s, conv, state.clock())
    return Response(status_code=204)


@router.post("/conversations/{conversation_id}/messages", response_model=ReplyOut)
def post_message(
    conversation_id: Id, body: MessageCreate, s: DB, user: CurrentUser, state: State
) -> ReplyOut:
    """Say something (text, attached images, optionally under an earlier item to branch); the
    answer is the agent's reply: a plan with its price, an answer, or a polite refusal."""
    conv = convs.for_user(s, conversation_id, user, lock=True)
    reply = convs.post_message(
        s,
        conv=conv,
        user=_me(s, user),
        text=body.text,
        images=body.images,
        parent_id=body.parent_id,
        settings=state.settings,
        now=state.clock(),
        matchers=state.matchers,
    )
    out = ReplyOut(
        message=UserMessageItem.model_validate(convs.item_dict(reply.message)), items=_items(reply.items)
    )
    s.commit()
    state.notifier.wake(f"conversation:{conv.id}")
    if any(i.type == "run" for i in reply.items):
        state.loops.poke()  # an auto-approved plan's first jobs are queued
    return out


@router.post("/conversations/{conversation_id}/plans/{plan_id}/approve", response_model=ApprovalOut)
def approve_plan(
    conversation_id: Id,
    plan_id: Id,
    s: DB,
    user: CurrentUser,
    state: State,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> ApprovalOut:
    """Run the plan: one hold of its quote (402 when the credits do not cover it), its steps
    queued. Approving it again, with the same Idempotency-Key or none, answers the same run."""
    conv = convs.for_user(s, conversation_id, user, lock=True)
    done = convs.approve(
        s,
        conv=conv,
        user=_me(s, user),
        plan_id=plan_id,
        idempotency_key=idempotency_key,
        settings=state.settings,
        now=state.clock(),
        matchers=state.matchers,
    )
    out = ApprovalOut(run_id=done.run_id, items=_items(done.items))
    s.commit()
    if done.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        state.loops.poke()
        state.notifier.wake(f"run:{done.run_id}")
        state.notifier.wake(f"conversation:{conv.id}")
    return out


@router.post("/conversations/{conversation_id}/plans/{plan_id}/reject", response_model=DecisionOut)
def reject_plan(conversation_id: Id, plan_id: Id, s: DB, user: CurrentUser, state: State) -> DecisionOut:
    """Decline the plan: nothing runs (409 when it was approved: cancel its run instead)."""
    conv = convs.for_user(s, conversation_id, user, lock=True)
    added = convs.reject(s, conv=conv, plan_id=plan_id, now=state.clock())
    out = DecisionOut(items=_items(added))
    s.commit()
    state.notifier.wake(f"conversation:{conv.id}")
    return out


@router.get("/conversations/{conversation_id}/events", response_class=StreamingResponse)
async def conversation_events(
    conversation_id: Id,
    request: Request,
    user: CurrentUser,
    state: State,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0, le=INT64_MAX)] = None,
) -> StreamingResponse:
    """Server-sent events: `item` (an item as GET returns it, its `seq` the event id) for each
    new item, and `run` ({run_id, plan_id, state, steps: [{id, tool, state, progress}]}) when a
    run the conversation started progresses (its id: the seq of the last item sent before it). Reconnect with
    `Last-Event-ID` to resume after that item. The stream stays open."""
    sent: dict[str, str] = {}

    def read(after: int) -> tuple[list[Frame], int | None]:
        with state.sessions() as s, s.begin():
            conv = convs.for_user(s, conversation_id, user)
            finished = [i.run_id for i in convs.sync_runs(s, conv, state.clock()) if i.run_id]
            # progress first (its id: the last item the client has), then the new items
            frames = []
            for progress in convs.run_progress(s, conv, also=finished):
                signature = json.dumps(progress, sort_keys=True)
                if sent.get(progress["run_id"]) != signature:
                    sent[progress["run_id"]] = signature
                    frames.append(Frame(after, "run", progress))
            frames += [Frame(i.seq, "item", convs.item_dict(i)) for i in convs.items_after(s, conv, after)]
            return frames, None

    return await event_stream(
        request,
        state.notifier,
        (f"conversation:{conversation_id}", user_runs_key(user.id)),
        read,
        after=last_event_id or 0,
        what=f"conversation {conversation_id}",
    )
