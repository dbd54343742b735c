"""`swarmstation loras`: the LoRA registry."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from swarmstation.cli.common import (
    ClientCommand,
    JsonOpt,
    call,
    connect,
    console,
    err,
    fail,
    print_json,
)
from swarmstation.client import Client, ClientError

app = typer.Typer(no_args_is_help=True, help="The LoRA registry: list, import, approve, grant, resolve")

# How often `approve` asks how the staging is going.
STAGING_POLL_SECONDS = 0.5


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
    if data["moderation_status"] == "staging":
        total = data["staging_bytes_total"]
        console.print(f"staging: {data['staging_bytes_done']} of {total if total is not None else '?'} bytes")
    if data["failure_reason"]:
        console.print(f"staging failed: {data['failure_reason']}")
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
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the staging until approved or failed")
    ] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Give up waiting after this many seconds")
    ] = 3600,
    as_json: JsonOpt = False,
) -> None:
    """Approve (admin): the file is staged in the background (download, verify sha256, store);
    this follows it with a progress bar until the LoRA is approved or failed."""
    body = {"visibility": visibility} if visibility else {}
    with connect() as client:
        try:
            data = client.post(f"/v1/admin/loras/{slug}/approve", json=body)
            if wait:
                data = _follow_staging(client, slug, data, quiet=as_json, timeout=timeout)
        except ClientError as exc:
            fail(str(exc))
    if as_json:
        print_json(data)
    elif data["moderation_status"] == "staging":
        console.print(f"staging {slug}; follow it with `swarmstation loras show {slug}`")
    elif data["moderation_status"] != "approved":
        fail(f"{slug} {data['moderation_status']}: {data['failure_reason'] or data['moderation_reason']}")
    else:
        console.print(f"approved {slug} ({data['file_size']} bytes staged)")


def _follow_staging(
    client: Client, slug: str, lora: dict[str, Any], *, quiet: bool, timeout: float
) -> dict[str, Any]:
    """Poll the LoRA while it is `staging`, showing the bytes staged; returns its last state."""
    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("staging {task.fields[slug]}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
    ) as bar:
        task = bar.add_task("staging", slug=slug, total=lora.get("staging_bytes_total"))
        while lora["moderation_status"] == "staging":
            if time.monotonic() > deadline:
                fail(f"{slug} is still staging after {timeout:g} s; `swarmstation loras show {slug}`")
            time.sleep(STAGING_POLL_SECONDS)
            lora = client.get(f"/v1/loras/{slug}")
            bar.update(task, completed=lora["staging_bytes_done"], total=lora["staging_bytes_total"])
    return lora


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
