"""`swarmstation pipelines`: validate, save, list, show and run pipelines.

`run` posts `/v1/runs` and follows the run's event stream (`/v1/runs/{id}/events`: `step` events
`{step, state, ...}`, `job` events `{step, job_id, state, progress}`, `state` events `{state}`),
drawing one progress row per step on stderr; the summary (each step's state, cost and time, then
the outputs) goes to stdout. A run that ends FAILED or CANCELLED exits 1 with its reason."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from swarmstation.cli.common import (
    ClientCommand,
    JsonOpt,
    call,
    connect,
    console,
    err,
    fail,
    parse_inputs,
    print_json,
)
from swarmstation.client import Client, ClientError, SseEvent
from swarmstation.domain.backoff import backoff_delay

app = typer.Typer(no_args_is_help=True, help="Validate, save, list, show and run pipelines")

TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
VISIBILITIES = ("private", "unlisted", "public")

FileArg = Annotated[Path, typer.Argument(help="A pipeline in its JSON wire form")]
InputsOpt = Annotated[
    list[str] | None, typer.Option("--input", "-i", help="NAME=VALUE (a JSON value, or text); repeat")
]


def read_pipeline(path: Path) -> dict[str, Any]:
    """The pipeline in `path`, or the command ends with what is wrong with the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"no such file: {path}")
    except IsADirectoryError:
        fail(f"{path} is a folder, not a pipeline file")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc.strerror if isinstance(exc, OSError) else 'not UTF-8 text'}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")
    if not isinstance(data, dict):
        fail(f"{path} must hold a JSON object (a pipeline with inputs and steps)")
    # A file saved with `pipelines show --json` holds the pipeline under "pipeline".
    inner = data.get("pipeline")
    if "steps" not in data and isinstance(inner, dict):
        return inner
    return data


# -- validate, save, list, show ------------------------------------------------------------------
@app.command("validate", cls=ClientCommand)
def validate(file: FileArg, as_json: JsonOpt = False) -> None:
    """Check a pipeline as a run would (tools, types, cycles, limits), running nothing."""
    answer = call("POST", "/v1/pipelines/validate", json={"pipeline": read_pipeline(file)})
    if as_json:
        print_json(answer)
        return
    order = answer.get("order") or []
    items = answer.get("items") or {}
    console.print(f"[green]valid[/green]: {len(order)} steps, in order: " + escape(" → ".join(order)))
    fanned = {k: v for k, v in items.items() if v != 1}
    if fanned:
        console.print("jobs per step: " + escape(", ".join(f"{k} x{v}" for k, v in fanned.items())))


def _exposed(pairs: list[str]) -> list[dict[str, Any]]:
    out = []
    for pair in pairs:
        name, _, label = pair.partition(":")
        if not name:
            fail(f"--expose takes NAME or NAME:LABEL, got {pair!r}")
        out.append({"name": name, **({"label": label} if label else {})})
    return out


