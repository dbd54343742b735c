"""``swarmstation simulate``: run the policies over a trace, or sweep the pool's knobs.

swarmstation simulate run --preset large --days 1 --seed 1 --out sim-out
swarmstation simulate run --trace jobs.json --out sim-out        # a `swarmstation jobs export` file
swarmstation simulate sweep --preset prior --days 14 --target-p95 60
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from swarmstation.sim import config as sim_config
from swarmstation.sim import engine, report
from swarmstation.sim import sweep as sweep_mod
from swarmstation.sim import trace as trace_mod

sim_app = typer.Typer(
    help="Simulate the pool against the alternatives on a trace (virtual clock).", no_args_is_help=True
)
console = Console(stderr=True)

PresetOpt = Annotated[str, typer.Option("--preset", help="Trace preset: prior | large.")]
TraceOpt = Annotated[
    Path | None,
    typer.Option("--trace", help="A trace file: JSON lines (trace save format) or a JSON job export."),
]
DaysOpt = Annotated[float, typer.Option("--days", help="Days of generated trace.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the trace and the marketplace.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder for report.md, report.json and the plots.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the results as JSON.")]
InterruptibleOpt = Annotated[
    bool, typer.Option("--interruptible", help="The pool rents interruptible (bid) instances.")
]


def _load_trace(preset: str, trace: Path | None, days: float, seed: int) -> trace_mod.Trace:
    if trace is not None:
        if not trace.is_file():
            raise typer.BadParameter(f"no such file: {trace}", param_hint="--trace")
        text = trace.read_text(encoding="utf-8").lstrip()
        return (
            trace_mod.load_job_export(trace) if text.startswith(("[", '{"jobs"')) else trace_mod.load(trace)
        )
    if preset not in trace_mod.PRESETS:
        raise typer.BadParameter(f"unknown preset {preset!r}; choose one of {', '.join(trace_mod.PRESETS)}")
    if days <= 0:
        raise typer.BadParameter("must be positive", param_hint="--days")
    return trace_mod.generate(preset, days=days, seed=seed)


@sim_app.command("run")
def run_cmd(
    preset: PresetOpt = "prior",
    trace: TraceOpt = None,
    days: DaysOpt = 1.0,
    seed: SeedOpt = 0,
    out: OutOpt = Path("sim-out"),
    as_json: JsonOpt = False,
    save_trace: Annotated[
        Path | None, typer.Option("--save-trace", help="Also write the trace (JSON lines).")
    ] = None,
    idle_minutes: Annotated[float | None, typer.Option("--idle-minutes", min=0.0)] = None,
    min_instances: Annotated[int | None, typer.Option("--min-instances", min=0)] = None,
    scale_up_threshold: Annotated[int | None, typer.Option("--scale-up-threshold", min=1)] = None,
    target_wait: Annotated[float | None, typer.Option("--target-wait", min=1.0)] = None,
    max_delay: Annotated[float | None, typer.Option("--max-delay", min=0.0)] = None,
    target_utilisation: Annotated[
        float | None,
        typer.Option(
            "--target-utilisation", min=0.0, max=1.0, help="Scale down to this utilisation; 0 = off."
        ),
    ] = None,
    max_parked: Annotated[
        int | None, typer.Option("--max-parked", min=0, help="Parked (stopped) instances kept.")
    ] = None,
    interruptible: InterruptibleOpt = False,
) -> None:
    """Every policy over the same trace; writes a Markdown/JSON table and PNG plots.

    The pool options set ``ours`` (and its no-cache-affinity twin), e.g. to what ``sweep`` recommends."""
    tr = _load_trace(preset, trace, days, seed)
    knobs: dict[str, float | None] = {
        "idle-minutes": idle_minutes,
        "min-instances": min_instances,
        "scale-up-threshold": scale_up_threshold,
        "target-wait": target_wait,
        "max-delay": max_delay,
        "target-utilisation": target_utilisation,
    }
    config = sim_config.with_knobs(
        sim_config.SimConfig(),
        idle_minutes=idle_minutes,
        min_instances=min_instances,
        target_wait_seconds=target_wait,
        max_delay_seconds=max_delay,
        scale_up_queue_threshold=scale_up_threshold,
        target_utilisation=target_utilisation,
        max_parked=max_parked,
    )
    config = replace(config, interruptible=interruptible)
    knobs["max-parked"] = max_parked
    options = "".join(f" --{k} {v:g}" for k, v in knobs.items() if v is not None)
    options += " --interruptible" if interruptible else ""
    if save_trace is not None:
        trace_mod.save(tr, save_trace)
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description:<24}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), console=console, transient=as_json,
    ) as bar:  # fmt: skip
        tasks = {p: bar.add_task(p, total=1.0) for p in engine.POLICIES}

        def progress(policy: str, frac: float) -> None:
            bar.update(tasks[policy], completed=frac)

        results = engine.simulate_all(tr, config, seed=seed, progress=progress)
    elapsed = time.perf_counter() - started
    label = tr.preset or "trace"
    meta = {
        "trace": tr.name,
        "jobs": len(tr.jobs),
        "days": tr.days,
        "seed": seed,
        "command": (
            f"swarmstation simulate run --preset {preset} --days {days:g} --seed {seed}{options} --out {out}"
            if trace is None
            else f"swarmstation simulate run --trace {trace} --seed {seed}{options} --out {out}"
        ),
        "pool": sim_config.asdict_pool(config),
        "wall_seconds": round(elapsed, 2),
    }
    rows = report.table(results)
    targets = report.evaluate_targets(rows, label)
    paths = report.write_report(results, out, title=f"Simulation: {tr.name}", meta=meta, targets=targets)
    if as_json:
        typer.echo(json.dumps({"meta": meta, "results": rows, "targets": targets,
                               "files": {k: str(v) for k, v in paths.items()}}, indent=2))  # fmt: skip
        return
    out_console = Console()
    table = Table(title=f"{tr.name}: {len(tr.jobs)} jobs, simulated in {elapsed:.1f}s")
    for _, lbl in report.COLUMNS:
        table.add_column(lbl)
    for row in rows:
        table.add_row(*(report._cell(row.get(k)) for k, _ in report.COLUMNS))
    out_console.print(table)
    for line in targets:
        out_console.print(f"- {line}")
    out_console.print(f"wrote {', '.join(str(p) for p in paths.values())}")


@sim_app.command("sweep")
def sweep_cmd(
    preset: PresetOpt = "prior",
    trace: TraceOpt = None,
    days: DaysOpt = 1.0,
    seed: SeedOpt = 0,
    target_p95: Annotated[float, typer.Option("--target-p95", help="p95 wait target in seconds.")] = 60.0,
    quick: Annotated[bool, typer.Option("--quick", help="A smaller grid.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write sweep.json here.")] = None,
    as_json: JsonOpt = False,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Parallel processes (default: one per CPU).")
    ] = None,
    interruptible: InterruptibleOpt = False,
) -> None:
    """Recommend pool settings: the lowest cost whose p95 wait meets the target."""
    tr = _load_trace(preset, trace, days, seed)
    grid = sweep_mod.QUICK_GRID if quick else sweep_mod.DEFAULT_GRID
    with Progress(
        TextColumn("sweep"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
        console=console, transient=as_json,
    ) as bar:  # fmt: skip
        task = bar.add_task("sweep", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = sweep_mod.sweep(
            tr,
            target_p95_s=target_p95,
            grid=grid,
            seed=seed,
            progress=progress,
            workers=workers,
            config=sim_config.SimConfig(interruptible=interruptible),
        )
    payload = {"trace": tr.name, "jobs": len(tr.jobs), "seed": seed, **result.as_dict()}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "sweep.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    c = Console()
    best = result.best.as_dict() if result.best else None
    state = "meets" if result.met else "does NOT meet (lowest p95 shown)"
    c.print(f"{len(result.points)} settings tried on {tr.name}; recommended ({state} p95 ≤ {target_p95:g}s):")
    c.print(best)
