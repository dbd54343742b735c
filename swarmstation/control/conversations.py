"""Conversations with the chat agent (issue 16): messages in, the planner's decision turned into
typed items out, plans run only when approved (or under the conversation's budget).

Theory of operation. A conversation is a tree of items (`store.models.ConversationItem`), each
with a parent and a `seq` that increases within the conversation (the SSE event id). A user
message hangs under `parent_id` (or the conversation's `leaf_id`, the end of the current
branch); the agent's reply items follow it as a chain, and the last one becomes the leaf. The
planner (`domain.agent.planner.decide`) sees only the branch: the media on it (attachments and
the outputs of the runs it started, newest last) and its latest plan, which an iteration edits.

A `Proposal` is checked and quoted exactly as `POST /v1/runs` would (`control.runs`) and becomes
a plan item in state `proposed`; approving it calls `runs.create_run` (one hold for the whole
plan) and moves it to `approved` with its run's id, under the conversation's row lock, so that
a retried or concurrent approval answers the same run and never holds or runs twice. Finished
runs become `result` (or `error`) items when the conversation is read or streamed
(`sync_runs`), so no extra loop is needed and a restarted control plane loses nothing.

Item bodies (`data`) are stored in their wire form; `item_dict` adds the common fields.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from swarmstation.control import agent_answers, agent_llm, idempotency, ledger, submission
from swarmstation.control import runs as runs_ops
from swarmstation.control.agent_answers import DEPOSIT_URL
from swarmstation.control.charging import ChargeSettings
from swarmstation.control.submission import MatcherSource, SubmissionLimits
from swarmstation.domain.agent.types import (
    Context,
    MediaRef,
    PriorPlan,
    Proposal,
    Question,
    Retriever,
)
from swarmstation.domain.errors import Conflict, InvalidInput, NotFound, SwarmError
from swarmstation.domain.pipelines import TERMINAL_RUN_STATES, RunState, StepState, pipeline_to_dict
from swarmstation.store.models import Conversation, ConversationItem, Output, Run, User

if TYPE_CHECKING:
    from swarmstation.config import Settings

log = logging.getLogger(__name__)

__all__ = [
    "DEPOSIT_URL",
    "ITEM_TYPES",
    "Approval",
    "Persona",
    "Reply",
    "approve",
    "create",
    "delete",
    "for_user",
    "item_dict",
    "items_after",
    "list_for_user",
    "post_message",
    "reject",
    "run_progress",
    "sync_runs",
    "update",
]

ITEM_TYPES = ("user_message", "agent_message", "plan", "approval", "run", "result", "error")
PROPOSED, APPROVED, REJECTED = "proposed", "approved", "rejected"
MAX_IMAGES = 8
_APPROVE_SCOPE = "conversations.approve"
_TERMINAL = frozenset(s.value for s in TERMINAL_RUN_STATES)
_SEED_LIMIT = 2**31  # a seed every tool input accepts
#: How many of the latest runs a stream reports the progress of.
_PROGRESS_RUNS = 5


class ConversationNotFound(NotFound):
    code = "conversation_not_found"


class PlanNotFound(NotFound):
    code = "plan_not_found"


class PlanDecided(Conflict):
    """The plan was already rejected (it cannot be approved) or approved (it cannot be rejected)."""

    code = "plan_decided"


@dataclass(frozen=True)
class Persona:
    """The agent as the operator configured it (`SWARMSTATION_AGENT_*`)."""

    name: str
    avatar_url: str | None
    greeting: str
    tone: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Persona:
        return cls(
            settings.agent_name, settings.agent_avatar_url, settings.agent_greeting, settings.agent_tone
        )


@dataclass(frozen=True)
class Reply:
    """The user's message as stored and the agent's reply items, in order."""

    message: ConversationItem
    items: list[ConversationItem]


@dataclass(frozen=True)
class Approval:
    """The run an approval started (or had started: `replayed`) and the items it added."""

    run_id: str
    items: list[ConversationItem]
    replayed: bool


# -- the conversation itself ---------------------------------------------------------------------


def create(
    s: Session,
    *,
    user: User,
    title: str,
    auto_approve_below: int | None,
    persona: Persona,
    now: datetime,
) -> Conversation:
    """A new conversation of `user`, opened by the persona's greeting (flushed)."""
    conv = Conversation(
        id=str(uuid.uuid4()),
        user_id=user.id,
        title=title.strip(),
        auto_approve_below=auto_approve_below,
        leaf_id=None,
        next_seq=1,
        deleted=False,
        created_at=now,
        updated_at=now,
    )
    s.add(conv)
    s.flush()
    greeting = _add(
        s, conv, "agent_message", {"text": persona.greeting, "kind": "greeting", "suggestions": []}, None, now
    )
    conv.leaf_id = greeting.id
    return conv


