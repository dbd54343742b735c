"""`swarmstation credits`: balances, ledgers, grants and the ledger check."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from swarmstation.cli.common import ClientCommand, JsonOpt, call, console, err, print_json

app = typer.Typer(no_args_is_help=True, help="Credits: balances, ledgers, grants (admin), the ledger check")

UserArg = Annotated[str | None, typer.Argument(help="A user's id or name (admin); default: yourself")]


def _user_path(user: str) -> str:
    return f"/v1/admin/users/{quote(user, safe='')}"


@app.command("grant", cls=ClientCommand)
def grant(
    user: Annotated[str, typer.Argument(help="The user's id or name")],
    amount: Annotated[int, typer.Argument(help="Credits; negative takes them back")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the ledger entry)")],
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Sending the same key again grants once")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Grant credits to a user, or with a negative amount take them back (admin)."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    data = call(
        "POST", f"{_user_path(user)}/credits", json={"amount": amount, "reason": reason}, headers=headers
    )
    if as_json:
        print_json(data)
        return
    entry = data["entry"]
    console.print(
        f"{entry['kind']} {entry['amount']:+d} to {user}: balance {data['balance']}, "
        f"available {data['available']}"
    )


@app.command("balance", cls=ClientCommand)
def balance(user: UserArg = None, as_json: JsonOpt = False) -> None:
    """A balance: yours, or a user's (admin)."""
    data = call("GET", f"{_user_path(user)}/account" if user else "/v1/account")
    if as_json:
        print_json(data)
        return
    console.print(
        f"{data['user']['name']}: balance {data['balance']}, held {data['held']}, "
        f"available {data['available']} credits ({data['credits_per_usd']} credits = $1)"
    )


@app.command("ledger", cls=ClientCommand)
def ledger(
    user: UserArg = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 50,
    before: Annotated[int | None, typer.Option("--before", help="Entries older than this id")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ledger entries, newest first: yours, or a user's (admin)."""
    params: dict[str, Any] = {"limit": limit, **({"before": before} if before else {})}
    data = call("GET", f"{_user_path(user)}/ledger" if user else "/v1/account/ledger", params=params)
    if as_json:
        print_json(data)
        return
    table = Table()
    for col in ("id", "when", "kind", "amount", "held", "balance", "for", "reason"):
        table.add_column(col)
    for e in data["entries"]:
        table.add_row(
            str(e["id"]),
            e["created_at"],
            e["kind"],
            f"{e['amount']:+d}",
            f"{e['held_change']:+d}",
            str(e["balance_after"]),
            f"{e['ref_type']} {e['ref_id']}".strip(),
            e["reason"],
        )
    console.print(table)
    if data["next_before"] is not None:
        console.print(f"more: --before {data['next_before']}")


@app.command("verify", cls=ClientCommand)
def verify(as_json: JsonOpt = False) -> None:
    """Check that every balance equals the sum of its ledger entries (admin); exit 1 if not."""
    data = call("GET", "/v1/admin/credits/verify")
    if as_json:
        print_json(data)
    elif data["ok"]:
        console.print("ledger ok: every balance equals the sum of its entries")
    else:
        for problem in data["problems"]:
            err.print(f"[red]problem:[/red] {problem}", soft_wrap=True, markup=True)
    if not data["ok"]:
        raise typer.Exit(1)
