"""The chat agent's LLM mode over HTTP (control/agent_llm.py) against the fake OpenAI server
(tests/fake_openai.py) scripted with tool calls: the fox story by search_tools → propose_plan,
streamed and not; an invalid plan answered back and fixed; get_balance and get_price; malformed
calls; the round bound; and the offline planner as the fallback when the endpoint fails."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.domain.prices import PriceKind, PriceModel
from swarmstation.store.db import transaction
from swarmstation.store.models import Run, Tool
from tests.api.test_conversations import (
    BIG_PRICE,
    FOX,
    GEN_PRICE,
    balance,
    conversation,
    count,
    finish,
    new,
    plan_of,
    say,
    user,
)
from tests.conftest import FakeClock
from tests.control.test_runs import price
from tests.fake_openai import FakeOpenAI, RecordedRequest, ToolCalls, call

FOX_PIPELINE = {
    "inputs": {},
    "steps": {
        "gen": {"tool": "sdxl-txt2img", "inputs": {"prompt": "a watercolor fox in the snow", "seed": 7}},
        "big": {"tool": "upscale-4x", "inputs": {"image": {"from": "gen", "output": "image"}}},
    },
}
SAID = "Here is a plan: a watercolor fox, then 4x bigger. Approve it to run it."


def llm_settings(tmp_path: Path, fake: FakeOpenAI, database_url: str | None = None, **extra: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url or f"sqlite:///{tmp_path / 'llm.db'}",
        provider="none",
        scheduler_interval_seconds=60,
        control_interval_seconds=60,
        run_interval_seconds=60,
        llm_base_url=fake.base_url,
        llm_api_key=fake.api_key,
        llm_model="fake-model",
        llm_timeout_seconds=5,
        **extra,
    )


def make_plane(settings: Settings, clock: FakeClock) -> ControlPlane:
    cp = build(settings, provider=None, clock=clock)
    with transaction(cp.state.sessions) as s:
        for tool in s.scalars(select(Tool)):
            if tool.spec.get("category") in ("text-to-image", "image-to-image"):
                price(s, clock, tool.slug, PriceModel(PriceKind.PER_RUN, GEN_PRICE))
        price(s, clock, "upscale-4x", PriceModel(PriceKind.PER_RUN, BIG_PRICE))
    return cp


@pytest.fixture(params=[True, False], ids=["streamed", "whole"])
def plane(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock, fake_openai: FakeOpenAI
) -> Iterator[ControlPlane]:
    cp = make_plane(llm_settings(tmp_path, fake_openai, agent_llm_stream=request.param), clock)
    yield cp
    cp.state.engine.dispose()


def catalog_size(plane: ControlPlane) -> int:
    with transaction(plane.state.sessions) as s:
        return len(list(s.scalars(select(Tool.slug))))


def results_of(req: RecordedRequest) -> list[Any]:
    return [r["content"] for r in req.tool_results()]


def test_the_fox_story_by_tool_calls_to_a_priced_plan_that_runs_when_approved(
    api: TestClient, plane: ControlPlane, clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    alice_id, alice = user(plane, clock)
    cid = new(api, alice)
    fake_openai.script(
        call("search_tools", {"query": "watercolor picture from text"}),
        call("search_tools", {"query": "make an image 4x bigger"}),
        call("propose_plan", {"pipeline": FOX_PIPELINE, "explanation": "fox, then upscale"}),
        SAID,
    )
    reply = say(api, cid, alice, FOX)
    plan = plan_of(reply)
    assert [s["tool"] for s in plan["steps"]] == ["sdxl-txt2img", "upscale-4x"]
    assert plan["chain"] == ["sdxl-txt2img", "upscale-4x"]
    assert plan["quote"]["total"] == GEN_PRICE + BIG_PRICE and plan["state"] == "proposed"
    assert plan["explanation"] == SAID and plan["params"]["scale"] == 4
    assert count(plane, Run) == 0 and balance(plane, alice_id).held == 0  # nothing runs unasked

    requests = fake_openai.requests
    assert len(requests) == 4
    assert requests[0].tool_names == ["search_tools", "propose_plan", "get_balance", "get_price"]
    assert "Swarm" in requests[0].text_of("system") and FOX in requests[0].text_of("user")
    # the model saw a few tools per search, with ports and prices, never the whole catalog
    first, second = results_of(requests[1])[0], results_of(requests[2])[1]
    total = catalog_size(plane)
    for found in (first, second):
        assert found["ok"] and 0 < len(found["tools"]) <= 5 < total
    assert "sdxl-txt2img" in [t["slug"] for t in first["tools"]]
    [upscale] = [t for t in second["tools"] if t["slug"] == "upscale-4x"]
    assert upscale["inputs"][0]["name"] == "image" and upscale["outputs"] == [
        {"name": "image", "type": "image"}
    ]
    assert upscale["price"]["estimate"] == BIG_PRICE
    verdict = results_of(requests[3])[-1]
    assert verdict["ok"] and verdict["quote"]["total"] == GEN_PRICE + BIG_PRICE and verdict["shortfall"] == 0

    r = api.post(f"/v1/conversations/{cid}/plans/{plan['id']}/approve", headers=alice)
    assert r.status_code == 200, r.text
    assert balance(plane, alice_id).held == GEN_PRICE + BIG_PRICE
    finish(plane, clock, r.json()["run_id"])
    [result] = [i for i in conversation(api, cid, alice)["items"] if i["type"] == "result"]
    assert result["plan_id"] == plan["id"] and result["outputs"][0]["ref"].startswith("output:")

    # the next turn shows the model the plan and the result it can edit
    fake_openai.script("Shall I make it more vibrant?")
    answered = say(api, cid, alice, "nice")
    assert [i["type"] for i in answered["items"]] == ["agent_message"]
    system = fake_openai.last.text_of("system")
    assert '"upscale-4x"' in system and result["outputs"][0]["ref"] in system


def test_an_invalid_plan_is_answered_back_with_its_errors_and_the_fixed_one_proposed(
    api: TestClient, plane: ControlPlane, clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    _, alice = user(plane, clock)
    cid = new(api, alice)
    wrong = {
        "steps": {
            "gen": FOX_PIPELINE["steps"]["gen"],  # type: ignore[index]
            "big": {"tool": "upscale-4x", "inputs": {"image": {"from": "gen", "output": "picture"}}},
        }
    }
    fake_openai.script(
        call("propose_plan", {"pipeline": wrong}),
        call("propose_plan", {"pipeline": {"steps": {"x": {"tool": "no-such-tool", "inputs": {}}}}}),
        call("propose_plan", {"pipeline": FOX_PIPELINE}),
        "Fixed it.",
    )
    reply = say(api, cid, alice, FOX)
    plan = plan_of(reply)
    assert plan["chain"] == ["sdxl-txt2img", "upscale-4x"] and plan["explanation"] == "Fixed it."
    [bad_port] = results_of(fake_openai.requests[1])
    assert bad_port["ok"] is False and "steps.big.inputs.image" in bad_port["error"]
    assert bad_port["errors"][0]["field"] == "steps.big.inputs.image"
    unknown = results_of(fake_openai.requests[2])[-1]
    assert unknown["ok"] is False and "no-such-tool" in unknown["error"]
    assert [i["type"] for i in reply["items"]] == ["plan"]  # the rejected attempts are not items


def test_the_model_asks_for_the_balance_and_a_price(
    api: TestClient, plane: ControlPlane, clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    _, alice = user(plane, clock, credits=750)
    cid = new(api, alice)
    fake_openai.script(call("get_balance"), "You have 750 credits.")
    [answer] = say(api, cid, alice, "how many credits do I have?")["items"]
    assert answer["type"] == "agent_message" and answer["kind"] == "answer"
    assert answer["text"] == "You have 750 credits." and answer["balance"] == 750
    assert answer["question"] == "balance"
    assert results_of(fake_openai.last) == [{"ok": True, "balance": 750, "held": 0}]

    fake_openai.script(call("get_price", {"tool": "upscale-4x"}), call("get_price", {"tool": "nope"}), "20.")
    [answer] = say(api, cid, alice, "what does upscaling cost?")["items"]
    assert answer["price"] == BIG_PRICE and answer["tool"] == "upscale-4x" and answer["question"] == "price"
    priced = results_of(fake_openai.requests[-2])[-1]
    assert priced["ok"] and priced["estimate"] == BIG_PRICE and priced["model"] == "per_run"
    assert results_of(fake_openai.last)[-1]["ok"] is False


def test_malformed_calls_are_answered_back_as_errors(
    api: TestClient, plane: ControlPlane, clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    _, alice = user(plane, clock)
    cid = new(api, alice)
    fake_openai.script(
        call("search_tools", '{"query": "fox'),
        call("run_pipeline", {"pipeline": FOX_PIPELINE}),
        call("search_tools", {"query": ""}),
        call("propose_plan", {}),
        "I can't do that.",
    )
    [answer] = say(api, cid, alice, "run it now")["items"]
    assert answer["text"] == "I can't do that." and count(plane, Run) == 0
    errors = [r["content"]["error"] for r in fake_openai.last.tool_results()]
    assert "not valid JSON" in errors[0] and "unknown function 'run_pipeline'" in errors[1]
    assert errors[2].startswith("query") and errors[3].startswith("pipeline")


def test_a_model_that_never_settles_is_bounded_and_the_planner_answers(
    tmp_path: Path, clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    cp = make_plane(llm_settings(tmp_path, fake_openai, agent_llm_max_rounds=3), clock)
    fake_openai.respond = lambda _req: call("search_tools", {"query": "fox"})
    try:
        with TestClient(cp.app) as api:
            _, alice = user(cp, clock)
            cid = new(api, alice)
            reply = say(api, cid, alice, FOX)
    finally:
        cp.state.engine.dispose()
    assert len(fake_openai.requests) == 3
    note, plan = reply["items"]
    assert note["kind"] == "fallback" and "3 rounds" in note["text"]
    assert plan["type"] == "plan" and plan["parent_id"] == note["id"]
    assert [s["tool"] for s in plan["steps"]] == ["sdxl-txt2img", "upscale-4x"]


@pytest.mark.parametrize("trouble", ["http-500", "unreachable", "slow"])
def test_an_endpoint_that_fails_falls_back_to_the_offline_planner_with_a_note(
    trouble: str, tmp_path: Path, clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    settings = llm_settings(tmp_path, fake_openai, agent_llm_timeout_seconds=0.5)
    if trouble == "http-500":
        fake_openai.fail(500)
    elif trouble == "slow":
        fake_openai.slow(2.0)
    else:
        settings = settings.model_copy(update={"llm_base_url": "http://127.0.0.1:9/v1"})
    cp = make_plane(settings, clock)
    try:
        with TestClient(cp.app) as api:
            _, alice = user(cp, clock)
            cid = new(api, alice)
            reply = say(api, cid, alice, FOX)
            whole = conversation(api, cid, alice)
    finally:
        cp.state.engine.dispose()
    note, plan = reply["items"]
    assert note["type"] == "agent_message" and note["kind"] == "fallback"
    assert {"http-500": "HTTP 500", "unreachable": "could not be reached", "slow": "within"}[trouble] in note[
        "text"
    ]
    assert fake_openai.api_key not in note["text"]
    assert plan["type"] == "plan" and plan["quote"]["total"] == GEN_PRICE + BIG_PRICE
    assert whole["leaf_id"] == plan["id"]


def test_a_plan_kept_when_the_endpoint_fails_after_proposing_it(
    tmp_path: Path, clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    settings = llm_settings(tmp_path, fake_openai, agent_llm_stream=False, agent_llm_timeout_seconds=1.0)
    cp = make_plane(settings, clock)
    fake_openai.script(call("propose_plan", {"pipeline": FOX_PIPELINE, "explanation": "the fox"}))
    fake_openai.respond = lambda _req: (time.sleep(1.5), "too late")[1]  # the next answer times out
    try:
        with TestClient(cp.app) as api:
            _, alice = user(cp, clock)
            cid = new(api, alice)
            [plan] = say(api, cid, alice, FOX)["items"]
    finally:
        cp.state.engine.dispose()
    assert plan["type"] == "plan" and plan["explanation"] == "the fox"


@pytest.mark.parametrize(
    ("agent_mode", "configured", "asked", "noted"),
    [
        ("offline", True, False, False),  # offline never calls the endpoint
        ("auto", False, False, False),  # auto without an endpoint is the planner, silently
        ("llm", False, False, True),  # llm without an endpoint says the planner answered
    ],
)
def test_agent_mode_chooses_the_planner_or_the_llm(
    agent_mode: str,
    configured: bool,
    asked: bool,
    noted: bool,
    tmp_path: Path,
    clock: FakeClock,
    fake_openai: FakeOpenAI,
) -> None:
    settings = llm_settings(tmp_path, fake_openai, agent_mode=agent_mode)
    if not configured:
        settings = settings.model_copy(update={"llm_base_url": None})
    cp = make_plane(settings, clock)
    try:
        with TestClient(cp.app) as api:
            _, alice = user(cp, clock)
            cid = new(api, alice)
            items = say(api, cid, alice, FOX)["items"]
    finally:
        cp.state.engine.dispose()
    assert bool(fake_openai.requests) is asked
    assert [i["type"] for i in items] == (["agent_message", "plan"] if noted else ["plan"])
    if noted:
        assert "SWARMSTATION_LLM_BASE_URL" in items[0]["text"]


def test_a_tool_calls_answer_with_text_keeps_the_text_out_of_the_reply_until_the_end(
    api: TestClient, plane: ControlPlane, clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    _, alice = user(plane, clock)
    cid = new(api, alice)
    fake_openai.script(
        ToolCalls((call("get_balance").calls[0],), text="Let me check."),
        "You have 1000 credits.",
    )
    [answer] = say(api, cid, alice, "balance?")["items"]
    assert answer["text"] == "You have 1000 credits."
    # the assistant's message with its calls went back into the chat before the results
    assistant = [m for m in fake_openai.last.messages if m["role"] == "assistant"][-1]
    assert (
        assistant["content"] == "Let me check."
        and assistant["tool_calls"][0]["function"]["name"] == "get_balance"
    )


def test_an_llm_plan_is_approved_once_on_each_database(
    database_url: str, tmp_path: Path, clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    cp = make_plane(llm_settings(tmp_path, fake_openai, database_url), clock)
    fake_openai.script(call("propose_plan", {"pipeline": FOX_PIPELINE}), SAID)
    try:
        with TestClient(cp.app) as api:
            alice_id, alice = user(cp, clock)
            cid = new(api, alice)
            plan = plan_of(say(api, cid, alice, FOX))
            url = f"/v1/conversations/{cid}/plans/{plan['id']}/approve"
            first = api.post(url, headers={**alice, "Idempotency-Key": "k1"})
            again = api.post(url, headers=alice)
            assert first.status_code == again.status_code == 200, first.text
            assert first.json()["run_id"] == again.json()["run_id"]
            assert count(cp, Run) == 1 and balance(cp, alice_id).held == GEN_PRICE + BIG_PRICE
    finally:
        cp.state.engine.dispose()
