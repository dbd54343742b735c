"""`swarmstation eval-agent`: the figures for each split as JSON, a wrong expectation lowers them,
and bad input ends in one line (exit 2) or, for --mode llm without an endpoint, exit 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from swarmstation.cli import app

FIGURES = {
    "requests", "dialogue_turns", "top1_retrieval", "top3_retrieval", "exact_chain", "parameter_accuracy",
    "question_accuracy", "abstention_rate", "false_abstention_rate", "decision_accuracy",
    "dialogue_step_accuracy", "latency_ms", "counts",
}  # fmt: skip


def records(fox_chain: list[str]) -> list[dict[str, Any]]:
    return [
        {"id": "r1", "split": "dev", "text": "a watercolor fox in the snow, then make it 4x bigger",
         "expect": {"kind": "plan", "chain": fox_chain, "params": {"scale": 4}}},
        {"id": "r2", "split": "dev", "text": "describe this",
         "media": [{"ref": "upload:a", "source": "attachment"}],
         "expect": {"kind": "plan", "chain": ["caption"]}},
        {"id": "r3", "split": "held_out", "text": "make a song about it", "expect": {"kind": "abstain"}},
        {"id": "r4", "split": "held_out", "text": "what's my balance?",
         "expect": {"kind": "question", "question": "balance"}},
        {"id": "d1", "split": "held_out", "type": "dialogue", "turns": [
            {"text": "a lighthouse at dusk", "seed": 1,
             "expect": {"kind": "plan", "chain": ["sdxl-txt2img"]}},
            {"text": "more vibrant", "seed": 2,
             "expect": {"kind": "plan", "chain": ["sdxl-txt2img"], "prompt_has": ["vibrant"]}},
        ]},
    ]  # fmt: skip


def run(tmp_path: Path, rows: list[dict[str, Any]], *extra: str) -> dict[str, Any]:
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = CliRunner().invoke(app, ["eval-agent", "--set", str(path), "--json", *extra])
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def test_figures_per_split(tmp_path: Path) -> None:
    out = run(tmp_path, records(["sdxl-txt2img", "upscale-4x"]))
    assert out["mode"] == "offline" and set(out["splits"]) == {"dev", "held_out", "all"}
    for figures in out["splits"].values():
        assert set(figures) == FIGURES
    dev, held, every = out["splits"]["dev"], out["splits"]["held_out"], out["splits"]["all"]
    assert dev["requests"] == 2 and held["requests"] == 2 and held["dialogue_turns"] == 2
    assert dev["exact_chain"] == 1.0 and dev["parameter_accuracy"] == 1.0 and dev["top3_retrieval"] == 1.0
    assert held["abstention_rate"] == 1.0 and held["question_accuracy"] == 1.0
    assert held["dialogue_step_accuracy"] == 1.0 and every["false_abstention_rate"] == 0.0
    assert dev["exact_chain"] is not None and every["latency_ms"]["p95"] >= every["latency_ms"]["p50"] > 0
    assert out["targets"]["top3"] == 0.95


def test_a_wrong_expectation_lowers_the_score(tmp_path: Path) -> None:
    wrong = run(tmp_path, records(["flux-txt2img", "caption"]), "--failures", "all")
    dev = wrong["splits"]["dev"]
    assert dev["exact_chain"] == 0.5 and dev["decision_accuracy"] == 0.5
    assert dev["top1_retrieval"] == 0.5  # flux is not what the text asks for
    [failure] = wrong["failures"]
    assert failure["id"] == "r1" and "chain" in failure["problems"][0]


def _unwrapped(output: str) -> str:
    return " ".join(output.split())


def test_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "split": "test", "text": "hi", "expect": {"kind": "plan", "chain": []}}\n')
    result = CliRunner().invoke(app, ["eval-agent", "--set", str(bad), "--json"])
    # the message is wrapped at the terminal's width, and a long temporary path moves the breaks
    assert result.exit_code == 2 and "split must be one of" in _unwrapped(result.output)
    result = CliRunner().invoke(app, ["eval-agent", "--set", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 2 and "missing.jsonl" in _unwrapped(result.output).replace(" ", "")
    monkeypatch.delenv("SWARMSTATION_LLM_BASE_URL", raising=False)
    result = CliRunner().invoke(app, ["eval-agent", "--mode", "llm", "--json"])
    assert result.exit_code == 1 and "no LLM configured" in result.output
    result = CliRunner().invoke(app, ["eval-agent", "--mode", "telepathy"])
    assert result.exit_code == 2


def test_the_bundled_set_is_large_and_split(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval-agent", "--json"])
    assert result.exit_code == 0, result.output
    splits = json.loads(result.stdout)["splits"]
    assert splits["all"]["requests"] >= 200 and splits["all"]["dialogue_turns"] >= 30
    assert 0.2 <= splits["held_out"]["requests"] / splits["all"]["requests"] <= 0.4
    assert splits["all"]["counts"]["out_of_scope"] >= 0.15 * splits["all"]["requests"]
