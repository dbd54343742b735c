"""`swarmstation users`: users and API keys (admin)."""

from __future__ import annotations

from typing import Annotated

import typer

from swarmstation.cli.common import (
    ClientCommand,
    JsonOpt,
    connect,
    console,
    fail,
    print_json,
)
from swarmstation.client import ClientError

app = typer.Typer(no_args_is_help=True, help="Users and API keys (admin)")


@app.command("create", cls=ClientCommand)
def users_create(
    name: str,
    role: Annotated[str, typer.Option("--role")] = "user",
    as_json: JsonOpt = False,
) -> None:
    """Create a user and print its API key (shown once)."""
    with connect() as client:
        try:
            user = client.post("/v1/admin/users", json={"name": name, "role": role})
        except ClientError as exc:
            fail(str(exc))
    print_json(user) if as_json else console.print(f"user {user['name']} ({user['role']}): {user['api_key']}")


@app.command("list", cls=ClientCommand)
def users_list(as_json: JsonOpt = False) -> None:
    """List users."""
    with connect() as client:
        try:
            users = client.get("/v1/admin/users")
        except ClientError as exc:
            fail(str(exc))
    if as_json:
        print_json(users)
        return
    for u in users:
        console.print(f"{u['id']}  {u['name']:<20} {u['role']}")
