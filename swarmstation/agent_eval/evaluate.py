"""The agent's labelled set, measured: retrieval, chains, parameters, abstention, dialogues and
latency per message, for the ``dev`` and ``held_out`` splits and for all of it.

The set (``set.jsonl``, one JSON object a line) holds requests::

    {"id": "r001", "split": "dev", "text": "...", "media": [{"ref": "...", "source": "attachment"}],
     "expect": {"kind": "plan", "chain": ["sdxl-txt2img", "upscale-4x"], "params": {"scale": 4}}}

(``kind`` is ``plan``, ``question`` with ``question`` and optionally ``tool``, or ``abstain``) and
dialogues ``{"id": "d01", "split": ..., "type": "dialogue", "turns": [{"text", "seed", "media",
"expect"}]}`` whose turns are planned in order, each with the previous turn's plan as the prior.
A turn's ``expect`` may add ``prompt_has`` / ``prompt_lacks``: words the plan's prompt must
(not) contain. A parameter expected as ``"*"`` must be stated with any value.

Definitions: **top-k retrieval** — every tool of the expected chain is among the retriever's
first ``k + len(chain) - 1`` tools for the request (requests expecting a plan). **Exact chain**
— the plan's tools in order equal the expected ones. **Parameter accuracy** — the share of
expected (name, value) pairs the plan states equally. **Abstention** — the share of
out-of-scope requests declined; **false abstention** — the share of in-scope requests (plans
and questions) declined. **Dialogue step accuracy** — the share of turns whose decision
matches in every expected respect. Latency is the wall time of one ``decide`` call.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from swarmstation.domain.agent.types import (
    Abstain,
    CatalogTool,
    Context,
    Decision,
    MediaRef,
    PriorPlan,
    Proposal,
    Question,
    Retriever,
)
from swarmstation.domain.errors import InvalidInput

__all__ = [
    "SPLITS",
    "TARGETS",
    "SetError",
    "bundled_catalog",
    "default_set_path",
    "evaluate",
    "load_set",
]

SPLITS = ("dev", "held_out")
#: The offline mode's targets (issue 16).
TARGETS = {
    "top3": 0.95,
    "exact_chain": 0.75,
    "abstention": 0.8,
    "false_abstention_max": 0.05,
    "latency_p95_ms_max": 100.0,
}

DecideFn = Callable[..., Decision]


class SetError(InvalidInput):
    """The set file is not valid: which line and why."""

    code = "invalid_eval_set"


def default_set_path() -> Path:
    return Path(str(resources.files("swarmstation.agent_eval").joinpath("set.jsonl")))


def load_set(path: Path) -> list[dict[str, Any]]:
    """The set's records; raises SetError naming the line of a bad one."""
    records: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SetError(f"{path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise SetError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(record, dict):
            raise SetError(f"{path}:{number}: expected an object")
        if record.get("split") not in SPLITS:
            raise SetError(f"{path}:{number}: split must be one of {', '.join(SPLITS)}")
        if record.get("type") == "dialogue":
            turns = record.get("turns")
            if not isinstance(turns, list) or not turns:
                raise SetError(f"{path}:{number}: a dialogue needs turns")
            for turn in turns:
                _check_turn(turn, f"{path}:{number}")
        else:
            _check_turn(record, f"{path}:{number}")
        records.append(record)
    return records


def _check_turn(turn: object, where: str) -> None:
    if not isinstance(turn, dict) or not isinstance(turn.get("text"), str):
        raise SetError(f"{where}: each request needs a text")
    expect = turn.get("expect")
    if not isinstance(expect, dict) or expect.get("kind") not in ("plan", "question", "abstain"):
        raise SetError(f"{where}: expect.kind must be plan, question or abstain")
    if expect["kind"] == "plan" and not isinstance(expect.get("chain"), list):
        raise SetError(f"{where}: a plan expectation needs a chain")


def bundled_catalog() -> list[CatalogTool]:
    """The bundled ComfyUI tools and the local tools, all counted as available: the evaluation
    measures understanding, not this machine's configuration."""
    from swarmstation.catalog import bundled_tools
    from swarmstation.control.agent_catalog import catalog_from_specs
    from swarmstation.localtools.registry import local_tools

    return catalog_from_specs([*bundled_tools(), *(t.spec for t in local_tools().values())])


def _media(raw: object) -> tuple[MediaRef, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(
        MediaRef(ref=str(m["ref"]), source="output" if m.get("source") == "output" else "attachment")
        for m in raw
        if isinstance(m, dict) and "ref" in m
    )


def _same(a: Any, b: Any) -> bool:
    if b == "*":
        return a is not None
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def _prompt_text(pipeline: Mapping[str, Any]) -> str:
    texts = []
    for step in (pipeline.get("steps") or {}).values():
        for name in ("prompt", "idea"):
            value = (step.get("inputs") or {}).get(name)
            if isinstance(value, str):
                texts.append(value)
    return " ".join(texts).lower()


@dataclass
class _Outcome:
    """One decided request against its expectation."""

    expect: Mapping[str, Any]
    decision: Decision
    ms: float
    chain_ok: bool = False
    params_total: int = 0
    params_ok: int = 0
    match: bool = False
    problems: list[str] = field(default_factory=list)


def _judge(expect: Mapping[str, Any], decision: Decision, ms: float) -> _Outcome:
    out = _Outcome(expect, decision, ms)
    kind = expect["kind"]
    if kind == "abstain":
        out.match = isinstance(decision, Abstain)
        if not out.match:
            out.problems.append(f"expected to abstain, got {_describe(decision)}")
        return out
    if kind == "question":
        ok = isinstance(decision, Question) and decision.kind == expect.get("question")
        if ok and expect.get("tool") is not None:
            ok = isinstance(decision, Question) and decision.tool == expect["tool"]
        out.match = ok
        if not ok:
            want = f"question {expect.get('question')}" + (
                f" about {expect['tool']}" if expect.get("tool") else ""
            )
            out.problems.append(f"expected {want}, got {_describe(decision)}")
        return out
    expected_chain = tuple(expect.get("chain") or ())
    params: Mapping[str, Any] = expect.get("params") or {}
    out.params_total = len(params)
    if isinstance(decision, Proposal):
        out.chain_ok = tuple(decision.chain) == expected_chain
        for name, value in params.items():
            if _same(decision.params.get(name), value):
                out.params_ok += 1
            else:
                out.problems.append(f"param {name}: expected {value!r}, got {decision.params.get(name)!r}")
        prompt = _prompt_text(decision.pipeline)
        for word in expect.get("prompt_has") or ():
            if word.lower() not in prompt:
                out.problems.append(f"prompt lacks {word!r}: {prompt!r}")
        for word in expect.get("prompt_lacks") or ():
            if word.lower() in prompt:
                out.problems.append(f"prompt still has {word!r}: {prompt!r}")
        if not out.chain_ok:
            out.problems.insert(0, f"chain {list(decision.chain)} != {list(expected_chain)}")
    else:
        out.problems.append(f"expected a plan {list(expected_chain)}, got {_describe(decision)}")
    out.match = out.chain_ok and not out.problems
    return out


def _describe(decision: Decision) -> str:
    if isinstance(decision, Proposal):
        return f"plan {list(decision.chain)}"
    if isinstance(decision, Question):
        return f"question {decision.kind}" + (f" about {decision.tool}" if decision.tool else "")
    return f"abstain ({decision.reason})"


def _retrieval_hits(
    text: str, chain: Sequence[str], catalog: Sequence[CatalogTool], retriever: Retriever
) -> tuple[bool, bool]:
    ranked = [r.slug for r in retriever.rank(text, catalog, limit=len(catalog))]
    extra = max(0, len(set(chain)) - 1)
    return all(t in ranked[: 1 + extra] for t in chain), all(t in ranked[: 3 + extra] for t in chain)


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, math.ceil(q * len(ordered)) - 1)
    return round(ordered[index], 3)


def _timed(
    decide_fn: DecideFn, text: str, context: Context, retriever: Retriever | None
) -> tuple[Decision, float]:
    start = time.perf_counter()
    decision = decide_fn(text, context, retriever=retriever)
    return decision, (time.perf_counter() - start) * 1000.0


def evaluate(
    records: Iterable[Mapping[str, Any]],
    catalog: Sequence[CatalogTool],
    *,
    decide_fn: DecideFn | None = None,
    retriever: Retriever | None = None,
) -> dict[str, Any]:
    """The figures for each split and for all records, and the failures (id, text, problems)."""
    from swarmstation.domain.agent import decide
    from swarmstation.domain.agent.lexical import LexicalRetriever

    decide_fn = decide_fn or decide
    ranker: Retriever = retriever or LexicalRetriever()
    per_split: dict[str, dict[str, Any]] = {s: _empty() for s in (*SPLITS, "all")}
    failures: list[dict[str, Any]] = []
    for record in records:
        buckets = [per_split[record["split"]], per_split["all"]]
        if record.get("type") == "dialogue":
            prior: PriorPlan | None = None
            for index, turn in enumerate(record["turns"]):
                context = Context(
                    catalog=catalog,
                    media=_media(turn.get("media")),
                    prior=prior,
                    seed=int(turn.get("seed", 0)),
                )
                decision, ms = _timed(decide_fn, turn["text"], context, retriever)
                outcome = _judge(turn["expect"], decision, ms)
                for b in buckets:
                    b["turns"] += 1
                    b["turns_ok"] += outcome.match
                    b["latency"].append(ms)
                if not outcome.match:
                    failures.append(
                        {
                            "id": f"{record['id']}#{index + 1}",
                            "split": record["split"],
                            "text": turn["text"],
                            "problems": outcome.problems,
                        }
                    )
                if isinstance(decision, Proposal):
                    prior = PriorPlan(pipeline=decision.pipeline, chain=tuple(decision.chain))
            continue
        context = Context(catalog=catalog, media=_media(record.get("media")), seed=int(record.get("seed", 0)))
        decision, ms = _timed(decide_fn, record["text"], context, retriever)
        outcome = _judge(record["expect"], decision, ms)
        kind = record["expect"]["kind"]
        top1 = top3 = False
        if kind == "plan":
            top1, top3 = _retrieval_hits(record["text"], record["expect"]["chain"], catalog, ranker)
        for b in buckets:
            b["requests"] += 1
            b["latency"].append(ms)
            b["matched"] += outcome.match
            if kind == "plan":
                b["plans"] += 1
                b["top1"] += top1
                b["top3"] += top3
                b["chain_ok"] += outcome.chain_ok
                b["params_total"] += outcome.params_total
                b["params_ok"] += outcome.params_ok
            if kind == "question":
                b["questions"] += 1
                b["questions_ok"] += outcome.match
            if kind == "abstain":
                b["out_of_scope"] += 1
                b["abstained"] += isinstance(decision, Abstain)
            else:
                b["in_scope"] += 1
                b["false_abstained"] += isinstance(decision, Abstain)
        if not outcome.match:
            failures.append(
                {
                    "id": record["id"],
                    "split": record["split"],
                    "text": record["text"],
                    "problems": outcome.problems,
                }
            )
    return {"splits": {name: _figures(b) for name, b in per_split.items()}, "failures": failures}


def _empty() -> dict[str, Any]:
    keys = ("requests", "matched", "plans", "top1", "top3", "chain_ok", "params_total", "params_ok",
            "questions", "questions_ok", "out_of_scope", "abstained", "in_scope", "false_abstained", "turns",
            "turns_ok")  # fmt: skip
    data: dict[str, Any] = dict.fromkeys(keys, 0)
    data["latency"] = []
    return data


def _figures(b: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "requests": b["requests"],
        "dialogue_turns": b["turns"],
        "top1_retrieval": _ratio(b["top1"], b["plans"]),
        "top3_retrieval": _ratio(b["top3"], b["plans"]),
        "exact_chain": _ratio(b["chain_ok"], b["plans"]),
        "parameter_accuracy": _ratio(b["params_ok"], b["params_total"]),
        "question_accuracy": _ratio(b["questions_ok"], b["questions"]),
        "abstention_rate": _ratio(b["abstained"], b["out_of_scope"]),
        "false_abstention_rate": _ratio(b["false_abstained"], b["in_scope"]),
        "decision_accuracy": _ratio(b["matched"], b["requests"]),
        "dialogue_step_accuracy": _ratio(b["turns_ok"], b["turns"]),
        "latency_ms": {"p50": _percentile(b["latency"], 0.5), "p95": _percentile(b["latency"], 0.95)},
        "counts": {
            "plans": b["plans"],
            "questions": b["questions"],
            "out_of_scope": b["out_of_scope"],
            "parameters": b["params_total"],
        },
    }
