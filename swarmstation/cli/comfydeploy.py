"""`swarmstation comfydeploy`: what ComfyUI Deploy offers (admin)."""

from __future__ import annotations

from typing import Annotated

import typer

from swarmstation.cli.common import (
    ClientCommand,
    JsonOpt,
    call,
    console,
    print_json,
)

app = typer.Typer()


@app.command("comfydeploy", cls=ClientCommand)
def comfydeploy_list(
    what: Annotated[str, typer.Argument(help="deployments or machines")] = "deployments",
    as_json: JsonOpt = False,
) -> None:
    """List ComfyUI Deploy deployments (each can serve a tool through a split) or machines."""
    data = call("GET", f"/v1/admin/comfydeploy/{what}")
    if as_json:
        print_json(data)
        return
    for item in data:
        console.print("  ".join(f"{k}={v}" for k, v in item.items() if v is not None))