def for_user(s: Session, conversation_id: str, user: User, *, lock: bool = False) -> Conversation:
    """The user's conversation (someone else's, or a deleted one, is as unknown as a missing one)."""
    query = select(Conversation).where(Conversation.id == conversation_id)
    conv = s.scalar(query.with_for_update() if lock else query)
    if conv is None or conv.user_id != user.id or conv.deleted:
        raise ConversationNotFound(f"conversation {conversation_id} not found")
    return conv


def list_for_user(s: Session, user: User, *, limit: int) -> list[Conversation]:
    """The user's conversations, the most recently active first."""
    query = (
        select(Conversation)
        .where(Conversation.user_id == user.id, Conversation.deleted.is_(False))
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
        .limit(limit)
    )
    return list(s.scalars(query))


def update(s: Session, conv: Conversation, changes: Mapping[str, Any], now: datetime) -> None:
    """Rename it (`title`) or set its auto-approval budget (`auto_approve_below`, None: off)."""
    if "title" in changes:
        conv.title = str(changes["title"] or "").strip()
    if "auto_approve_below" in changes:
        conv.auto_approve_below = changes["auto_approve_below"]
    conv.updated_at = now


def delete(s: Session, conv: Conversation, now: datetime) -> None:
    """Hide the conversation (its runs and charges stay on record)."""
    conv.deleted = True
    conv.updated_at = now


# -- items ----------------------------------------------------------------------------------------


def _add(
    s: Session,
    conv: Conversation,
    type_: str,
    data: dict[str, Any],
    parent_id: str | None,
    now: datetime,
    *,
    state: str | None = None,
    run_id: str | None = None,
) -> ConversationItem:
    """Append an item (the caller holds the conversation's row lock, which orders `seq`)."""
    item = ConversationItem(
        id=str(uuid.uuid4()),
        conversation_id=conv.id,
        parent_id=parent_id,
        seq=conv.next_seq,
        type=type_,
        state=state,
        run_id=run_id,
        data=data,
        created_at=now,
    )
    conv.next_seq += 1
    conv.updated_at = now
    s.add(item)
    s.flush()  # in order: the next item may name this one as its parent
    return item


def item_dict(item: ConversationItem) -> dict[str, Any]:
    """The wire form of an item: `id`, `seq`, `type`, `parent_id`, `created_at`, then its body."""
    out: dict[str, Any] = {
        "id": item.id,
        "seq": item.seq,
        "type": item.type,
        "parent_id": item.parent_id,
        "created_at": item.created_at.isoformat(),
        **item.data,
    }
    if item.type == "plan":
        out["state"] = item.state
        out["run_id"] = item.run_id
    elif item.type == "run":
        out["state"] = item.state
    return out


def items_after(s: Session, conv: Conversation, after: int = 0) -> list[ConversationItem]:
    """The conversation's items with `seq` above `after`, in order."""
    query = (
        select(ConversationItem)
        .where(ConversationItem.conversation_id == conv.id, ConversationItem.seq > after)
        .order_by(ConversationItem.seq)
    )
    return list(s.scalars(query))


def _branch(items: Sequence[ConversationItem], leaf_id: str | None) -> list[ConversationItem]:
    """The items from the root down to `leaf_id`, in order."""
    by_id = {i.id: i for i in items}
    out: list[ConversationItem] = []
    at = by_id.get(leaf_id) if leaf_id else None
    while at is not None and len(out) <= len(items):
        out.append(at)
        at = by_id.get(at.parent_id) if at.parent_id else None
    return out[::-1]


# -- a message and the agent's reply --------------------------------------------------------------


