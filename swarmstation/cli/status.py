"""`swarmstation status`: pools, instances and the queue (admin)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from swarmstation.cli.common import (
    ClientCommand,
    JsonOpt,
    connect,
    console,
    fail,
    print_json,
)
from swarmstation.client import ClientError

app = typer.Typer()


@app.command(cls=ClientCommand)
def status(
    as_json: JsonOpt = False,
    all_instances: Annotated[bool, typer.Option("--all", help="Include terminated instances")] = False,
) -> None:
    """Pools, instances with their state, and the queue."""
    with connect() as client:
        try:
            data = client.get("/v1/admin/status", params={"include_terminated": all_instances})
        except ClientError as exc:
            fail(str(exc))
    if as_json:
        print_json(data)
        return
    pools = Table(title="pools")
    for col in ("pool", "provider", "min", "max", "instances"):
        pools.add_column(col)
    for p in data["pools"]:
        counts = (
            ", ".join(f"{k.lower()} {v}" for k, v in sorted(p["instances"].items()) if k != "TERMINATED")
            or "none"
        )
        pools.add_row(p["name"], p["provider"], str(p["min_instances"]), str(p["max_instances"]), counts)
    console.print(pools)
    inst = Table(title="instances")
    for col in ("id", "pool", "state", "jobs", "last heartbeat", "reason"):
        inst.add_column(col)
    for i in data["instances"]:
        inst.add_row(
            i["id"][:8],
            i["pool"],
            i["state"],
            str(i["active_jobs"]),
            (i["last_heartbeat_at"] or "-")[11:19],
            i["state_reason"],
        )
    console.print(inst)
    q = data["queue"]
    console.print("queue: " + ", ".join(f"{k} {v}" for k, v in q.items()))
