"""`swarmstation eval-agent`: the chat agent's understanding measured on the labelled set
(swarmstation/agent_eval/set.jsonl): retrieval, chains, parameters, abstention, dialogues and
latency per message, for the dev and held-out splits and for all of it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from swarmstation.cli.common import JsonOpt, console, err, print_json

app = typer.Typer()


@app.command("eval-agent")
def eval_agent(
    set_file: Annotated[
        Path | None, typer.Option("--set", help="A set file (JSON lines); default: the bundled set")
    ] = None,
    mode: Annotated[str, typer.Option("--mode", help="offline (no LLM) or llm")] = "offline",
    failures: Annotated[
        str | None,
        typer.Option("--failures", help="Also list the failures of this split (dev, held_out, all)"),
    ] = None,
    embeddings: Annotated[
        bool, typer.Option("--embeddings", help="Lexical plus MiniLM embeddings (the embeddings extra)")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure the agent's planner on the labelled set (targets: top-3 ≥ 0.95, exact chain ≥ 0.75,
    abstention ≥ 0.8 with false abstention ≤ 0.05, p95 latency ≤ 100 ms)."""
    from swarmstation.agent_eval.evaluate import (
        TARGETS,
        SetError,
        bundled_catalog,
        default_set_path,
        evaluate,
        load_set,
    )

    if mode not in ("offline", "llm"):
        err.print(f"--mode must be offline or llm, not {mode!r}")
        raise typer.Exit(2)
    if failures is not None and failures not in ("dev", "held_out", "all"):
        err.print(f"--failures must be dev, held_out or all, not {failures!r}")
        raise typer.Exit(2)
    decider = None
    if mode == "llm":
        if not os.environ.get("SWARMSTATION_LLM_BASE_URL"):
            err.print(
                "no LLM configured: set SWARMSTATION_LLM_BASE_URL (and SWARMSTATION_LLM_MODEL) for --mode llm"
            )
            raise typer.Exit(1)
        from swarmstation.agent_eval.llm_mode import LLMDecider
        from swarmstation.config import Settings

        decider = LLMDecider.from_settings(Settings())
    path = set_file or default_set_path()
    try:
        records = load_set(path)
    except SetError as exc:
        err.print(str(exc))
        raise typer.Exit(2) from None
    retriever = None
    if embeddings:
        from swarmstation.agent_embed import EmbeddingsUnavailable, load_retriever

        try:
            retriever = load_retriever()
        except EmbeddingsUnavailable as exc:
            err.print(str(exc))
            raise typer.Exit(1) from None
    try:
        result = evaluate(records, bundled_catalog(), retriever=retriever, decide_fn=decider)
    finally:
        if decider is not None:
            decider.endpoint.close()
    report: dict[str, Any] = {
        "mode": mode,
        "retriever": "hybrid (lexical + MiniLM embeddings)" if embeddings else "lexical",
        "set": str(path),
        "targets": TARGETS,
        "splits": result["splits"],
    }
    if decider is not None:
        # the LLM mode: which model, and the messages the endpoint failed on (judged as declined)
        report["model"] = decider.settings.llm_model
        report["llm_errors"] = len(decider.errors)
        report["llm_error_examples"] = sorted(set(decider.errors))[:5]
    if failures is not None:
        report["failures"] = [f for f in result["failures"] if failures == "all" or f["split"] == failures]
    if as_json:
        print_json(report)
        return
    _table(report)


def _table(report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"eval-agent ({report['mode']}, {report['retriever']} retrieval)")
    rows = [
        ("top-1 retrieval", "top1_retrieval"),
        ("top-3 retrieval", "top3_retrieval"),
        ("exact chain", "exact_chain"),
        ("parameter accuracy", "parameter_accuracy"),
        ("question accuracy", "question_accuracy"),
        ("abstention (out of scope)", "abstention_rate"),
        ("false abstention", "false_abstention_rate"),
        ("dialogue step accuracy", "dialogue_step_accuracy"),
    ]
    splits = report["splits"]
    table.add_column("figure")
    for name in splits:
        table.add_column(f"{name} ({splits[name]['requests']}+{splits[name]['dialogue_turns']})")
    for label, key in rows:
        table.add_row(label, *(_fmt(splits[name][key]) for name in splits))
    table.add_row(
        "latency p50 / p95 ms",
        *(f"{splits[n]['latency_ms']['p50']} / {splits[n]['latency_ms']['p95']}" for n in splits),
    )
    console.print(table)
    for failure in report.get("failures", []):
        sys.stdout.write(
            f"{failure['id']} [{failure['split']}] {failure['text']!r}: {'; '.join(failure['problems'])}\n"
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
