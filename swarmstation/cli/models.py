"""`swarmstation models`: the model catalog (admin)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
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
from swarmstation.client import ClientError

app = typer.Typer(
    no_args_is_help=True, help="The model catalog (admin): list, upload, register a URL, remove"
)


@app.command("list", cls=ClientCommand)
def models_list(
    folder: Annotated[str | None, typer.Option("--folder")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the model catalog."""
    data = call("GET", "/v1/admin/models", params={"folder": folder} if folder else {})
    if as_json:
        print_json(data)
        return
    table = Table()
    for col in ("id", "folder/name", "kind", "size", "source", "base"):
        table.add_column(col)
    for m in data:
        table.add_row(
            m["id"][:8],
            f"{m['folder']}/{m['name']}",
            m["kind"],
            str(m["size"] or "?"),
            m["source_kind"] if m["source_kind"] == "object" else (m["url"] or "")[:40],
            m["base_model"],
        )
    console.print(table)


@app.command("upload", cls=ClientCommand)
def models_upload(
    file: Annotated[Path, typer.Argument(help="The model file")],
    folder: Annotated[str, typer.Option("--folder", help="ComfyUI folder: checkpoints, loras, vae, ...")],
    name: Annotated[
        str | None, typer.Option("--name", help="Name inside the folder (default: the file name)")
    ] = None,
    kind: Annotated[str, typer.Option("--kind")] = "other",
    base_model: Annotated[str, typer.Option("--base-model")] = "other",
    as_json: JsonOpt = False,
) -> None:
    """Upload a model file into the object store, with a progress bar."""
    if not file.is_file():
        fail(f"no such file: {file}")
    total = file.stat().st_size
    target = name or file.name

    def chunks(bar: Progress, task: Any) -> Any:
        with file.open("rb") as fh:
            while block := fh.read(1024 * 1024):
                bar.advance(task, len(block))
                yield block

    with connect() as client:
        client.http.timeout = httpx.Timeout(30.0, write=3600.0, read=3600.0)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TimeElapsedColumn(),
            console=err,
            disable=as_json,
        ) as bar:
            task = bar.add_task(f"uploading {file.name}", total=total)
            try:
                data = client.request(
                    "PUT",
                    f"/v1/admin/models/upload/{folder}/{target}",
                    params={"kind": kind, "base_model": base_model},
                    content=chunks(bar, task),
                    headers={"Content-Length": str(total)},
                ).json()
            except ClientError as exc:
                fail(str(exc))
    print_json(data) if as_json else console.print(
        f"uploaded {folder}/{data['name']} sha256 {data['sha256']}"
    )


@app.command("add-url", cls=ClientCommand)
def models_add_url(
    source: Annotated[str, typer.Argument(help="https URL on an allowed host (Hugging Face, Civitai, ...)")],
    folder: Annotated[str, typer.Option("--folder")],
    name: Annotated[str, typer.Option("--name")],
    kind: Annotated[str, typer.Option("--kind")] = "other",
    sha256: Annotated[str | None, typer.Option("--sha256")] = None,
    size: Annotated[int | None, typer.Option("--size")] = None,
    base_model: Annotated[str, typer.Option("--base-model")] = "other",
    as_json: JsonOpt = False,
) -> None:
    """Register a model that workers fetch from a public URL."""
    body: dict[str, Any] = {
        "folder": folder,
        "name": name,
        "kind": kind,
        "url": source,
        "base_model": base_model,
    }
    if sha256:
        body["sha256"] = sha256
    if size:
        body["size"] = size
    data = call("POST", "/v1/admin/models", json=body)
    print_json(data) if as_json else console.print(f"registered {folder}/{data['name']}")


@app.command("remove", cls=ClientCommand)
def models_remove(model_id: str) -> None:
    """Remove a model from the catalog (and its file from the object store)."""
    call("DELETE", f"/v1/admin/models/{model_id}")
    console.print(f"removed model {model_id}")
