"""`swarmstation tools`: list, show, add, split, price and remove tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

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

app = typer.Typer(no_args_is_help=True, help="List, show, add and remove tools")


@app.command("list", cls=ClientCommand)
def tools_list(as_json: JsonOpt = False) -> None:
    """List the tools."""
    with connect() as client:
        try:
            tools = client.get("/v1/tools")
        except ClientError as exc:
            fail(str(exc))
    if as_json:
        print_json(tools)
        return
    table = Table()
    for col in ("slug", "name", "category", "base model", "pool", "price"):
        table.add_column(col)
    for t in tools:
        price = t.get("price") or {}
        estimate = price.get("estimate")
        shown = f"{price.get('model', '')} {'' if estimate is None else f'~{estimate}'}".strip()
        table.add_row(t["slug"], t["name"], t["category"], t["base_model"], t["pool"], shown)
    console.print(table)


@app.command("show", cls=ClientCommand)
def tools_show(slug: str, as_json: JsonOpt = False) -> None:
    """Show a tool: inputs, models and workflow."""
    with connect() as client:
        try:
            tool = client.get(f"/v1/tools/{slug}")
        except ClientError as exc:
            fail(str(exc))
    if as_json:
        print_json(tool)
        return
    console.print(f"[bold]{tool['name']}[/bold] ({tool['slug']}) — {tool['category']}, {tool['base_model']}")
    console.print(tool["description"])
    table = Table(title="inputs")
    for col in ("name", "type", "required", "default", "range"):
        table.add_column(col)
    for i in tool["inputs"]:
        rng = f"{i.get('minimum', '')}..{i.get('maximum', '')}" if "minimum" in i or "maximum" in i else ""
        table.add_row(
            i["name"], i["type"], "yes" if i.get("required") else "", str(i.get("default", "")), rng
        )
    console.print(table)
    console.print("models: " + ", ".join(f"{m['folder']}/{m['name']}" for m in tool["required_models"]))


@app.command("add", cls=ClientCommand)
def tools_add(
    file: Annotated[Path, typer.Argument(help="Tool JSON: metadata, API-format workflow and inputs")],
    replace: Annotated[bool, typer.Option("--replace", help="Update a tool with the same slug")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a tool from a JSON file (admin)."""
    try:
        body = json.loads(file.read_text())
    except OSError as exc:
        fail(f"cannot read {file}: {exc}")
    except ValueError as exc:
        fail(f"{file} is not valid JSON: {exc}")
    with connect() as client:
        try:
            tool = client.post("/v1/admin/tools", json=body, params={"replace": replace})
        except ClientError as exc:
            fail(str(exc))
    print_json(tool) if as_json else console.print(f"added tool [bold]{tool['slug']}[/bold]")


@app.command("split", cls=ClientCommand)
def tools_split(
    slug: str,
    comfydeploy: Annotated[
        int, typer.Option("--comfydeploy", min=0, max=100, help="Percent of jobs to ComfyUI Deploy")
    ],
    deployment: Annotated[
        str | None, typer.Option("--deployment", help="ComfyUI Deploy deployment id")
    ] = None,
) -> None:
    """Send a share of a tool's jobs to ComfyUI Deploy (admin); the rest run on the pool."""
    body: dict[str, Any] = {"comfydeploy_percent": comfydeploy}
    if deployment:
        body["deployment_id"] = deployment
    data = call("PUT", f"/v1/admin/tools/{slug}/split", json=body)
    console.print(
        f"{slug}: {data['comfydeploy_percent']}% to ComfyUI Deploy ({data['deployment_id'] or '-'}), "
        f"{100 - data['comfydeploy_percent']}% to the pool"
    )


@app.command("from-deployment", cls=ClientCommand)
def tools_from_deployment(
    deployment: Annotated[str, typer.Argument(help="ComfyUI Deploy deployment id")],
    slug: Annotated[str, typer.Option("--slug", help="The new tool's slug")],
    like: Annotated[str, typer.Option("--like", help="A tool with the same inputs and base model")],
    name: Annotated[str | None, typer.Option("--name")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Offer a ComfyUI Deploy deployment as a tool (admin): every job of it runs there."""
    body: dict[str, Any] = {"slug": slug, "like": like, **({"name": name} if name else {})}
    data = call("POST", f"/v1/admin/comfydeploy/deployments/{deployment}/tool", json=body)
    print_json(data) if as_json else console.print(f"added tool [bold]{data['slug']}[/bold] on {deployment}")


@app.command("remove", cls=ClientCommand)
def tools_remove(slug: str) -> None:
    """Remove a tool (admin)."""
    with connect() as client:
        try:
            client.delete(f"/v1/admin/tools/{slug}")
        except ClientError as exc:
            fail(str(exc))
    console.print(f"removed tool {slug}")


@app.command("price", cls=ClientCommand)
def tools_price(
    slug: str,
    per_run: Annotated[int | None, typer.Option("--per-run", min=0, help="Credits per run")] = None,
    per_megapixel: Annotated[
        int | None, typer.Option("--per-megapixel", min=0, help="Credits per output megapixel")
    ] = None,
    per_gpu_second: Annotated[
        int | None, typer.Option("--per-gpu-second", min=0, help="Credits per GPU second (needs --cap)")
    ] = None,
    cap: Annotated[
        int | None, typer.Option("--cap", min=1, help="The most one run costs, in credits")
    ] = None,
    derived: Annotated[
        bool, typer.Option("--derived", help="Remove the price model: derive it from what the tool costs us")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Set a tool's price (admin): one of --per-run, --per-megapixel, --per-gpu-second N --cap M,
    or --derived; with none, show it."""
    given = {
        k: v
        for k, v in {
            "per_run": per_run,
            "per_megapixel": per_megapixel,
            "per_gpu_second": per_gpu_second,
        }.items()
        if v is not None
    }
    if len(given) + derived > 1:
        fail("give one of --per-run, --per-megapixel, --per-gpu-second or --derived")
    if given:
        model, credits = next(iter(given.items()))
        body: dict[str, Any] = {
            "model": model,
            "credits": credits,
            **({"cap": cap} if cap is not None else {}),
        }
        price = call("PUT", f"/v1/admin/tools/{slug}/price", json=body)
    elif derived:
        price = call("DELETE", f"/v1/admin/tools/{slug}/price")
    else:
        price = call("GET", f"/v1/tools/{slug}")["price"]
    if as_json:
        print_json(price)
        return
    unit = {"per_run": "per run", "per_megapixel": "per megapixel", "per_gpu_second": "per GPU second"}
    what = (
        f"{price['credits']} credits {unit[price['model']]}"
        if price["model"] in unit
        else "derived from what it costs us"
    )
    if price.get("cap") is not None:
        what += f", at most {price['cap']}"
    estimate = price.get("estimate")
    console.print(
        f"{slug}: {what}"
        + (f" (a run with its defaults: {estimate} credits)" if estimate is not None else "")
    )
