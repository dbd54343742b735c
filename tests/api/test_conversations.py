"""Conversations with the chat agent over HTTP (api/conversations.py, control/conversations.py), on
SQLite and PostgreSQL: the fox story from a request to its result and iterations, money safety
(no run without an approval, a retried approval runs and charges once, a shortfall shown instead
of a run), ownership, branching, auto-approval and the resumable event stream. Step jobs are
completed by hand, as a worker would, and the runner is driven by `runs.advance_all`."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.control import jobs as jobs_ops
from swarmstation.control import ledger, runs
from swarmstation.domain.prices import PriceKind, PriceModel
from swarmstation.domain.states import TERMINAL_JOB_STATES, JobState
from swarmstation.store.db import transaction
from swarmstation.store.models import Hold, Job, LedgerEntry, Output, Run, Tool
from tests.conftest import FakeClock
from tests.control.test_runs import fail, price, start
from tests.helpers import add_user

GEN_PRICE, BIG_PRICE = 100, 20
FOX = "a watercolor fox in the snow, then make it 4x bigger"


@pytest.fixture
def plane(settings: Settings, clock: FakeClock) -> Iterator[ControlPlane]:
    slow = settings.model_copy(
        update={"scheduler_interval_seconds": 60, "control_interval_seconds": 60, "run_interval_seconds": 60}
    )
    cp = build(slow, provider=None, clock=clock)
    with transaction(cp.state.sessions) as s:
        for tool in s.scalars(select(Tool)):
            if tool.spec.get("category") in ("text-to-image", "image-to-image"):
                price(s, clock, tool.slug, PriceModel(PriceKind.PER_RUN, GEN_PRICE))
        price(s, clock, "upscale-4x", PriceModel(PriceKind.PER_RUN, BIG_PRICE))
    yield cp
    cp.state.engine.dispose()


def user(plane: ControlPlane, clock: FakeClock, credits: int = 1000) -> tuple[str, dict[str, str]]:
    with transaction(plane.state.sessions) as s:
        u, key = add_user(s, clock())
        if credits:
            ledger.grant(
                s, user_id=u.id, amount=credits, reason="t", actor_id=None, key=f"g:{u.id}", now=clock()
            )
        return u.id, {"Authorization": f"Bearer {key}"}


def balance(plane: ControlPlane, user_id: str) -> ledger.Balance:
    with transaction(plane.state.sessions) as s:
        return ledger.balance(s, user_id)


def count(plane: ControlPlane, model: Any) -> int:
    with transaction(plane.state.sessions) as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def problem(r: Any) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    return body.get("error", body) if isinstance(body.get("error"), dict) else body


def new(api: TestClient, headers: dict[str, str], **body: Any) -> str:
    r = api.post("/v1/conversations", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def say(api: TestClient, cid: str, headers: dict[str, str], text: str, **extra: Any) -> dict[str, Any]:
    r = api.post(f"/v1/conversations/{cid}/messages", json={"text": text, **extra}, headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def plan_of(reply: dict[str, Any]) -> dict[str, Any]:
    plans = [i for i in reply["items"] if i["type"] == "plan"]
    assert plans, reply
    return plans[0]


def prompt_of(plan: dict[str, Any]) -> str:
    """The prompt the plan's first step generates from (a literal or a pipeline input's default)."""
    first = plan["pipeline"]["steps"][plan["steps"][0]["id"]]
    value = first["inputs"].get("prompt")
    if isinstance(value, dict) and "input" in value:
        value = plan["pipeline"]["inputs"][value["input"]].get("default")
    return str(value)


def finish(plane: ControlPlane, clock: FakeClock, run_id: str) -> None:
    """Complete the run's jobs step by step, each with one image on its tool's output node."""
    for _ in range(10):
        with transaction(plane.state.sessions) as s:
            run = s.get(Run, run_id)
            assert run is not None
            if run.state.value in ("COMPLETED", "FAILED", "CANCELLED"):
                return
            pending = list(
                s.scalars(
                    select(Job.id).where(Job.run_id == run_id, Job.state.not_in(list(TERMINAL_JOB_STATES)))
                )
            )
        for job_id in pending:
            complete(plane, clock, job_id)
        runs.advance_all(plane.state.sessions, plane.state.settings, clock)
    raise AssertionError("the run did not finish")


def complete(plane: ControlPlane, clock: FakeClock, job_id: str) -> None:
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        queued = job.state == JobState.QUEUED
    if queued:
        start(plane, clock, job_id)
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        tool = s.get(Tool, job.tool_slug)
        assert tool is not None
        node = next(
            (o.get("node_id") or o["name"] for o in tool.spec.get("outputs", []) if o["type"] == "image"),
            "image",
        )
        s.add(
            Output(
                id=str(uuid.uuid4()),
                job_id=job.id,
                key=f"outputs/{job.id}/{node}.png",
                filename=f"{node}.png",
                content_type="image/png",
                size=10,
                node_id=node,
                uploaded=True,
                created_at=clock(),
            )
        )
        s.flush()
        jobs_ops.complete_job(s, job, timings={"run_seconds": 2.0}, now=clock())


def conversation(api: TestClient, cid: str, headers: dict[str, str]) -> dict[str, Any]:
    r = api.get(f"/v1/conversations/{cid}", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# -- the story ----------------------------------------------------------------------------------


def test_the_fox_story_from_a_request_to_its_result_and_iterations(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    alice_id, alice = user(plane, clock)
    created = api.post("/v1/conversations", json={}, headers=alice).json()
    [greeting] = created["items"]
    persona = api.get("/v1/agent/persona").json()
    assert greeting["type"] == "agent_message" and greeting["kind"] == "greeting"
    assert greeting["text"] == persona["greeting"] and persona["name"]
    cid = created["id"]

    reply = say(api, cid, alice, FOX)
    assert reply["message"]["type"] == "user_message" and reply["message"]["text"] == FOX
    plan = plan_of(reply)
    gen, big = plan["steps"][0]["tool"], plan["steps"][-1]["tool"]
    assert "txt2img" in gen and big == "upscale-4x" and len(plan["steps"]) == 2
    assert plan["quote"]["total"] == GEN_PRICE + BIG_PRICE and plan["state"] == "proposed"
    assert plan["approvable"] is True and plan["shortfall"] == 0 and plan["run_id"] is None
    assert "fox" in prompt_of(plan) and plan["explanation"]
    # nothing runs, nothing is held, until it is approved
    assert count(plane, Run) == 0 and balance(plane, alice_id).held == 0

    r = api.post(f"/v1/conversations/{cid}/plans/{plan['id']}/approve", headers=alice)
    assert r.status_code == 200, r.text
    run_id = r.json()["run_id"]
    assert [i["type"] for i in r.json()["items"]] == ["approval", "run"]
    assert balance(plane, alice_id).held == GEN_PRICE + BIG_PRICE

    finish(plane, clock, run_id)
    whole = conversation(api, cid, alice)
    [result] = [i for i in whole["items"] if i["type"] == "result"]
    assert result["run_id"] == run_id and result["plan_id"] == plan["id"]
    [image] = result["outputs"]
    assert image["step"] == plan["steps"][-1]["id"] and image["ref"].startswith("output:")
    assert image["url"].startswith("/v1/jobs/") and image["content_type"] == "image/png"
    assert whole["leaf_id"] == result["id"]
    assert balance(plane, alice_id) == ledger.Balance(1000 - 120, 0, 1000 - 120)
    approved = next(i for i in whole["items"] if i["id"] == plan["id"])
    assert (approved["state"], approved["run_id"]) == ("approved", run_id)

    vivid = plan_of(say(api, cid, alice, "more vibrant"))
    assert vivid["id"] != plan["id"] and vivid["state"] == "proposed"
    assert "vibrant" in prompt_of(vivid) and "fox" in prompt_of(vivid)
    assert vivid["steps"][0]["tool"] == gen

    song = say(api, cid, alice, "make a song about it")
    [declined] = song["items"]
    assert declined["type"] == "agent_message" and declined["kind"] == "abstain"
    assert declined["suggestions"] and "can" in declined["text"]
    assert count(plane, Run) == 1


# -- money ------------------------------------------------------------------------------------------


def test_nothing_runs_without_an_approval_and_a_rejected_plan_cannot_be_approved(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    alice_id, alice = user(plane, clock)
    cid = new(api, alice)
    plan = plan_of(say(api, cid, alice, FOX))
    conversation(api, cid, alice)
    assert count(plane, Run) == 0 and count(plane, Job) == 0 and count(plane, Hold) == 0
    r = api.post(f"/v1/conversations/{cid}/plans/{plan['id']}/reject", headers=alice)
    assert r.status_code == 200 and r.json()["items"][0]["decision"] == "rejected"
    again = api.post(f"/v1/conversations/{cid}/plans/{plan['id']}/reject", headers=alice)
    assert again.status_code == 200 and again.json()["items"] == []
    r = api.post(f"/v1/conversations/{cid}/plans/{plan['id']}/approve", headers=alice)
    assert r.status_code == 409 and problem(r)["code"] == "plan_decided"
    assert count(plane, Run) == 0 and balance(plane, alice_id).held == 0
    r = api.post(f"/v1/conversations/{cid}/plans/{uuid.uuid4()}/approve", headers=alice)
    assert r.status_code == 404


def test_a_retried_approval_runs_and_charges_once(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    alice_id, alice = user(plane, clock)
    cid = new(api, alice)
    plan = plan_of(say(api, cid, alice, FOX))
    url = f"/v1/conversations/{cid}/plans/{plan['id']}/approve"
    first = api.post(url, headers={**alice, "Idempotency-Key": "k-1"})
    assert first.status_code == 200, first.text
    run_id = first.json()["run_id"]
    for extra in ({"Idempotency-Key": "k-1"}, {}, {"Idempotency-Key": "k-2"}):
        retry = api.post(url, headers={**alice, **extra})
        assert retry.status_code == 200 and retry.json() == {"run_id": run_id, "items": []}
        assert retry.headers.get("Idempotent-Replayed") == "true"
    assert count(plane, Run) == 1 and count(plane, Hold) == 1
    assert balance(plane, alice_id).held == GEN_PRICE + BIG_PRICE
    # the same key for another plan is refused
    other = plan_of(say(api, cid, alice, "a red kite over the sea"))
    r = api.post(
        f"/v1/conversations/{cid}/plans/{other['id']}/approve", headers={**alice, "Idempotency-Key": "k-1"}
    )
    assert r.status_code == 422 and problem(r)["code"] == "idempotency_key_reused"

    finish(plane, clock, run_id)
    api.post(url, headers=alice)
    with transaction(plane.state.sessions) as s:
        spent = s.scalar(
            select(func.sum(LedgerEntry.amount)).where(
                LedgerEntry.user_id == alice_id, LedgerEntry.amount < 0
            )
        )
    assert spent == -(GEN_PRICE + BIG_PRICE)
    assert balance(plane, alice_id) == ledger.Balance(880, 0, 880)


def test_concurrent_approvals_start_one_run(api: TestClient, plane: ControlPlane, clock: FakeClock) -> None:
    alice_id, alice = user(plane, clock)
    cid = new(api, alice)
    plan = plan_of(say(api, cid, alice, FOX))
    url = f"/v1/conversations/{cid}/plans/{plan['id']}/approve"
    answers: list[Any] = []
    threads = [
        threading.Thread(target=lambda: answers.append(api.post(url, headers=alice))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert len({a.json()["run_id"] for a in answers}) == 1
    assert count(plane, Run) == 1 and balance(plane, alice_id).held == GEN_PRICE + BIG_PRICE


def test_a_plan_beyond_the_balance_shows_the_shortfall_and_the_deposit_link(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    bob_id, bob = user(plane, clock, credits=50)
    cid = new(api, bob)
    reply = say(api, cid, bob, FOX)
    plan, note = reply["items"]
    assert plan["type"] == "plan" and plan["approvable"] is False
    assert (plan["shortfall"], plan["balance"], plan["deposit_url"]) == (70, 50, "/account")
    assert note["kind"] == "shortfall" and "70" in note["text"] and "/account" in note["text"]
    r = api.post(f"/v1/conversations/{cid}/plans/{plan['id']}/approve", headers=bob)
    assert r.status_code == 402 and problem(r)["code"] == "insufficient_credits"
    assert count(plane, Run) == 0 and balance(plane, bob_id) == ledger.Balance(50, 0, 50)
    whole = conversation(api, cid, bob)
    assert next(i for i in whole["items"] if i["id"] == plan["id"])["state"] == "proposed"


def test_auto_approval_runs_plans_below_the_budget_only(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    alice_id, alice = user(plane, clock)
    cid = new(api, alice, auto_approve_below=GEN_PRICE + BIG_PRICE)  # not below: asks
    assert [i["type"] for i in say(api, cid, alice, FOX)["items"]] == ["plan"]
    r = api.patch(f"/v1/conversations/{cid}", json={"auto_approve_below": 1000}, headers=alice)
    assert r.status_code == 200 and r.json()["auto_approve_below"] == 1000
    items = say(api, cid, alice, "a watercolor owl at night, then make it 4x bigger")["items"]
    assert [i["type"] for i in items] == ["plan", "approval", "run"]
    assert items[1]["auto"] is True and items[0]["state"] == "approved"
    assert count(plane, Run) == 1 and balance(plane, alice_id).held == GEN_PRICE + BIG_PRICE
    r = api.patch(f"/v1/conversations/{cid}", json={"auto_approve_below": None}, headers=alice)
    assert r.json()["auto_approve_below"] is None
    assert [i["type"] for i in say(api, cid, alice, "a lighthouse at dusk")["items"]] == ["plan"]
    assert (
        api.patch(f"/v1/conversations/{cid}", json={"auto_approve_below": -1}, headers=alice).status_code
        == 422
    )


# -- ownership, the list, bad input ---------------------------------------------------------------


def test_conversations_are_their_owners_only_listed_renamed_and_deleted(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    _, alice = user(plane, clock)
    _, bob = user(plane, clock)
    cid = new(api, alice)
    plan = plan_of(say(api, cid, alice, FOX))
    base = f"/v1/conversations/{cid}"
    for method, path, body in [
        ("GET", base, None),
        ("PATCH", base, {"title": "mine now"}),
        ("DELETE", base, None),
        ("POST", f"{base}/messages", {"text": "hello"}),
        ("POST", f"{base}/plans/{plan['id']}/approve", None),
        ("POST", f"{base}/plans/{plan['id']}/reject", None),
        ("GET", f"{base}/events", None),
    ]:
        r = api.request(method, path, json=body, headers=bob)
        assert r.status_code == 404, (method, path, r.text)
    assert api.get("/v1/conversations", headers=bob).json()["conversations"] == []
    assert api.get(base).status_code == 401

    listed = api.get("/v1/conversations", headers=alice).json()["conversations"]
    assert [(c["id"], c["title"]) for c in listed] == [(cid, FOX[:60])]
    r = api.patch(base, json={"title": "Foxes"}, headers=alice)
    assert r.status_code == 200 and r.json()["title"] == "Foxes"
    assert api.delete(base, headers=alice).status_code == 204
    assert api.get(base, headers=alice).status_code == 404
    assert api.get("/v1/conversations", headers=alice).json()["conversations"] == []


def test_bad_messages_are_422_with_a_reason(api: TestClient, plane: ControlPlane, clock: FakeClock) -> None:
    _, alice = user(plane, clock)
    _, bob = user(plane, clock)
    cid = new(api, alice)
    url = f"/v1/conversations/{cid}/messages"
    upload = api.post("/v1/uploads", headers=bob, files={"file": ("x.png", _png(), "image/png")}).json()[
        "ref"
    ]
    for body, field in [
        ({"text": "  "}, "text"),
        ({"text": "x" * 4001}, "text"),
        ({"text": "hi", "images": ["upload:nope"]}, "images.0"),
        ({"text": "hi", "images": [upload]}, "images.0"),  # someone else's upload
        ({"text": "hi", "parent_id": str(uuid.uuid4())}, "parent_id"),
        ({"text": "hi", "extra": 1}, "extra"),
    ]:
        r = api.post(url, json=body, headers=alice)
        assert r.status_code == 422, (body, r.text)
        assert field in json.dumps(problem(r)), (body, r.text)
    assert [i["type"] for i in conversation(api, cid, alice)["items"]] == ["agent_message"]


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "white").save(buf, "PNG")
    return buf.getvalue()


# -- branching ------------------------------------------------------------------------------------


def test_a_message_under_an_earlier_item_branches_and_the_planner_follows_the_branch(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    _, alice = user(plane, clock)
    cid = new(api, alice)
    first = say(api, cid, alice, "a watercolor fox in the snow")
    plan1 = plan_of(first)
    plan2 = plan_of(say(api, cid, alice, "more vibrant"))
    assert "vibrant" in prompt_of(plan2)
    # "no, go back to the first one": answer the first plan again
    back = say(api, cid, alice, "at night", parent_id=plan1["id"])
    plan3 = plan_of(back)
    assert back["message"]["parent_id"] == plan1["id"]
    assert "fox" in prompt_of(plan3) and "vibrant" not in prompt_of(plan3)
    whole = conversation(api, cid, alice)
    by_id = {i["id"]: i for i in whole["items"]}
    assert whole["leaf_id"] == plan3["id"] and by_id[plan3["id"]]["parent_id"] == back["message"]["id"]
    assert by_id[plan2["id"]]["parent_id"] != back["message"]["id"]
    assert [i["seq"] for i in whole["items"]] == list(range(1, len(whole["items"]) + 1))
    # without a parent, the next message follows the current branch (the third plan's)
    plan4 = plan_of(say(api, cid, alice, "more vibrant"))
    assert "night" in prompt_of(plan4) or "vibrant" in prompt_of(plan4)
    assert conversation(api, cid, alice)["items"][-2]["parent_id"] == plan3["id"]


# -- the event stream ----------------------------------------------------------------------------


def events(api: TestClient, cid: str, headers: dict[str, str], *, last: int | None, until: int) -> list[dict]:
    """Read the conversation's stream until an `item` event with seq `until` arrived."""
    extra = {"Last-Event-ID": str(last)} if last is not None else {}
    out: list[dict[str, Any]] = []
    with api.stream("GET", f"/v1/conversations/{cid}/events", headers={**headers, **extra}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        block: dict[str, str] = {}
        for line in r.iter_lines():
            if line:
                if not line.startswith(":"):
                    key, _, value = line.partition(": ")
                    block[key] = value
                continue
            if block:
                out.append(
                    {"id": int(block["id"]), "event": block["event"], "data": json.loads(block["data"])}
                )
                block = {}
                if out[-1]["event"] == "item" and out[-1]["id"] == until:
                    break
    return out


def test_the_event_stream_sends_items_and_run_progress_and_resumes(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    _, alice = user(plane, clock)
    cid = new(api, alice)
    plan = plan_of(say(api, cid, alice, FOX))
    run_id = api.post(f"/v1/conversations/{cid}/plans/{plan['id']}/approve", headers=alice).json()["run_id"]
    seen = events(api, cid, alice, last=None, until=5)
    items = [e for e in seen if e["event"] == "item"]
    assert [(e["id"], e["data"]["type"]) for e in items] == [
        (1, "agent_message"),
        (2, "user_message"),
        (3, "plan"),
        (4, "approval"),
        (5, "run"),
    ]
    assert items[2]["data"]["quote"]["total"] == GEN_PRICE + BIG_PRICE
    resumed = events(api, cid, alice, last=3, until=5)
    assert [e["id"] for e in resumed if e["event"] == "item"] == [4, 5]

    finish(plane, clock, run_id)
    done = events(api, cid, alice, last=5, until=6)
    progress = [e for e in done if e["event"] == "run"]
    assert progress and progress[-1]["data"]["run_id"] == run_id
    assert progress[-1]["data"]["state"] == "COMPLETED" and progress[-1]["id"] <= 6
    assert {s["progress"] for s in progress[-1]["data"]["steps"]} == {1.0}
    [result] = [e for e in done if e["event"] == "item"]
    assert result["id"] == 6 and result["data"]["type"] == "result" and result["data"]["run_id"] == run_id


# -- questions -----------------------------------------------------------------------------------


def test_questions_are_answered_from_the_ledger_and_the_plan(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    _, alice = user(plane, clock, credits=777)
    cid = new(api, alice)
    [answer] = say(api, cid, alice, "what's my balance?")["items"]
    assert answer["kind"] == "answer" and answer["balance"] == 777 and "777" in answer["text"]
    plan = plan_of(say(api, cid, alice, FOX))
    [price_answer] = say(api, cid, alice, "how much does that cost?")["items"]
    assert price_answer["question"] == "price" and price_answer["price"] == plan["quote"]["total"]


# -- results as context, failures, the persona ----------------------------------------------------


def test_the_next_message_can_use_the_last_result(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    _, alice = user(plane, clock)
    cid = new(api, alice)
    plan = plan_of(say(api, cid, alice, "a watercolor fox in the snow"))
    run_id = api.post(f"/v1/conversations/{cid}/plans/{plan['id']}/approve", headers=alice).json()["run_id"]
    finish(plane, clock, run_id)
    [result] = [i for i in conversation(api, cid, alice)["items"] if i["type"] == "result"]
    bigger = plan_of(say(api, cid, alice, "upscale it"))
    assert [s["tool"] for s in bigger["steps"]] == ["upscale-4x"]
    assert json.dumps(bigger["pipeline"]).count(result["outputs"][0]["ref"]) == 1
    assert bigger["quote"]["total"] == BIG_PRICE


def test_a_failed_run_becomes_an_error_item_and_the_agent_can_say_why(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    alice_id, alice = user(plane, clock)
    cid = new(api, alice)
    plan = plan_of(say(api, cid, alice, FOX))
    run_id = api.post(f"/v1/conversations/{cid}/plans/{plan['id']}/approve", headers=alice).json()["run_id"]
    with transaction(plane.state.sessions) as s:
        [job_id] = s.scalars(select(Job.id).where(Job.run_id == run_id))
    fail(plane, clock, job_id, reason="the model exploded")
    runs.advance_all(plane.state.sessions, plane.state.settings, clock)
    whole = conversation(api, cid, alice)
    [error] = [i for i in whole["items"] if i["type"] == "error"]
    assert error["run_id"] == run_id and "exploded" in error["message"] and error["code"] == "run_failed"
    assert whole["leaf_id"] == error["id"]
    assert balance(plane, alice_id).held == 0  # the hold went back
    [why] = say(api, cid, alice, "what went wrong with my run?")["items"]
    assert why["question"] == "run" and "exploded" in why["text"] and why["state"] == "FAILED"


def test_the_persona_is_the_operators(settings: Settings, clock: FakeClock) -> None:
    custom = settings.model_copy(
        update={"agent_name": "Iris", "agent_greeting": "Hi, I'm Iris.", "agent_tone": "concise"}
    )
    cp = build(custom, provider=None, clock=clock)
    try:
        with TestClient(cp.app) as client:
            assert client.get("/v1/agent/persona").json() == {
                "name": "Iris",
                "avatar_url": None,
                "greeting": "Hi, I'm Iris.",
                "tone": "concise",
            }
            _, alice = user(cp, clock)
            created = client.post("/v1/conversations", headers=alice).json()
            assert created["items"][0]["text"] == "Hi, I'm Iris."
    finally:
        cp.state.engine.dispose()
    with pytest.raises(ValueError):
        Settings(agent_tone="rude")  # type: ignore[arg-type]


def test_a_planner_failure_is_an_error_item_not_a_500(
    api: TestClient, plane: ControlPlane, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from swarmstation.domain.agent import planner

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a planner bug")

    monkeypatch.setattr(planner, "decide", broken)
    _, alice = user(plane, clock)
    cid = new(api, alice)
    reply = say(api, cid, alice, FOX)
    [error] = reply["items"]
    assert error["type"] == "error" and error["code"] == "planner_failed"
    assert conversation(api, cid, alice)["leaf_id"] == error["id"] and count(plane, Run) == 0
