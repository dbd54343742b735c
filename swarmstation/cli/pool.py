"""`swarmstation pool`: pools of instances (admin)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from swarmstation.cli.common import (
    ClientCommand,
    JsonOpt,
    call,
    console,
    fail,
    parse_inputs,
    print_json,
)

app = typer.Typer(no_args_is_help=True, help="Pools of instances (admin): list, show, add, set, remove")


SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="KEY=VALUE, VALUE as JSON or text, e.g. max_instances=4 or "
        'gpu_filters=\'{"gpu_names": ["RTX 4090"], "max_price_per_hour": 0.6}\'',
    ),
]


def _pool_table(pools: list[dict[str, Any]]) -> Table:
    table = Table()
    for col in ("pool", "provider", "min", "max", "instances", "parked", "queued", "spend cap $/h", "image"):
        table.add_column(col)
    for p in pools:
        counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(p["instances"].items()) if k != "TERMINATED")
        table.add_row(
            p["name"],
            p["provider"],
            str(p["min_instances"]),
            str(p["max_instances"]),
            counts or "none",
            f"{p.get('parked', 0)}/{p.get('max_parked', 0)}",
            str(p["queued"]),
            str(p["max_spend_per_hour"] or "-"),
            p["image"] or "-",
        )
    return table


@app.command("list", cls=ClientCommand)
def pool_list(as_json: JsonOpt = False) -> None:
    """List pools."""
    data = call("GET", "/v1/admin/pools")
    print_json(data) if as_json else console.print(_pool_table(data))


@app.command("show", cls=ClientCommand)
def pool_show(name: str, as_json: JsonOpt = False) -> None:
    """Show a pool's settings."""
    data = call("GET", f"/v1/admin/pools/{name}")
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        console.print(f"{key:<30} {value}")


@app.command("add", cls=ClientCommand)
def pool_add(name: str, settings: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Create a pool."""
    data = call("POST", "/v1/admin/pools", json={"name": name, **parse_inputs(settings or [])})
    print_json(data) if as_json else console.print(f"created pool {data['name']}")


@app.command("set", cls=ClientCommand)
def pool_set(name: str, settings: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Change a pool's settings."""
    if not settings:
        fail("nothing to change: pass --set KEY=VALUE")
    data = call("PATCH", f"/v1/admin/pools/{name}", json=parse_inputs(settings))
    print_json(data) if as_json else console.print(f"updated pool {name}")


@app.command("remove", cls=ClientCommand)
def pool_remove(name: str) -> None:
    """Remove a pool with no instances and no tools."""
    call("DELETE", f"/v1/admin/pools/{name}")
    console.print(f"removed pool {name}")
