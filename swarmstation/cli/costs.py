"""`swarmstation costs`: what the pool costs (admin)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from swarmstation.cli.common import (
    ClientCommand,
    JsonOpt,
    call,
    console,
    print_json,
)

app = typer.Typer()


@app.command(cls=ClientCommand)
def costs(
    by: Annotated[str, typer.Option("--by", help="pool, instance, user, day or tool")] = "pool",
    since: Annotated[str | None, typer.Option("--since", help="ISO time with zone")] = None,
    as_json: JsonOpt = False,
) -> None:
    """What the pool costs, by pool, instance, user, day or tool (admin)."""
    params = {"group_by": by, **({"since": since} if since else {})}
    data = call("GET", "/v1/admin/costs", params=params)
    if as_json:
        print_json(data)
        return
    table = Table(title=f"costs by {by} (USD)")
    for col in ("key", "cost", "GPU seconds", "jobs"):
        table.add_column(col)
    for r in data["rows"]:
        table.add_row(r["key"], f"{r['cost']:.4f}", f"{r['gpu_seconds']:.1f}", str(r["jobs"]))
    console.print(table)
    console.print(
        f"billed {data['billed']:.4f} = attributed to jobs {data['attributed']:.4f} "
        f"+ idle instances {data['unattributed']:.4f}"
    )
    for note in data["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
