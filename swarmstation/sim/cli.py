"""``swarmstation simulate``: run the policies over a trace, or sweep the pool's knobs.

swarmstation simulate run --preset large --days 1 --seed 1 --out sim-out
swarmstation simulate run --trace jobs.json --out sim-out        # a `swarmstation jobs export` file
swarmstation simulate sweep --preset prior --days 14 --target-p95 60 --seeds 1-2 --out tuned
swarmstation simulate run --preset prior --days 14 --seeds 11-15 --knobs-from tuned/sweep.json --report
swarmstation simulate sensitivity --preset large --days 0.25 --seeds 11-12
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
from swarmstation.sim import evaluate as eval_mod
from swarmstation.sim import market as market_mod
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
MarketOpt = Annotated[
    str, typer.Option("--market", help="Marketplace preset: optimistic | observed (sources: ASSUMPTIONS).")
]
SeedsOpt = Annotated[
    str | None,
    typer.Option("--seeds", help="Several seeds (each a fresh trace and market draws): '11-15' or '1,2,7'."),
]


def _seeds(text: str | None, seed: int) -> list[int]:
    if text is None:
        return [seed]
    try:
        return eval_mod.parse_seeds(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--seeds") from exc


def _base_config(market: str, interruptible: bool) -> sim_config.SimConfig:
    if market not in market_mod.MARKETS:
        raise typer.BadParameter(
            f"unknown market {market!r}; choose one of {', '.join(market_mod.MARKETS)}", param_hint="--market"
        )
    return sim_config.SimConfig(
        market=market_mod.MARKETS[market], market_preset=market, interruptible=interruptible
    )


_KNOB_NAMES = sweep_mod.KNOBS


def _tuned_knobs(
    path: Path, preset: str, trace: Path | None, days: float, seeds: list[int]
) -> dict[str, float]:
    """The recommended knobs of a ``sweep --out`` file; refuses to evaluate on a seed it was tuned on."""
    if not path.is_file():
        raise typer.BadParameter(f"no such file: {path}", param_hint="--knobs-from")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        best = data["recommended"] or {}
        tuned = data.get("tuned_on") or {}
    except (ValueError, KeyError, TypeError) as exc:
        raise typer.BadParameter(f"not a sweep.json: {exc}", param_hint="--knobs-from") from exc
    same_trace = tuned.get("trace_file") == (str(trace) if trace else None) and (
        trace is not None or (tuned.get("preset") == preset and tuned.get("days") == days)
    )
    overlap = sorted(set(seeds) & set(tuned.get("seeds") or []))
    if same_trace and overlap:
        raise typer.BadParameter(
            f"seeds {overlap} are the ones {path} was tuned on: evaluate on held-out seeds",
            param_hint="--seeds",
        )
    return {k: float(best[k]) for k in _KNOB_NAMES if best.get(k) is not None}


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
    prewarm: Annotated[
        bool | None,
        typer.Option("--prewarm/--no-prewarm", help="Pre-warm ahead of the forecast (domain/forecast.py)."),
    ] = None,
    prebuilt_image: Annotated[
        bool | None,
        typer.Option(
            "--prebuilt-image/--plain-image", help="Instances run a prebuilt image (models baked in)."
        ),
    ] = None,
    market: MarketOpt = "optimistic",
    seeds: SeedsOpt = None,
    knobs_from: Annotated[
        Path | None,
        typer.Option(
            "--knobs-from", help="Use the knobs a `sweep --out` recommended (not on its tuning seeds)."
        ),
    ] = None,
    write_report: Annotated[
        bool,
        typer.Option(
            "--report/--no-report", help="Write report.md/json and plots (with --seeds: heldout.md/json)."
        ),
    ] = True,
    managed_concurrency: Annotated[
        int | None,
        typer.Option("--managed-concurrency", min=1, help="Managed containers at once (default unbounded)."),
    ] = None,
    policies: Annotated[
        str | None,
        typer.Option("--policies", help="Comma-separated policies to run (default: all of them)."),
    ] = None,
    managed_speed: Annotated[
        float | None,
        typer.Option("--managed-speed", min=0.1, help="Managed GPU run time / ours (default 1.0)."),
    ] = None,
    replace_overdue: Annotated[
        bool | None,
        typer.Option(
            "--replace-overdue-resumes/--no-replace-overdue-resumes",
            help="Replace a resume past the bound from past resumes (Settings.pool_replace_overdue_resumes).",
        ),
    ] = None,
) -> None:
    """Every policy over the same trace; writes a Markdown/JSON table and PNG plots.

    The pool options set ``ours`` (and its no-cache-affinity twin), e.g. to what ``sweep`` recommends
    (``--knobs-from``). With ``--seeds``, every policy runs on each seed's trace and the report gives
    mean ± spread (held-out evaluation)."""
    seed_list = _seeds(seeds, seed)
    chosen = tuple(engine.POLICIES)
    if policies is not None:
        chosen = tuple(p.strip() for p in policies.split(",") if p.strip())
        unknown = [p for p in chosen if p not in engine.POLICIES]
        if unknown or not chosen:
            raise typer.BadParameter(
                f"unknown policies {unknown}; choose from {', '.join(engine.POLICIES)}",
                param_hint="--policies",
            )
    tuned: dict[str, float] = {}
    if knobs_from is not None:
        tuned = _tuned_knobs(knobs_from, preset, trace, days, seed_list)
    if idle_minutes is None and "idle_minutes" in tuned:
        idle_minutes = tuned["idle_minutes"]
    if min_instances is None and "min_instances" in tuned:
        min_instances = int(tuned["min_instances"])
    if scale_up_threshold is None and "scale_up_queue_threshold" in tuned:
        scale_up_threshold = int(tuned["scale_up_queue_threshold"])
    if target_wait is None and "target_wait_seconds" in tuned:
        target_wait = tuned["target_wait_seconds"]
    if max_delay is None and "max_delay_seconds" in tuned:
        max_delay = tuned["max_delay_seconds"]
    if target_utilisation is None and "target_utilisation" in tuned:
        target_utilisation = tuned["target_utilisation"]
    if max_parked is None and "max_parked" in tuned:
        max_parked = int(tuned["max_parked"])
    if prewarm is None and "prewarm" in tuned:
        prewarm = bool(tuned["prewarm"])
    if prebuilt_image is None and "prebuilt_image" in tuned:
        prebuilt_image = bool(tuned["prebuilt_image"])
    base = _base_config(market, interruptible)
    managed_changes: dict[str, float | int] = {}
    if managed_concurrency is not None:
        managed_changes["max_concurrency"] = managed_concurrency
    if managed_speed is not None:
        managed_changes["run_speed_factor"] = managed_speed
    if managed_changes:
        base = replace(base, managed=replace(base.managed, **managed_changes))  # type: ignore[arg-type]
    if replace_overdue is not None:
        base = replace(base, replace_overdue_resumes=replace_overdue)
    tr = _load_trace(preset, trace, days, seed_list[0])
    knobs: dict[str, float | None] = {
        "idle-minutes": idle_minutes,
        "min-instances": min_instances,
        "scale-up-threshold": scale_up_threshold,
        "target-wait": target_wait,
        "max-delay": max_delay,
        "target-utilisation": target_utilisation,
    }
    config = sim_config.with_knobs(
        base,
        idle_minutes=idle_minutes,
        min_instances=min_instances,
        target_wait_seconds=target_wait,
        max_delay_seconds=max_delay,
        scale_up_queue_threshold=scale_up_threshold,
        target_utilisation=target_utilisation,
        max_parked=max_parked,
        prewarm=prewarm,
        prebuilt_image=prebuilt_image,
    )
    forecast_knobs = {k: v for k, v in tuned.items() if k.startswith("prewarm_")}
    if forecast_knobs:
        config = sweep_mod.apply(config, forecast_knobs)
    knobs["max-parked"] = max_parked
    options = "".join(f" --{k} {v:g}" for k, v in knobs.items() if v is not None)
    options += " --interruptible" if interruptible else ""
    options += "" if prewarm is None else (" --prewarm" if prewarm else " --no-prewarm")
    options += "" if prebuilt_image is None else (" --prebuilt-image" if prebuilt_image else " --plain-image")
    options += f" --market {market}"
    if managed_concurrency is not None:
        options += f" --managed-concurrency {managed_concurrency}"
    if managed_speed is not None:
        options += f" --managed-speed {managed_speed:g}"
    if replace_overdue is not None:
        options += " --replace-overdue-resumes" if replace_overdue else " --no-replace-overdue-resumes"
    if policies is not None:
        options += f" --policies {','.join(chosen)}"
    if seeds is not None:
        _run_seeds(
            preset, trace, days, seed_list, config, options, out, as_json, write_report, knobs_from, chosen
        )
        return
    if save_trace is not None:
        trace_mod.save(tr, save_trace)
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description:<24}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), console=console, transient=as_json,
    ) as bar:  # fmt: skip
        tasks = {p: bar.add_task(p, total=1.0) for p in chosen}

        def progress(policy: str, frac: float) -> None:
            bar.update(tasks[policy], completed=frac)

        results = engine.simulate_all(tr, config, seed=seed_list[0], policies=chosen, progress=progress)
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
    paths = (
        report.write_report(results, out, title=f"Simulation: {tr.name}", meta=meta, targets=targets)
        if write_report
        else {}
    )
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


def _run_seeds(
    preset: str,
    trace: Path | None,
    days: float,
    seeds: list[int],
    config: sim_config.SimConfig,
    options: str,
    out: Path,
    as_json: bool,
    write: bool,
    knobs_from: Path | None,
    policies: tuple[str, ...],
) -> None:
    started = time.perf_counter()
    seeds_text = ",".join(map(str, seeds))

    def progress(seed: int, policy: str) -> None:
        if not as_json:
            console.print(f"seed {seed}: {policy}")

    data = eval_mod.evaluate(
        lambda s: _load_trace(preset, trace, days, s), config, seeds, policies, progress=progress
    )
    where = f"--trace {trace}" if trace is not None else f"--preset {preset} --days {days:g}"
    tuned = f" --knobs-from {knobs_from}" if knobs_from is not None else ""
    meta = {
        "command": f"swarmstation simulate run {where} --seeds {seeds_text}{options}{tuned} --out {out}",
        "seeds": seeds,
        "pool": sim_config.asdict_pool(config),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    payload = {"meta": meta, **data}
    md = eval_mod.summary_markdown(data["summary"], seeds)
    if write:
        out.mkdir(parents=True, exist_ok=True)
        (out / "heldout.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
        lines = [
            f"# Held-out evaluation ({where})",
            "",
            f"- command: {meta['command']}",
            "",
            md,
            "## Targets",
            "",
        ]
        for s, ts in data["targets"].items():
            lines.extend(f"- seed {s}: {t}" for t in ts)
        (out / "heldout.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    c = Console()
    c.print(md)
    for s, ts in data["targets"].items():
        for t in ts:
            c.print(f"- seed {s}: {t}")


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
    market: MarketOpt = "optimistic",
    seeds: SeedsOpt = None,
    grid_json: Annotated[
        str | None,
        typer.Option("--grid", help='Knobs to add or replace, JSON: {"prewarm_min_arrivals": [0.25, 1]}.'),
    ] = None,
) -> None:
    """Recommend pool settings: the lowest cost whose p95 wait meets the target (mean over the
    tuning ``--seeds``). sweep.json records them: `run --knobs-from` refuses to evaluate on them."""
    seed_list = _seeds(seeds, seed)
    base = _base_config(market, interruptible)
    runs = [(_load_trace(preset, trace, days, s), s) for s in seed_list]
    tr = runs[0][0]
    grid = dict(sweep_mod.QUICK_GRID if quick else sweep_mod.DEFAULT_GRID)
    if grid_json is not None:
        try:
            extra = json.loads(grid_json)
            assert isinstance(extra, dict) and all(isinstance(v, list) and v for v in extra.values())
            grid.update({str(k): tuple(float(x) for x in v) for k, v in extra.items()})
        except (ValueError, AssertionError, TypeError) as exc:
            raise typer.BadParameter(
                f"not a JSON object of lists of numbers: {exc}", param_hint="--grid"
            ) from exc
        unknown = sorted(set(grid) - set(sweep_mod.KNOBS))
        if unknown:
            raise typer.BadParameter(f"unknown knobs {unknown}", param_hint="--grid")
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
            config=base,
            runs=runs,
        )
    tuned_on = {
        "preset": None if trace is not None else preset,
        "trace_file": str(trace) if trace is not None else None,
        "days": days,
        "seeds": seed_list,
        "market": market,
    }
    payload = {"trace": tr.name, "jobs": len(tr.jobs), "seed": seed_list[0], "tuned_on": tuned_on,
               **result.as_dict()}  # fmt: skip
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


@sim_app.command("sensitivity")
def sensitivity_cmd(
    preset: PresetOpt = "large",
    trace: TraceOpt = None,
    days: DaysOpt = 0.25,
    seed: SeedOpt = 11,
    seeds: SeedsOpt = None,
    market: MarketOpt = "optimistic",
    out: Annotated[Path | None, typer.Option("--out", help="Write sensitivity.json and .md here.")] = None,
    as_json: JsonOpt = False,
    knobs_from: Annotated[
        Path | None,
        typer.Option("--knobs-from", help="Run ours with the knobs a `sweep --out` recommended."),
    ] = None,
) -> None:
    """Each assumption (market and managed service) x0.5 and x2: how ours, managed and the
    whole-GPU reference (blocks-300s) move (mean $ / 1,000 images and p95 wait over the seeds)."""
    seed_list = _seeds(seeds, seed)
    base = _base_config(market, False)
    tuned = ""
    if knobs_from is not None:
        base = sweep_mod.apply(base, _tuned_knobs(knobs_from, preset, trace, days, seed_list))
        tuned = f" --knobs-from {knobs_from}"

    def progress(label: str) -> None:
        if not as_json:
            console.print(label)

    data = eval_mod.sensitivity(
        lambda s: _load_trace(preset, trace, days, s), base, seed_list, progress=progress
    )
    where = f"--trace {trace}" if trace is not None else f"--preset {preset} --days {days:g}"
    data["command"] = (
        f"swarmstation simulate sensitivity {where} --seeds {','.join(map(str, seed_list))} "
        f"--market {market}{tuned}"
    )
    data["pool"] = sim_config.asdict_pool(base)
    md = eval_mod.sensitivity_markdown(data)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "sensitivity.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
        (out / "sensitivity.md").write_text(f"`{data['command']}`\n\n{md}", encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    Console().print(md)
