"""The LLM mode's pure half (domain/agent/llm.py): schemas, prompt and messages, tool cards,
search bounds, tool calls read from whole answers and from streamed deltas, plan parameters."""

from __future__ import annotations

import dataclasses
import json

import pytest

from swarmstation.domain.agent import llm
from swarmstation.domain.agent.lexical import LexicalRetriever
from swarmstation.domain.agent.types import CatalogTool, MediaRef, PriorPlan


def test_the_four_functions_and_none_that_runs_anything() -> None:
    names = [t["function"]["name"] for t in llm.tool_schemas()]
    assert names == ["search_tools", "propose_plan", "get_balance", "get_price"]
    assert not any("run" in n or "approve" in n for n in names)
    for schema in llm.tool_schemas():
        params = schema["function"]["parameters"]
        assert params["type"] == "object" and set(params["required"]) <= set(params["properties"])


def test_the_system_prompt_carries_the_persona_the_media_and_the_prior_plan() -> None:
    prior = PriorPlan(
        {"steps": {"gen": {"tool": "sdxl-txt2img", "inputs": {"prompt": "a fox"}}}}, ("sdxl-txt2img",)
    )
    media = [MediaRef("output:1", "output"), MediaRef("upload:2", "attachment")]
    text = llm.system_prompt(name="Pixie", tone="concise", media=media, prior=prior, seed=42)
    assert "You are Pixie" in text and "brief" in text and "42" in text
    assert "output:1 (an earlier result)" in text and "upload:2 (attached)" in text
    assert '"sdxl-txt2img"' in text and "cannot run" in text
    friendly = llm.system_prompt(name="Pixie", tone="friendly", media=(), prior=None, seed=0)
    assert "warm" in friendly and "no image yet" in friendly and "latest plan" not in friendly


def test_the_transcript_skips_the_greeting_and_summarises_plans_and_results() -> None:
    items = [
        {"type": "agent_message", "kind": "greeting", "text": "Hello!"},
        {"type": "user_message", "text": "a fox", "images": ["upload:9"]},
        {"type": "plan", "chain": ["sdxl-txt2img", "upscale-4x"], "quote": {"total": 120}},
        {"type": "approval", "decision": "approved"},
        {"type": "result", "outputs": [{"ref": "output:5"}]},
        {"type": "error", "message": "the run failed"},
    ]
    out = llm.transcript(items)
    assert [m["role"] for m in out] == ["user", "assistant", "assistant", "assistant"]
    assert out[0]["content"] == "a fox\n[attached: upload:9]"
    assert "sdxl-txt2img → upscale-4x, 120 credits" in out[1]["content"]
    assert "output:5" in out[2]["content"] and "the run failed" in out[3]["content"]
    many = [{"type": "user_message", "text": f"m{i}", "images": []} for i in range(40)]
    kept = llm.transcript(many)
    assert len(kept) == llm.MAX_HISTORY_MESSAGES and kept[-1]["content"] == "m39"


def test_search_answers_a_few_available_tools_with_ports(catalog: list[CatalogTool]) -> None:
    found = llm.search_catalog("make it 4x bigger", catalog, LexicalRetriever())
    assert 0 < len(found) <= llm.MAX_SEARCH_RESULTS < len(catalog)
    assert found[0].spec.slug == "upscale-4x"
    hidden = [dataclasses.replace(t, available=t.spec.slug != "upscale-4x") for t in catalog]
    assert "upscale-4x" not in [
        t.spec.slug for t in llm.search_catalog("upscale 4x", hidden, LexicalRetriever())
    ]
    assert len(llm.search_catalog("image", catalog, LexicalRetriever(), limit=50)) <= llm.MAX_SEARCH_RESULTS
    card = llm.tool_card(found[0], {"estimate": 20})
    assert card["slug"] == "upscale-4x" and card["price"] == {"estimate": 20}
    assert card["inputs"][0] == {"name": "image", "type": "image", "required": True, **_desc(card)}
    assert card["outputs"] == [{"name": "image", "type": "image"}]


def _desc(card: dict[str, object]) -> dict[str, object]:
    first = card["inputs"][0]  # type: ignore[index]
    return {"description": first["description"]} if "description" in first else {}


@pytest.mark.parametrize(
    ("name", "arguments", "error"),
    [
        ("search_tools", '{"query": "fox"}', None),
        ("get_balance", "", None),  # no arguments at all reads as {}
        ("search_tools", '{"query": "fox', "not valid JSON"),
        ("search_tools", '["fox"]', "must be a JSON object"),
        ("run_pipeline", "{}", "unknown function"),
    ],
)
def test_tool_calls_are_read_and_checked(name: str, arguments: str, error: str | None) -> None:
    [parsed] = llm.parse_tool_calls(llm.ModelTurn("", ({"id": "c1", "name": name, "arguments": arguments},)))
    assert parsed.id == "c1" and parsed.name == name
    if error is None:
        assert parsed.error is None and parsed.arguments == (json.loads(arguments) if arguments else {})
    else:
        assert parsed.error is not None and error in parsed.error


def test_streamed_deltas_assemble_into_the_same_turn() -> None:
    args = json.dumps({"pipeline": {"steps": {}}})
    deltas = [
        {"role": "assistant", "content": ""},
        {"content": "Let me "},
        {"content": "look."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "a",
                    "type": "function",
                    "function": {"name": "search_tools", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"query": '}}]},
        {"tool_calls": [{"index": 1, "id": "b", "function": {"name": "propose_plan"}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"fox"}'}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": args}}]},
    ]
    assembler = llm.TurnAssembler()
    for delta in deltas:
        assembler.add(delta)
    turn = assembler.turn()
    assert turn.text == "Let me look."
    assert turn.calls == (
        {"id": "a", "name": "search_tools", "arguments": '{"query": "fox"}'},
        {"id": "b", "name": "propose_plan", "arguments": args},
    )
    message = llm.assistant_message(turn)
    assert message["content"] == "Let me look." and [c["id"] for c in message["tool_calls"]] == ["a", "b"]
    assert llm.tool_message("a", {"ok": True}) == {
        "role": "tool",
        "tool_call_id": "a",
        "content": '{"ok": true}',
    }


def test_plan_params_name_what_the_pipeline_sets() -> None:
    pipeline = {
        "steps": {
            "gen": {
                "tool": "sd15-txt2img",
                "inputs": {"prompt": "a fox", "width": 768, "height": 512, "seed": 3},
                "variations": {"count": 4},
            },
            "big": {"tool": "upscale-4x", "inputs": {"image": {"from": "gen", "output": "image"}}},
        }
    }
    params = llm.plan_params(pipeline, ("sd15-txt2img", "upscale-4x"))
    assert params == {"width": 768, "height": 512, "seed": 3, "count": 4, "model": "sd15", "scale": 4}
