"""`swarmstation keys`: the caller's own API keys (create, list, revoke)."""

from __future__ import annotations

from typing import Annotated

import typer

from swarmstation.cli.common import ClientCommand, JsonOpt, call, console, print_json

app = typer.Typer(no_args_is_help=True, help="Your own API keys")


@app.command("create", cls=ClientCommand)
def keys_create(
    name: Annotated[str, typer.Argument(help="A label to tell the key apart, e.g. 'laptop'")],
    as_json: JsonOpt = False,
) -> None:
    """Create an API key for yourself and print it (shown once)."""
    key = call("POST", "/v1/account/keys", json={"name": name})
    if as_json:
        print_json(key)
        return
    console.print(f"API key {key['id']} ({key['name']}): {key['api_key']}", soft_wrap=True)
    console.print("it is shown only now; store it somewhere safe")


@app.command("list", cls=ClientCommand)
def keys_list(as_json: JsonOpt = False) -> None:
    """List your API keys (their first characters only)."""
    keys = call("GET", "/v1/account/keys")
    if as_json:
        print_json(keys)
        return
    for k in keys:
        status = f"revoked {k['revoked_at']}" if k["revoked_at"] else "live"
        console.print(
            f"{k['id']}  {k['prefix']}…  {k['name']:<20} {k['created_at']}  {status}", soft_wrap=True
        )


@app.command("revoke", cls=ClientCommand)
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (from `keys list`)")]) -> None:
    """Revoke one of your API keys; it stops working at once."""
    call("DELETE", f"/v1/account/keys/{key_id}")
    console.print(f"revoked {key_id}")
