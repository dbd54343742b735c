"""`swarmstation generate`: run a tool and follow its job."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from swarmstation.cli.common import (
    ClientCommand,
    JsonOpt,
    connect,
    console,
    err,
    fail,
    parse_inputs,
    print_json,
)
from swarmstation.client import Client, ClientError
from swarmstation.domain.backoff import backoff_delay

app = typer.Typer()


def _follow(client: Client, job_id: str, quiet: bool) -> dict[str, Any]:
    """Show a progress bar fed by the job's event stream; reconnects if the stream drops."""
    last_id: str | None = None
    with Progress(
        TextColumn("[bold]{task.fields[state]:<10}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=False,
    ) as bar:
        task = bar.add_task("job", total=1.0, state="QUEUED")
        for attempt in range(1000):
            try:
                for ev in client.events(job_id, last_id):
                    last_id = ev.id
                    if ev.type == "progress":
                        bar.update(task, completed=float(ev.data.get("progress", 0.0)))
                    elif ev.type == "state":
                        state = ev.data["state"]
                        bar.update(task, state=state)
                        if state == "QUEUED" and ev.data.get("reason"):
                            bar.update(task, completed=0.0)
                            err.print(f"[yellow]requeued:[/yellow] {ev.data['reason']}")
                        if state == "COMPLETED":
                            bar.update(task, completed=1.0)
                break
            except (httpx.HTTPError, ClientError) as exc:
                if attempt > 120:
                    raise ClientError(f"lost the event stream: {exc}") from exc
                time.sleep(backoff_delay(attempt, base=0.5, cap=5.0, rand=random.random))
    job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}")
    return job


@app.command(cls=ClientCommand)
def generate(
    prompt: Annotated[str, typer.Argument(help="What to make")],
    tool: Annotated[str, typer.Option("--tool", "-t")] = "sdxl-txt2img",
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the image")] = Path("out.png"),
    inputs: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="NAME=VALUE (JSON value or text)")
    ] = None,
    image: Annotated[
        Path | None, typer.Option("--image", help="Input image for img2img / upscale tools")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Submit and print the job id")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a tool on a prompt and save the image, with live progress."""
    body_inputs = parse_inputs(inputs or [])
    with connect() as client:
        try:
            detail = client.get(f"/v1/tools/{tool}")
            names = {i["name"] for i in detail["inputs"]}
            if "prompt" in names:
                body_inputs.setdefault("prompt", prompt)
            if seed is not None:
                body_inputs["seed"] = seed
            if image is not None:
                if not image.is_file():
                    fail(f"no such image file: {image}")
                with image.open("rb") as fh:
                    up = client.post("/v1/uploads", files={"file": (image.name, fh)})
                image_inputs = [i["name"] for i in detail["inputs"] if i["type"] == "image"]
                if not image_inputs:
                    fail(f"tool {tool} takes no image")
                body_inputs[image_inputs[0]] = up["ref"]
            job = client.post("/v1/jobs", json={"tool": tool, "inputs": body_inputs})
            if no_wait:
                print_json(job) if as_json else console.print(job["id"])
                return
            if not as_json:
                err.print(f"job {job['id']} queued (tool {tool}, seed {job['inputs'].get('seed', '-')})")
            job = _follow(client, job["id"], quiet=as_json)
            if job["state"] != "COMPLETED":
                if as_json:
                    print_json(job)
                fail(f"job {job['id']} {job['state']}: {job.get('error') or 'no reason given'}")
            written = []
            for n, output in enumerate(job["outputs"]):
                target = out if n == 0 else out.with_name(f"{out.stem}-{n}{out.suffix}")
                client.download(output["url"], target)
                written.append(str(target))
            if as_json:
                print_json({**job, "written": written})
            else:
                console.print(f"[green]done[/green] in {_seconds(job)}: " + ", ".join(written))
        except ClientError as exc:
            fail(str(exc))


def _seconds(job: dict[str, Any]) -> str:
    from datetime import datetime

    try:
        start = datetime.fromisoformat(job["created_at"])
        end = datetime.fromisoformat(job["finished_at"])
        return f"{(end - start).total_seconds():.1f}s"
    except (KeyError, TypeError, ValueError):
        return "?"
