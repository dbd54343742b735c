"""`swarmstation loras`: the LoRA registry."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from swarmstation.cli.common import (
    ClientCommand,
    JsonOpt,
    call,
    connect,
    console,
    fail,
    print_json,
)
from swarmstation.client import ClientError

app = typer.Typer(no_args_is_help=True, help="The LoRA registry: list, import, approve, grant, resolve")


def _lora_table(loras: list[dict[str, Any]]) -> Table:
    table = Table()
    for col in ("slug", "name", "base", "triggers", "visibility", "status", "uses"):
        table.add_column(col)
    for lo in loras:
        triggers = ", ".join(lo["triggers"][:3]) + (" …" if len(lo["triggers"]) > 3 else "")
        table.add_row(
            lo["slug"],
            lo["name"][:40],
            lo["base_model"],
            triggers,
            lo["visibility"],
            lo["moderation_status"],
            str(lo["usage_count"]),
        )
    return table


@app.command("list", cls=ClientCommand)
def loras_list(
    base_model: Annotated[
        str | None, typer.Option("--base-model", help="e.g. SDXL (includes Pony, ...)")
    ] = None,
    tag: Annotated[str | None, typer.Option("--tag")] = None,
    query: Annotated[str | None, typer.Option("--search", "-q")] = None,
    status: Annotated[str | None, typer.Option("--status", help="pending_review, approved, ...")] = None,
    mine: Annotated[bool, typer.Option("--mine")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List and search LoRAs you can see."""
    params = {
        k: v for k, v in {"base_model": base_model, "tag": tag, "q": query, "status": status}.items() if v
    }
    if mine:
        params["mine"] = "true"
    data = call("GET", "/v1/loras", params=params)
    print_json(data) if as_json else console.print(_lora_table(data["loras"]))


@app.command("show", cls=ClientCommand)
def loras_show(slug: str, as_json: JsonOpt = False) -> None:
    """Show one LoRA."""
    data = call("GET", f"/v1/loras/{slug}")
    if as_json:
        print_json(data)
        return
    console.print(
        f"[bold]{data['name']}[/bold] ({data['slug']}) — {data['base_model']} "
        f"[{data['source_base_model']}], {data['visibility']}, {data['moderation_status']}"
    )
    console.print(f"triggers: {', '.join(data['triggers']) or '-'}")
    console.print(f"file: {data['file_name']} sha256 {data['file_sha256'] or '?'} staged {data['staged']}")
    if data["moderation_reason"]:
        console.print(f"reason: {data['moderation_reason']}")


@app.command("import", cls=ClientCommand)
def loras_import(
    source: Annotated[str, typer.Argument(help="Civitai model/version URL or Hugging Face repo URL")],
    visibility: Annotated[str, typer.Option("--visibility")] = "public",
    as_json: JsonOpt = False,
) -> None:
    """Import a LoRA's metadata; it waits for an admin's approval."""
    data = call("POST", "/v1/loras/import", json={"url": source, "visibility": visibility})
    print_json(data) if as_json else console.print(
        f"imported [bold]{data['slug']}[/bold] ({data['base_model']}), waiting for review"
    )


@app.command("approve", cls=ClientCommand)
def loras_approve(
    slug: str,
    visibility: Annotated[str | None, typer.Option("--visibility")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Stage the file (download, verify sha256) and approve (admin)."""
    body = {"visibility": visibility} if visibility else {}
    with console.status(f"staging {slug}…"), connect() as client:
        client.http.timeout = httpx.Timeout(30.0, read=3600.0)
        try:
            data = client.post(f"/v1/admin/loras/{slug}/approve", json=body)
        except ClientError as exc:
            fail(str(exc))
    if as_json:
        print_json(data)
    elif data["moderation_status"] != "approved":
        fail(f"{slug} {data['moderation_status']}: {data['moderation_reason']}")
    else:
        console.print(f"approved {slug} ({data['file_size']} bytes staged)")


@app.command("reject", cls=ClientCommand)
def loras_reject(slug: str, reason: Annotated[str, typer.Option("--reason")]) -> None:
    """Reject an imported LoRA (admin)."""
    call("POST", f"/v1/admin/loras/{slug}/reject", json={"reason": reason})
    console.print(f"rejected {slug}")


@app.command("grant", cls=ClientCommand)
def loras_grant(
    slug: str,
    user: str,
    expires: Annotated[
        str | None, typer.Option("--expires", help="ISO time, e.g. 2026-12-31T00:00:00Z")
    ] = None,
) -> None:
    """Let a user use your private LoRA."""
    body: dict[str, Any] = {"user": user}
    if expires:
        body["expires_at"] = expires
    call("POST", f"/v1/loras/{slug}/grants", json=body)
    console.print(f"granted {slug} to {user}")


@app.command("revoke", cls=ClientCommand)
def loras_revoke(slug: str, user: str) -> None:
    """Take a grant back."""
    call("DELETE", f"/v1/loras/{slug}/grants/{user}")
    console.print(f"revoked {user}'s access to {slug}")


@app.command("triggers", cls=ClientCommand)
def loras_triggers(as_json: JsonOpt = False) -> None:
    """The trigger map: trigger word or phrase → LoRAs."""
    data = call("GET", "/v1/loras/trigger-map")
    if as_json:
        print_json(data)
        return
    for trigger, slugs in data.items():
        console.print(f"{trigger:<30} {', '.join(slugs)}")


@app.command("resolve", cls=ClientCommand)
def loras_resolve(
    prompt: str,
    tool: Annotated[str, typer.Option("--tool", "-t")] = "sdxl-txt2img",
    as_json: JsonOpt = False,
) -> None:
    """Show what a prompt resolves to for a tool, without running it."""
    data = call("POST", "/v1/loras/resolve", json={"prompt": prompt, "tool": tool})
    if as_json:
        print_json(data)
        return
    console.print(f"encoder text: {data['prompt']}")
    for lo in data["loras"]:
        console.print(
            f"  {lo['slug']}  model {lo['strength_model']:g} clip {lo['strength_clip']:g}  "
            f"({lo['source']}: {lo['matched_text']})"
        )
    for w in data["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")
