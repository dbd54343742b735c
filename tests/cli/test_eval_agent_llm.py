"""`swarmstation eval-agent --mode llm` against the fake OpenAI server playing a simple model
(search, then propose the top tool; get_balance for credits; decline a song): the figures come
from the LLM loop, and an endpoint that fails is counted in `llm_errors`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from swarmstation.cli import app
from tests.fake_openai import FakeOpenAI, RecordedRequest, Turn, call

RECORDS = [
    {"id": "r1", "split": "dev", "text": "a watercolor fox in the snow",
     "expect": {"kind": "plan", "chain": ["sdxl-txt2img"]}},
    {"id": "r2", "split": "dev", "text": "describe this",
     "media": [{"ref": "upload:a", "source": "attachment"}],
     "expect": {"kind": "plan", "chain": ["caption"]}},
    {"id": "r3", "split": "held_out", "text": "make a song about it", "expect": {"kind": "abstain"}},
    {"id": "r4", "split": "held_out", "text": "what's my balance?",
     "expect": {"kind": "question", "question": "balance"}},
]  # fmt: skip


def simple_model(req: RecordedRequest) -> Turn:
    said = [m for m in req.messages if m["role"] == "user"][-1]["content"]
    text = said.split("\n")[0]
    results = [r["content"] for r in req.tool_results()]
    if "song" in text:
        return "Sorry, I only make and change images."
    if "balance" in text:
        return f"You have {results[-1]['balance']} credits." if results else call("get_balance")
    if not results:
        return call("search_tools", {"query": text})
    if "tools" not in results[-1]:
        return "Here is a plan."
    # the first tool found that takes what the user has: an attached image, or only words
    attached = said.split("[attached: ")[1].rstrip("]") if "[attached: " in said else None
    tool = next(
        t for t in results[-1]["tools"] if any(p["type"] == "image" for p in t["inputs"]) == bool(attached)
    )
    inputs: dict[str, Any] = {"image": attached} if attached else {"prompt": text}
    return call("propose_plan", {"pipeline": {"steps": {"s1": {"tool": tool["slug"], "inputs": inputs}}}})


def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeOpenAI) -> dict[str, Any]:
    set_file = tmp_path / "set.jsonl"
    set_file.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    monkeypatch.setenv("SWARMSTATION_LLM_BASE_URL", fake.base_url)
    monkeypatch.setenv("SWARMSTATION_LLM_API_KEY", fake.api_key)
    monkeypatch.setenv("SWARMSTATION_LLM_MODEL", "fake-model")
    monkeypatch.setenv("SWARMSTATION_AGENT_LLM_TIMEOUT_SECONDS", "5")
    result = CliRunner().invoke(app, ["eval-agent", "--mode", "llm", "--set", str(set_file), "--json"])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_the_llm_mode_decides_the_set_through_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI
) -> None:
    fake_openai.respond = simple_model
    report = run(tmp_path, monkeypatch, fake_openai)
    assert report["mode"] == "llm" and report["model"] == "fake-model" and report["llm_errors"] == 0
    figures = report["splits"]["all"]
    assert figures["exact_chain"] == 1.0 and figures["question_accuracy"] == 1.0
    assert figures["abstention_rate"] == 1.0 and figures["false_abstention_rate"] == 0.0
    assert figures["latency_ms"]["p95"] is not None
    # every message went through the functions: 2 plans x 3 answers, 2 for the balance, 1 song
    assert len(fake_openai.requests) == 9
    assert all(r.tool_names[0] == "search_tools" for r in fake_openai.requests)


def test_a_failing_endpoint_is_counted_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI
) -> None:
    fake_openai.fail(500, times=100)
    report = run(tmp_path, monkeypatch, fake_openai)
    assert report["llm_errors"] == len(RECORDS)
    assert report["llm_error_examples"] == ["the LLM endpoint failed (HTTP 500)"]
    assert report["splits"]["all"]["exact_chain"] == 0.0