def post_message(
    s: Session,
    *,
    conv: Conversation,
    user: User,
    text: str,
    images: Sequence[str],
    parent_id: str | None,
    settings: Settings,
    now: datetime,
    matchers: MatcherSource | None = None,
    retriever: Retriever | None = None,
) -> Reply:
    """Store the user's message under `parent_id` (None: the current leaf) and the agent's reply.
    The conversation must be locked. Raises InvalidInput (422) for an empty message, an image
    that is not the user's or a parent that is not in this conversation."""
    from swarmstation.control.agent_catalog import catalog_for_agent
    from swarmstation.domain.agent.planner import decide

    text = text.strip()
    if not text and not images:
        raise InvalidInput.at("text", "write a message or attach an image")
    if len(images) > MAX_IMAGES:
        raise InvalidInput.at("images", f"at most {MAX_IMAGES} images per message")
    for i, ref in enumerate(images):
        submission._resolve_images(s, user, {f"images.{i}": ref}, {})  # the user's own, or a 422
    sync_runs(s, conv, now)
    everything = items_after(s, conv)
    if parent_id is not None and all(i.id != parent_id for i in everything):
        raise InvalidInput.at("parent_id", f"no item {parent_id} in this conversation")
    branch = _branch(everything, parent_id or conv.leaf_id)
    message = _add(
        s,
        conv,
        "user_message",
        {"text": text, "images": list(images)},
        branch[-1].id if branch else None,
        now,
    )
    if not conv.title:
        conv.title = " ".join(text.split())[:60] or "Images"
    catalog = catalog_for_agent(s, settings)
    context = Context(
        catalog=catalog,
        media=_media(everything, branch, images),
        prior=_prior(branch),
        seed=secrets.randbelow(_SEED_LIMIT),
    )
    # the LLM mode (control/agent_llm.py): its plan or answer, or a note and the planner instead
    anchor, noted = message, list[ConversationItem]()
    llm_decision: Proposal | None = None
    if agent_llm.mode(settings) == "llm":
        turn = agent_llm.reply(
            s,
            user=user,
            text=text,
            images=images,
            context=context,
            branch=branch,
            settings=settings,
            now=now,
            matchers=matchers,
            retriever=retriever,
        )
        if isinstance(turn.decision, agent_llm.Answer):
            said = {**turn.decision.data, "text": turn.decision.text}
            answered = _add(s, conv, "agent_message", said, message.id, now)
            conv.leaf_id = answered.id
            return Reply(message, [answered])
        llm_decision = turn.decision
        if turn.note:
            note = {"text": turn.note, "kind": "fallback", "suggestions": []}
            anchor = _add(s, conv, "agent_message", note, message.id, now)
            noted = [anchor]
    try:
        decision = llm_decision or decide(text, context, retriever=retriever)
    except Exception:  # a planner bug must not lose the message or answer a 500
        log.exception("the planner failed on a message of conversation %s", conv.id)
        failed = {"message": "I could not understand that (the planner failed); try rephrasing it."}
        error = _add(
            s,
            conv,
            "error",
            {**failed, "code": "planner_failed", "errors": [], "plan_id": None, "run_id": None},
            anchor.id,
            now,
        )
        conv.leaf_id = error.id
        return Reply(message, [*noted, error])
    persona = Persona.from_settings(settings)
    if isinstance(decision, Proposal):
        replies = _propose(s, conv, user, decision, anchor, settings, now, matchers)
    elif isinstance(decision, Question):
        answer, data = agent_answers.answer(s, user, decision, catalog, branch, everything, settings)
        replies = [_add(s, conv, "agent_message", {**data, "text": answer}, anchor.id, now)]
    else:
        replies = [
            _add(
                s,
                conv,
                "agent_message",
                agent_answers.declined(decision, catalog, persona.tone),
                anchor.id,
                now,
            )
        ]
    conv.leaf_id = replies[-1].id
    return Reply(message, [*noted, *replies])