@app.command("save", cls=ClientCommand)
def save(
    file: FileArg,
    name: Annotated[str, typer.Option("--name", help="What people will see")],
    description: Annotated[str, typer.Option("--description")] = "",
    expose: Annotated[
        list[str] | None,
        typer.Option("--expose", help="NAME[:LABEL]: an input others may give when they run it; repeat"),
    ] = None,
    visibility: Annotated[
        str, typer.Option("--visibility", help="private, unlisted (anyone with the id) or public")
    ] = "private",
    pipeline_id: Annotated[
        str | None, typer.Option("--id", help="Save as a new version of this pipeline of yours")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Save a pipeline (or a new version of one with --id) so that it can be run by its id."""
    if visibility not in VISIBILITIES:
        fail(f"--visibility is one of {', '.join(VISIBILITIES)}, not {visibility!r}")
    pipeline = read_pipeline(file)
    exposed = _exposed(expose or [])
    if pipeline_id is None:
        body: dict[str, Any] = {
            "name": name,
            "description": description,
            "pipeline": pipeline,
            "exposed": exposed,
            "visibility": visibility,
        }
        answer = call("POST", "/v1/pipelines", json=body)
    else:
        version: dict[str, Any] = {"pipeline": pipeline, **({"exposed": exposed} if expose else {})}
        answer = call("POST", f"/v1/pipelines/{pipeline_id}/versions", json=version)
    if as_json:
        print_json(answer)
        return
    console.print(
        f"saved [bold]{escape(answer['name'])}[/bold] {answer['id']} version {answer['version']} "
        f"({answer['visibility']})"
    )


@app.command("list", cls=ClientCommand)
def list_pipelines(
    q: Annotated[str | None, typer.Option("--q", help="Text in the name or description")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only your own")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Your pipelines and everyone's public ones."""
    params: dict[str, Any] = {"mine": mine}
    if q:
        params["q"] = q
    answer = call("GET", "/v1/pipelines", params=params)
    if as_json:
        print_json(answer)
        return
    table = Table()
    for col in ("id", "name", "owner", "visibility", "version", "runs", "exposed"):
        table.add_column(col)
    for p in answer["pipelines"]:
        table.add_row(
            p["id"],
            escape(p["name"]),
            escape(p["owner"]["name"]),
            p["visibility"],
            str(p["latest_version"]),
            str(p["run_count"]),
            escape(", ".join(i["name"] for i in p["inputs"])),
        )
    console.print(table)
    console.print(f"{answer['total']} pipelines")


@app.command("show", cls=ClientCommand)
def show(
    pipeline_id: Annotated[str, typer.Argument(metavar="ID")],
    version: Annotated[int | None, typer.Option("--version", help="Absent: the latest")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a saved pipeline: its steps and the inputs you may give."""
    answer = call("GET", f"/v1/pipelines/{pipeline_id}", params={"version": version} if version else {})
    if as_json:
        print_json(answer)
        return
    console.print(
        f"[bold]{escape(answer['name'])}[/bold] ({answer['id']}) by {escape(answer['owner']['name'])}, "
        f"{answer['visibility']}, version {answer['version']} of {answer['latest_version']}, "
        f"{answer['run_count']} runs"
    )
    if answer["description"]:
        console.print(escape(answer["description"]))
    steps = Table(title="steps")
    for col in ("step", "tool", "inputs"):
        steps.add_column(col)
    for sid, step in (answer["pipeline"].get("steps") or {}).items():
        steps.add_row(
            escape(sid), escape(str(step.get("tool"))), escape(_describe_inputs(step.get("inputs") or {}))
        )
    console.print(steps)
    inputs = Table(title="exposed inputs")
    for col in ("name", "type", "label", "default", "description"):
        inputs.add_column(col)
    for i in answer["inputs"]:
        default = "" if i["default"] is None else json.dumps(i["default"])
        inputs.add_row(
            escape(i["name"]), i["type"], escape(i["label"]), escape(default), escape(i["description"])
        )
    console.print(inputs)


def _describe_inputs(inputs: dict[str, Any]) -> str:
    parts = []
    for name, src in inputs.items():
        if isinstance(src, dict) and "from" in src:
            parts.append(f"{name} ← {src['from']}.{src.get('output')}")
        elif isinstance(src, dict) and "input" in src:
            parts.append(f"{name} ← input {src['input']}")
        else:
            parts.append(f"{name} = {json.dumps(src)[:40]}")
    return ", ".join(parts)


# -- run -----------------------------------------------------------------------------------------
def run_events(client: Client, run_id: str, last_event_id: str | None = None) -> Iterator[SseEvent]:
    """Follow a run's server-sent events until the stream ends (after the run's final state)."""
    for event in client.stream_events(f"/v1/runs/{run_id}/events", last_event_id):
        if isinstance(event.data, dict):
            yield event


class StepRows:
    """One progress row per step: its state, the mean progress of its jobs, and its cost."""

    def __init__(self, progress: Progress, run: dict[str, Any]) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}
        self.jobs: dict[str, dict[str, float]] = {}
        for step in run.get("steps") or []:
            self._task(str(step["id"]), state=step.get("state", "PENDING"), tool=step.get("tool", ""))

    def _task(self, step: str, *, state: str = "PENDING", tool: str = "") -> TaskID:
        if step not in self.tasks:
            label = f"{step} ({tool})" if tool else step
            self.tasks[step] = self.progress.add_task(label, total=1.0, state=state, cost="")
        return self.tasks[step]

    def on_event(self, ev: SseEvent) -> None:
        step = ev.data.get("step")
        if not isinstance(step, str):
            return
        task = self._task(step)
        if ev.type == "step":
            state = str(ev.data.get("state", ""))
            fields: dict[str, Any] = {"state": state}
            if ev.data.get("cost") is not None:
                fields["cost"] = f"{ev.data['cost']} cr"
            if state == "COMPLETED":
                fields["completed"] = 1.0
            elif state in ("PENDING", "RUNNING") and not self.jobs.get(step):
                fields["completed"] = 0.0
            self.progress.update(task, **fields)
        elif ev.type == "job":
            jobs = self.jobs.setdefault(step, {})
            job_id = str(ev.data.get("job_id", ""))
            job_state = ev.data.get("state")
            progress = ev.data.get("progress")
            if job_state == "COMPLETED":
                jobs[job_id] = 1.0
            elif job_state == "QUEUED":
                jobs[job_id] = 0.0  # requeued: it starts again
            elif isinstance(progress, int | float):
                jobs[job_id] = float(progress)
            else:
                jobs.setdefault(job_id, 0.0)
            self.progress.update(task, completed=sum(jobs.values()) / len(jobs))

    def finish(self, run: dict[str, Any]) -> None:
        for step in run.get("steps") or []:
            task = self._task(str(step["id"]))
            done = 1.0 if step.get("state") == "COMPLETED" else None
            self.progress.update(task, state=step.get("state", ""), cost=f"{step.get('cost', 0)} cr")
            if done is not None:
                self.progress.update(task, completed=done)


def follow_run(client: Client, run: dict[str, Any], *, quiet: bool) -> dict[str, Any]:
    """Show the run's steps as they go, reconnecting (with Last-Event-ID) if the stream drops;
    the run as it ended."""
    run_id = run["id"]
    last_id: str | None = None
    with Progress(
        TextColumn("[bold]{task.description:<24}"),
        TextColumn("{task.fields[state]:<10}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[cost]:>8}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=False,
    ) as progress:
        rows = StepRows(progress, run)
        for attempt in range(1000):
            try:
                for ev in run_events(client, run_id, last_id):
                    last_id = ev.id or last_id
                    rows.on_event(ev)
                current: dict[str, Any] = client.get(f"/v1/runs/{run_id}")
                if current.get("state") in TERMINAL:
                    rows.finish(current)
                    return current
            except (httpx.HTTPError, ClientError) as exc:
                if isinstance(exc, ClientError) and str(exc).startswith("HTTP 4"):
                    raise
                if attempt > 120:
                    raise ClientError(f"lost the run's event stream: {exc}") from exc
            time.sleep(backoff_delay(attempt, base=0.5, cap=5.0, rand=random.random))
    raise ClientError(f"run {run_id} did not finish")


def _output_urls(run: dict[str, Any]) -> dict[str, str]:
    """Output reference ("output:<id>") → its download URL, from the steps' jobs."""
    urls = {}
    for step in run.get("steps") or []:
        for job in step.get("jobs") or []:
            for out in job.get("outputs") or []:
                urls[f"output:{out['id']}"] = out["url"]
    return urls


def _flatten(value: Any) -> list[Any]:
    return [v for item in value for v in _flatten(item)] if isinstance(value, list) else [value]


def print_summary(client: Client, run: dict[str, Any]) -> None:
    """Each step's state, cost and time, then the run's outputs (download URLs, or text)."""
    table = Table(title=f"run {run['id']}: {run['state']}")
    for col in ("step", "tool", "state", "jobs", "cost", "seconds"):
        table.add_column(col)
    for step in run.get("steps") or []:
        seconds = step.get("seconds")
        table.add_row(
            escape(str(step["id"])),
            escape(str(step.get("tool", ""))),
            str(step.get("state", "")),
            str(step.get("items", "")),
            str(step.get("cost", "")),
            "" if seconds is None else f"{seconds:.1f}",
        )
    console.print(table)
    urls = _output_urls(run)
    for step, ports in (run.get("outputs") or {}).items():
        for port, value in (ports or {}).items():
            for item in _flatten(value):
                if isinstance(item, str) and item in urls:
                    shown = client.url + urls[item] if urls[item].startswith("/") else urls[item]
                else:
                    shown = item if isinstance(item, str) else json.dumps(item)
                console.print(f"{escape(str(step))}.{escape(str(port))}: {escape(shown)}", soft_wrap=True)
    console.print(f"captured {run.get('captured', 0)} of a quote of {run.get('quote', 0)} credits")


@app.command("run", cls=ClientCommand)
def run(
    file: Annotated[Path | None, typer.Argument(help="A pipeline file (or --id for a saved one)")] = None,
    pipeline_id: Annotated[str | None, typer.Option("--id", help="A saved pipeline's id")] = None,
    version: Annotated[int | None, typer.Option("--version", help="With --id: absent, the latest")] = None,
    inputs: InputsOpt = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Start it and print the run's id")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a pipeline (a file, or a saved one by --id) and follow its steps; exits 1 if it fails."""
    if (file is None) == (pipeline_id is None):
        fail("give a pipeline file or --id ID (one of them)")
    if version is not None and pipeline_id is None:
        fail("--version goes with --id")
    body: dict[str, Any] = {"inputs": parse_inputs(inputs or [])}
    if file is not None:
        body["pipeline"] = read_pipeline(file)
    else:
        body["pipeline_id"] = pipeline_id
        if version is not None:
            body["version"] = version
    with connect() as client:
        try:
            started = client.post("/v1/runs", json=body)
            if no_wait:
                print_json(started) if as_json else console.print(started["id"])
                return
            if not as_json:
                err.print(f"run {started['id']} started (quote {started.get('quote', '?')} credits)")
            done = follow_run(client, started, quiet=as_json)
            if as_json:
                print_json(done)
            else:
                print_summary(client, done)
        except ClientError as exc:
            fail(str(exc))
    if done["state"] != "COMPLETED":
        fail(f"run {done['id']} {done['state']}: {done.get('error') or 'no reason given'}")
