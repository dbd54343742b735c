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
    pnl: Annotated[
        bool, typer.Option("--pnl", help="Revenue (captured credits) against costs, by tool, user or day")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """What the pool costs, by pool, instance, user, day or tool (admin); with --pnl what the jobs
    earned against what they cost, by tool (default), user or day."""
    if pnl:
        _pnl("tool" if by == "pool" else by, since, as_json)
        return
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


def _pnl(by: str, since: str | None, as_json: bool) -> None:
    data = call("GET", "/v1/admin/costs/pnl", params={"group_by": by, **({"since": since} if since else {})})
    if as_json:
        print_json(data)
        return
    table = Table(title=f"profit and loss by {by} (USD; {data['credits_per_usd']} credits = $1)")
    for col in ("key", "revenue", "royalties", "net revenue", "cost", "margin", "jobs charged", "jobs"):
        table.add_column(col)
    for r in data["rows"]:
        table.add_row(
            r["key"],
            f"{r['revenue_usd']} ({r['revenue_credits']} cr)",
            f"{r['royalty_usd']} ({r['royalty_credits']} cr)",
            str(r["net_revenue_usd"]),
            str(r["cost_usd"]),
            str(r["margin_usd"]),
            str(r["jobs_charged"]),
            str(r["jobs"]),
        )
    console.print(table)
    console.print(
        f"revenue {data['revenue_usd']} - royalties {data['royalty_usd']} - cost {data['cost_usd']} "
        f"= margin {data['margin_usd']} (idle instances {data['unattributed_cost_usd']} of the cost)"
    )
    for note in data["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