def _media(
    everything: Sequence[ConversationItem], branch: Sequence[ConversationItem], attached: Sequence[str]
) -> list[MediaRef]:
    """The images the user has on this branch, oldest first: earlier attachments and the
    outputs of the runs the branch started (finished after the branch moved on, too), then this
    message's attachments."""
    on_branch = {i.id for i in branch}
    runs = {i.run_id for i in branch if i.type == "run" and i.run_id}
    chosen = [i for i in everything if i.id in on_branch or (i.type == "result" and i.run_id in runs)]
    earlier: list[MediaRef] = []
    for item in sorted(chosen, key=lambda x: x.seq):
        if item.type == "user_message":
            earlier += [MediaRef(ref, "attachment") for ref in item.data.get("images", [])]
        elif item.type == "result":
            earlier += [
                MediaRef(o["ref"], "output")
                for o in item.data.get("outputs", [])
                if str(o.get("content_type", "")).startswith("image/")
            ]
    out: list[MediaRef] = []
    for media in earlier:
        if media.ref not in attached and all(m.ref != media.ref for m in out):
            out.append(media)
    out += [MediaRef(ref, "attachment") for ref in dict.fromkeys(attached)]
    return out


def _prior(branch: Sequence[ConversationItem]) -> PriorPlan | None:
    plans = [i for i in branch if i.type == "plan"]
    if not plans:
        return None
    latest = plans[-1].data
    return PriorPlan(pipeline=latest["pipeline"], chain=tuple(latest.get("chain", ())))


def _propose(
    s: Session,
    conv: Conversation,
    user: User,
    proposal: Proposal,
    message: ConversationItem,
    settings: Settings,
    now: datetime,
    matchers: MatcherSource | None,
) -> list[ConversationItem]:
    """A plan item with the pipeline engine's quote (or an error item with its 422 message), then
    the shortfall when the balance does not cover it, or the run when the budget does."""
    try:
        checked = runs_ops.check_pipeline(s, pipeline_dict=dict(proposal.pipeline), settings=settings)
        quoted = runs_ops.quote_pipeline(
            s,
            user=user,
            pipeline=checked.pipeline,
            inputs={},
            pricing=ChargeSettings.from_settings(settings),
            specs=checked.specs,
            rows=checked.rows,
            matchers=matchers,
            limits=SubmissionLimits.from_settings(settings),
            now=now,
        )
    except InvalidInput as exc:
        return [_add(s, conv, "error", _error_data(exc), message.id, now)]
    wire = pipeline_to_dict(checked.pipeline)
    available = ledger.balance(s, user.id).available
    shortfall = max(0, quoted.total - available) if quoted.charged else 0
    data = {
        "pipeline": wire,
        "steps": [
            {"id": sid, "tool": wire["steps"][sid]["tool"], "inputs": wire["steps"][sid].get("inputs", {})}
            for sid in checked.order
        ],
        "quote": {
            "total": quoted.total,
            "charged": quoted.charged,
            "steps": [
                {"step": x.step, "tool": x.tool, "items": x.items, "credits": x.credits} for x in quoted.steps
            ],
        },
        "explanation": proposal.explanation,
        "chain": list(proposal.chain),
        "params": dict(proposal.params),
        "intent": proposal.intent,
        "approvable": shortfall == 0,
        "balance": available,
        "shortfall": shortfall,
        "deposit_url": DEPOSIT_URL if shortfall else None,
    }
    plan = _add(s, conv, "plan", data, message.id, now, state=PROPOSED)
    if shortfall:
        text = (
            f"This plan costs up to {quoted.total} credits and you have {available} available: "
            f"{shortfall} more are needed. Deposit credits at {DEPOSIT_URL}, then approve it."
        )
        note = {"text": text, "kind": "shortfall", "suggestions": [], "shortfall": shortfall}
        return [plan, _add(s, conv, "agent_message", note, plan.id, now)]
    budget = conv.auto_approve_below
    if budget is not None and quoted.total < budget:
        try:
            with s.begin_nested():
                _run, started = _start(s, conv, user, plan, settings, now, matchers, auto=True)
        except SwarmError as exc:
            return [plan, _add(s, conv, "error", _error_data(exc, plan_id=plan.id), plan.id, now)]
        return [plan, *started]
    return [plan]


def _error_data(exc: SwarmError, *, plan_id: str | None = None, run_id: str | None = None) -> dict[str, Any]:
    errors = [{"field": e.field, "reason": e.reason} for e in getattr(exc, "errors", ())]
    return {"message": exc.detail, "code": exc.code, "errors": errors, "plan_id": plan_id, "run_id": run_id}


# -- approvals ---------------------------------------------------------------------------------


