"""`swarmstation instances`: attach your own machines to a pool (admin)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from swarmstation.cli.common import (
    ClientCommand,
    JsonOpt,
    call,
    console,
    print_json,
)

app = typer.Typer(
    no_args_is_help=True, help="Attach your own machines to a pool (admin): attach, detach, rotate-token"
)


def _print_attached(data: dict[str, Any], as_json: bool, what: str) -> None:
    if as_json:
        print_json({k: data[k] for k in ("instance_id", "token", "command")})
        return
    console.print(f"{what} instance {data['instance_id']}")
    console.print("its worker token (shown once; rotate it with `swarmstation instances rotate-token`):")
    print(data["token"])
    console.print("on that machine, start ComfyUI (python main.py --listen 127.0.0.1 --port 8188), then run:")
    print(data["command"])


@app.command("attach", cls=ClientCommand)
def instances_attach(
    pool: Annotated[str, typer.Option("--pool", help="The pool it serves")],
    name: Annotated[str | None, typer.Option("--name", help="A label for the machine")] = None,
    slots: Annotated[int | None, typer.Option("--slots", min=1, max=64, help="Jobs at once")] = None,
    price_per_hour: Annotated[
        float, typer.Option("--price-per-hour", min=0, help="Its cost per hour, for billing")
    ] = 0.0,
    server: Annotated[
        str | None, typer.Option("--server", help="The control plane's URL as that machine reaches it")
    ] = None,
    comfyui: Annotated[str, typer.Option("--comfyui", help="ComfyUI's URL on that machine")] = (
        "http://127.0.0.1:8188"
    ),
    comfy_dir: Annotated[str, typer.Option("--comfy-dir", help="ComfyUI's folder on that machine")] = (
        "/path/to/ComfyUI"
    ),
    as_json: JsonOpt = False,
) -> None:
    """Register a machine you run yourself (provider `static`); prints its token and worker command once."""
    body: dict[str, Any] = {
        "pool": pool,
        "price_per_hour": price_per_hour,
        "comfyui_url": comfyui,
        "comfy_dir": comfy_dir,
    }
    for key, value in (("name", name), ("slots", slots), ("server_url", server)):
        if value is not None:
            body[key] = value
    _print_attached(call("POST", "/v1/admin/instances", json=body), as_json, "attached")


@app.command("detach", cls=ClientCommand)
def instances_detach(instance_id: str, as_json: JsonOpt = False) -> None:
    """Detach an attached machine: it finishes its running jobs, then its token stops working."""
    data = call("POST", f"/v1/admin/instances/{instance_id}/detach")
    if as_json:
        print_json(data)
    elif data["state"] == "TERMINATED":
        console.print(f"detached instance {instance_id}")
    else:
        console.print(f"instance {instance_id} is draining; it is detached when its jobs are done")


@app.command("rotate-token", cls=ClientCommand)
def instances_rotate_token(instance_id: str, as_json: JsonOpt = False) -> None:
    """Replace an attached machine's token (the old one stops working at once)."""
    data = call("POST", f"/v1/admin/instances/{instance_id}/rotate-token")
    _print_attached(data, as_json, "new token for")
