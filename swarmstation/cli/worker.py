"""`swarmstation worker`: the worker agent beside a ComfyUI."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from swarmstation.cli.common import (
    LogOpt,
    fail,
)

app = typer.Typer()


@app.command()
def worker(
    server: Annotated[str, typer.Option("--server", help="Control plane URL")],
    comfyui: Annotated[str, typer.Option("--comfyui", help="ComfyUI URL")] = "http://127.0.0.1:8188",
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="SWARMSTATION_WORKER_TOKEN", help="This instance's token", show_default=False
        ),
    ] = None,
    comfy_dir: Annotated[
        Path | None, typer.Option("--comfy-dir", help="ComfyUI folder: models are fetched into it")
    ] = None,
    cache_budget_gb: Annotated[
        float | None,
        typer.Option(
            "--cache-budget-gb",
            envvar="SWARMSTATION_CACHE_BUDGET_GB",
            min=0.000001,
            help="Disk budget for cached models; the least recently used idle ones are evicted",
        ),
    ] = None,
    unreachable_timeout: Annotated[
        float,
        typer.Option(
            "--unreachable-timeout",
            envvar="SWARMSTATION_WORKER_UNREACHABLE_TIMEOUT",
            min=1,
            help="Exit when the control plane has not answered for this many seconds",
        ),
    ] = 600.0,
    log_level: LogOpt = "info",
) -> None:
    """Run the worker agent beside a ComfyUI (or the emulator). It exits (status 1, with a line
    saying why) when the control plane does not know its token or stays unreachable."""
    from swarmstation.worker.agent import WorkerConfig, run_worker

    if not token:
        fail("a worker token is needed: --token or SWARMSTATION_WORKER_TOKEN")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines would carry presigned URLs
    budget = int(cache_budget_gb * 1024**3) if cache_budget_gb else None
    status = run_worker(
        WorkerConfig(
            server_url=server,
            token=token,
            comfyui_url=comfyui,
            comfy_dir=comfy_dir,
            cache_budget_bytes=budget,
            retry_for=unreachable_timeout,
        )
    )
    if status:
        raise typer.Exit(status)
