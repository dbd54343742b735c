"""The LLM agent's loop (control/agent_llm.converse) on a scripted endpoint and an in-memory
toolbox, with a clock the test moves: the rounds and the deadline bound it, a valid proposal
survives a later failure, results go back to the model in call order."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from swarmstation.config import Settings
from swarmstation.control.agent_llm import LLMFailed, converse, mode
from swarmstation.domain.agent.llm import ModelTurn
from swarmstation.domain.agent.types import Proposal

PLAN = {"steps": {"gen": {"tool": "sdxl-txt2img", "inputs": {"prompt": "a fox"}}}}


def calls(*pairs: tuple[str, str]) -> ModelTurn:
    return ModelTurn("", tuple({"id": f"c{i}", "name": n, "arguments": a} for i, (n, a) in enumerate(pairs)))


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Scripted:
    """Answers its turns in order (an exception is raised); each answer takes `seconds`."""

    turns: list[ModelTurn | Exception]
    clock: Clock
    seconds: float = 1.0
    seen: list[list[dict[str, Any]]] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)

    def turn(
        self, messages: Sequence[Mapping[str, Any]], *, stream: bool, timeout_seconds: float
    ) -> ModelTurn:
        self.seen.append([dict(m) for m in messages])
        self.timeouts.append(timeout_seconds)
        self.clock.now += self.seconds
        turn = self.turns.pop(0)
        if isinstance(turn, Exception):
            raise turn
        return turn


@dataclass
class Box:
    """The four functions, in memory: a plan is valid when its steps use `sdxl-txt2img`."""

    def search_tools(self, query: str) -> dict[str, Any]:
        return {"ok": True, "tools": [{"slug": "sdxl-txt2img", "query": query}]}

    def propose_plan(self, pipeline: object, explanation: str) -> tuple[dict[str, Any], Proposal | None]:
        if pipeline != PLAN:
            return {"ok": False, "error": "steps: unknown tool"}, None
        return {"ok": True, "quote": {"total": 100}}, Proposal(PLAN, ("sdxl-txt2img",), {}, explanation)

    def get_balance(self) -> dict[str, Any]:
        return {"ok": True, "balance": 5, "held": 1}

    def get_price(self, tool: str) -> dict[str, Any]:
        return {"ok": True, "tool": tool, "estimate": 100}


def run(endpoint: Scripted, **limits: Any) -> Any:
    options = {"max_rounds": 5, "timeout_seconds": 10.0, "stream": False, **limits}
    return converse(endpoint, Box(), [{"role": "user", "content": "a fox"}], clock=endpoint.clock, **options)


def test_results_answer_the_calls_in_order_then_the_text_ends_it() -> None:
    clock = Clock()
    endpoint = Scripted(
        [
            calls(("search_tools", '{"query": "fox"}'), ("get_balance", "")),
            calls(("propose_plan", '{"pipeline": {"steps": {}}}')),
            calls(("propose_plan", '{"pipeline": ' + json.dumps(PLAN) + ', "explanation": "x"}')),
            ModelTurn("Done."),
        ],
        clock,
    )
    out = run(endpoint)
    assert out.text == "Done." and out.rounds == 4 and out.proposal.chain == ("sdxl-txt2img",)
    assert out.called == ["search_tools", "get_balance", "propose_plan", "propose_plan"]
    assert out.figures["balance"] == 5 and out.figures["price"] == 100
    second = endpoint.seen[1]
    assert [m["role"] for m in second[-3:]] == ["assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in second[-2:]] == ["c0", "c1"]
    assert (
        '"ok": false' in endpoint.seen[2][-1]["content"] and "unknown tool" in endpoint.seen[2][-1]["content"]
    )


def test_the_deadline_shortens_each_call_and_ends_the_loop() -> None:
    clock = Clock()
    endpoint = Scripted([calls(("search_tools", '{"query": "a"}'))] * 10, clock, seconds=4.0)
    with pytest.raises(LLMFailed, match="within 10 seconds"):
        run(endpoint)
    assert endpoint.timeouts == [10.0, 6.0, 2.0]


def test_the_rounds_bound_the_loop() -> None:
    endpoint = Scripted([calls(("get_balance", ""))] * 10, Clock(), seconds=0.0)
    with pytest.raises(LLMFailed, match="3 rounds"):
        run(endpoint, max_rounds=3)
    assert len(endpoint.seen) == 3


def test_a_valid_proposal_survives_a_later_failure_and_an_empty_answer_does_not() -> None:
    good = calls(("propose_plan", '{"pipeline": ' + json.dumps(PLAN) + "}"))
    out = run(Scripted([good, LLMFailed("the LLM endpoint failed (HTTP 500)")], Clock()))
    assert out.proposal is not None and out.text == ""
    with pytest.raises(LLMFailed, match="HTTP 500"):
        run(Scripted([calls(("get_balance", "")), LLMFailed("the LLM endpoint failed (HTTP 500)")], Clock()))
    with pytest.raises(LLMFailed, match="empty answer"):
        run(Scripted([ModelTurn("  ")], Clock()))


@pytest.mark.parametrize(
    ("agent_mode", "base_url", "expected"),
    [
        ("auto", None, "offline"),
        ("auto", "http://llm/v1", "llm"),
        ("offline", "http://llm/v1", "offline"),
        ("llm", None, "llm"),  # it notes that no endpoint is set, and the planner answers
    ],
)
def test_mode(agent_mode: str, base_url: str | None, expected: str) -> None:
    assert mode(Settings(agent_mode=agent_mode, llm_base_url=base_url)) == expected