def _plan(s: Session, conv: Conversation, plan_id: str) -> ConversationItem:
    item = s.get(ConversationItem, plan_id, populate_existing=True)
    if item is None or item.conversation_id != conv.id or item.type != "plan":
        raise PlanNotFound(f"plan {plan_id} not found in conversation {conv.id}")
    return item


def _start(
    s: Session,
    conv: Conversation,
    user: User,
    plan: ConversationItem,
    settings: Settings,
    now: datetime,
    matchers: MatcherSource | None,
    *,
    auto: bool,
) -> tuple[Run, list[ConversationItem]]:
    """Run the plan's pipeline (one hold for the whole of it: 402 when the credits do not cover
    it) and record the approval and the run."""
    run = runs_ops.create_run(
        s,
        user=user,
        pipeline_dict=plan.data["pipeline"],
        inputs={},
        saved=None,
        settings=settings,
        now=now,
        matchers=matchers,
    )
    plan.state, plan.run_id = APPROVED, run.id
    decided = {"plan_id": plan.id, "decision": APPROVED, "auto": auto, "run_id": run.id}
    approval = _add(s, conv, "approval", decided, plan.id, now)
    started = _add(
        s,
        conv,
        "run",
        {"plan_id": plan.id, "run_id": run.id},
        approval.id,
        now,
        state=run.state.value,
        run_id=run.id,
    )
    conv.leaf_id = started.id
    return run, [approval, started]


def approve(
    s: Session,
    *,
    conv: Conversation,
    user: User,
    plan_id: str,
    idempotency_key: str | None,
    settings: Settings,
    now: datetime,
    matchers: MatcherSource | None = None,
) -> Approval:
    """Approve a proposed plan: its run starts. The conversation must be locked. A plan already
    approved answers its run (whatever the key), so a retry never runs or charges twice; the
    same `idempotency_key` answers the run it started. Raises PlanNotFound (404), PlanDecided
    (409) for a rejected plan, InsufficientCredits (402), and what `create_run` raises."""
    plan = _plan(s, conv, plan_id)
    claimed = None
    if idempotency_key is not None:
        found = idempotency.claim(
            s,
            user_id=user.id,
            scope=_APPROVE_SCOPE,
            key=idempotency_key,
            digest=idempotency.request_hash({"conversation_id": conv.id, "plan_id": plan_id}),
            now=now,
            keep=timedelta(hours=settings.idempotency_key_hours),
        )
        if isinstance(found, idempotency.Replay) and found.run_id is not None:
            return Approval(found.run_id, [], replayed=True)
        claimed = found if not isinstance(found, idempotency.Replay) else None
    if plan.state == APPROVED:
        if plan.run_id is None:
            raise PlanDecided(f"plan {plan_id} was approved, and its run no longer exists")
        if claimed is not None:
            claimed.run_id = plan.run_id
        return Approval(plan.run_id, [], replayed=True)
    if plan.state == REJECTED:
        raise PlanDecided(f"plan {plan_id} was rejected: ask for a new one")
    run, added = _start(s, conv, user, plan, settings, now, matchers, auto=False)
    if claimed is not None:
        claimed.run_id = run.id
    return Approval(run.id, added, replayed=False)


def reject(s: Session, *, conv: Conversation, plan_id: str, now: datetime) -> list[ConversationItem]:
    """Decline a proposed plan (nothing runs). Rejecting it again adds nothing; rejecting an
    approved plan is a PlanDecided (409: cancel its run instead)."""
    plan = _plan(s, conv, plan_id)
    if plan.state == REJECTED:
        return []
    if plan.state == APPROVED:
        raise PlanDecided(f"plan {plan_id} was approved: cancel its run {plan.run_id} instead")
    plan.state = REJECTED
    decided = {"plan_id": plan.id, "decision": REJECTED, "auto": False, "run_id": None}
    item = _add(s, conv, "approval", decided, plan.id, now)
    text = "All right, nothing will run. Tell me what to change, or ask for something else."
    note = _add(s, conv, "agent_message", {"text": text, "kind": "answer", "suggestions": []}, item.id, now)
    if conv.leaf_id == plan.id:
        conv.leaf_id = note.id
    return [item, note]


# -- runs into items -------------------------------------------------------------------------------


def sync_runs(s: Session, conv: Conversation, now: datetime) -> list[ConversationItem]:
    """Bring the conversation's run items up to their runs' states; a run that finished adds its
    `result` item (outputs and values) or an `error` item. Locks the conversation when there is
    something to write; returns the items it added."""
    query = select(ConversationItem, Run).join(Run, Run.id == ConversationItem.run_id)
    query = query.where(
        ConversationItem.conversation_id == conv.id,
        ConversationItem.type == "run",
        ConversationItem.state.not_in(sorted(_TERMINAL)),
    )
    stale = [(item, run) for item, run in s.execute(query) if item.state != run.state.value]
    if not stale:
        return []
    s.scalar(select(Conversation).where(Conversation.id == conv.id).with_for_update())
    added = []
    for item, run in stale:
        s.refresh(item)
        if item.state == run.state.value or item.state in _TERMINAL:
            continue  # another request synced it first
        item.state = run.state.value
        if run.state in TERMINAL_RUN_STATES:
            added.append(_finished(s, conv, item, run, now))
    return added


def _finished(
    s: Session, conv: Conversation, item: ConversationItem, run: Run, now: datetime
) -> ConversationItem:
    plan_id = item.data.get("plan_id")
    if run.state == RunState.COMPLETED:
        outputs, values = _run_outputs(s, run)
        data = {"plan_id": plan_id, "run_id": run.id, "outputs": outputs, "values": values}
        done = _add(s, conv, "result", data, item.id, now, run_id=run.id)
    else:
        word = "failed" if run.state == RunState.FAILED else "was cancelled"
        data = {
            "message": f"the run {word}: {run.error}" if run.error else f"the run {word}",
            "code": f"run_{run.state.value.lower()}",
            "errors": [],
            "plan_id": plan_id,
            "run_id": run.id,
        }
        done = _add(s, conv, "error", data, item.id, now, run_id=run.id)
    if conv.leaf_id == item.id:
        conv.leaf_id = done.id
    return done


def _run_outputs(s: Session, run: Run) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A finished run's files ({step, port, ref, url, content_type}) and values ({step: {port: v}})."""
    files: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    prefix = submission.OUTPUT_REF_PREFIX
    for step, ports in runs_ops.run_result(s, run).items():
        for port, value in ports.items():
            refs = value if isinstance(value, list) else [value]
            if refs and all(isinstance(r, str) and r.startswith(prefix) for r in refs):
                for ref in refs:
                    row = s.get(Output, ref.removeprefix(prefix))
                    if row is not None:
                        files.append(
                            {
                                "step": step,
                                "port": port,
                                "ref": ref,
                                "url": f"/v1/jobs/{row.job_id}/outputs/{row.id}",
                                "content_type": row.content_type,
                            }
                        )
            else:
                values.setdefault(step, {})[port] = value
    return files, values


def run_progress(s: Session, conv: Conversation, *, also: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The progress of the conversation's unfinished runs (the latest few) and of the runs in
    `also` (those that just finished): {run_id, plan_id, state, steps: [{id, tool, state,
    progress}]}, a step's progress the mean of its jobs' (this attempt)."""
    query = (
        select(ConversationItem)
        .where(
            ConversationItem.conversation_id == conv.id,
            ConversationItem.type == "run",
            ConversationItem.state.not_in(sorted(_TERMINAL)) | ConversationItem.run_id.in_(list(also)),
        )
        .order_by(ConversationItem.seq.desc())
        .limit(_PROGRESS_RUNS)
    )
    out = []
    for item in reversed(list(s.scalars(query))):
        run = s.get(Run, item.run_id) if item.run_id else None
        if run is None:
            continue
        jobs = runs_ops.run_jobs(s, run, attempt=run.attempt)
        steps = []
        for rs in runs_ops.run_steps(s, run):
            mine = [j.progress for j in jobs if j.run_step == rs.step_id]
            progress = 1.0 if rs.state == StepState.COMPLETED else (sum(mine) / len(mine) if mine else 0.0)
            steps.append(
                {"id": rs.step_id, "tool": rs.tool_slug, "state": rs.state.value, "progress": progress}
            )
        out.append(
            {"run_id": run.id, "plan_id": item.data.get("plan_id"), "state": run.state.value, "steps": steps}
        )
    return out
