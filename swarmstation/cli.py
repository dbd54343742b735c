"""The `swarmstation` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from swarmstation.client import Client, ClientError
from swarmstation.sim.cli import sim_app

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="swarmstation: generative AI on your own GPU pool"
)
tools_app = typer.Typer(no_args_is_help=True, help="List, show, add and remove tools")
users_app = typer.Typer(no_args_is_help=True, help="Users and API keys (admin)")
models_app = typer.Typer(
    no_args_is_help=True, help="The model catalog (admin): list, upload, register a URL, remove"
)
instances_app = typer.Typer(
    no_args_is_help=True, help="Attach your own machines to a pool (admin): attach, detach, rotate-token"
)
pool_app = typer.Typer(no_args_is_help=True, help="Pools of instances (admin): list, show, add, set, remove")
loras_app = typer.Typer(no_args_is_help=True, help="The LoRA registry: list, import, approve, grant, resolve")
app.add_typer(tools_app, name="tools")
app.add_typer(users_app, name="users")
app.add_typer(loras_app, name="loras")
app.add_typer(pool_app, name="pool")
app.add_typer(instances_app, name="instances")
app.add_typer(models_app, name="models")
app.add_typer(sim_app, name="simulate", help="Discrete-event simulation of the pool against the alternatives")

console = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]
UrlOpt = Annotated[str | None, typer.Option("--url", envvar="SWARMSTATION_URL", help="Control plane URL")]
KeyOpt = Annotated[
    str | None, typer.Option("--api-key", envvar="SWARMSTATION_API_KEY", help="API key", show_default=False)
]


def fail(message: str) -> NoReturn:
    # The message is the server's or a library's text: printed as is (no rich markup, no wrapping).
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(1)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


# -- server ------------------------------------------------------------------------------------
def _serve(
    *,
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    database_url: str | None,
    provider: str | None,
    stop_instances: bool,
    log_level: str,
) -> None:
    import uvicorn

    from swarmstation.api.app import build
    from swarmstation.config import ConfigError, load_settings

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(
            host=host, port=port, data_dir=data_dir, database_url=database_url, provider=provider
        )
    except ConfigError as exc:
        fail(str(exc))
    try:
        plane = build(settings)
    except Exception as exc:  # an unreachable database, an unwritable folder: say so plainly
        fail(f"cannot start the control plane: {exc}")
    console.print(
        f"[bold green]swarmstation[/bold green] control plane on [bold]{settings.base_url}[/bold]"
        f"  (API docs: {settings.base_url}/docs)"
    )
    console.print(
        f"data directory: {settings.data_dir.resolve()}  database: {settings.sqlalchemy_url.split('@')[-1]}"
    )
    if plane.admin_key:
        console.print(f"first admin API key: [bold]{plane.admin_key}[/bold]")
        console.print(f"(saved to {plane.admin_key_file}; the CLI uses it from this folder)")
    else:
        console.print(f"admin API key: in {plane.admin_key_file}")
    console.print(
        f"compute provider: {settings.provider}; default pool min {settings.pool_min_instances}, "
        f"max {settings.pool_max_instances}"
    )
    plane.stop_instances_on_exit = stop_instances

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            plane.begin_shutdown()  # workers' long polls answer at once instead of holding the exit
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        plane.app, host=settings.host, port=settings.port, log_level="warning", access_log=False
    )
    server = Server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:  # as uvicorn.run does: the port was taken, the startup failed
        raise typer.Exit(3)


HostOpt = Annotated[str | None, typer.Option("--host", help="Bind address [env SWARMSTATION_HOST]")]
PortOpt = Annotated[int | None, typer.Option("--port", help="Port [env SWARMSTATION_PORT]")]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", help="Data folder [env SWARMSTATION_DATA_DIR]")]
DbOpt = Annotated[
    str | None, typer.Option("--database-url", help="SQLAlchemy URL [env SWARMSTATION_DATABASE_URL]")
]
LogOpt = Annotated[str, typer.Option("--log-level")]


@app.command()
def up(
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: DataOpt = None,
    database_url: DbOpt = None,
    log_level: LogOpt = "warning",
) -> None:
    """Start everything on this machine: control plane, SQLite, local object store and local instances."""
    _serve(
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        provider=None,
        stop_instances=True,
        log_level=log_level,
    )


@app.command()
def serve(
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: DataOpt = None,
    database_url: DbOpt = None,
    provider: Annotated[str | None, typer.Option("--provider", help="local or none")] = None,
    log_level: LogOpt = "warning",
) -> None:
    """Run one control-plane replica; instances keep running when it exits."""
    _serve(
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        provider=provider,
        stop_instances=False,
        log_level=log_level,
    )


@app.command()
def worker(
    server: Annotated[str, typer.Option("--server", help="Control plane URL")],
    comfyui: Annotated[str, typer.Option("--comfyui", help="ComfyUI URL")] = "http://127.0.0.1:8188",
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="SWARMSTATION_WORKER_TOKEN", help="This instance's token", show_default=False
        ),
    ] = None,
    comfy_dir: Annotated[
        Path | None, typer.Option("--comfy-dir", help="ComfyUI folder: models are fetched into it")
    ] = None,
    cache_budget_gb: Annotated[
        float | None,
        typer.Option(
            "--cache-budget-gb",
            envvar="SWARMSTATION_CACHE_BUDGET_GB",
            min=0.000001,
            help="Disk budget for cached models; the least recently used idle ones are evicted",
        ),
    ] = None,
    unreachable_timeout: Annotated[
        float,
        typer.Option(
            "--unreachable-timeout",
            envvar="SWARMSTATION_WORKER_UNREACHABLE_TIMEOUT",
            min=1,
            help="Exit when the control plane has not answered for this many seconds",
        ),
    ] = 600.0,
    log_level: LogOpt = "info",
) -> None:
    """Run the worker agent beside a ComfyUI (or the emulator). It exits (status 1, with a line
    saying why) when the control plane does not know its token or stays unreachable."""
    from swarmstation.worker.agent import WorkerConfig, run_worker

    if not token:
        fail("a worker token is needed: --token or SWARMSTATION_WORKER_TOKEN")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines would carry presigned URLs
    budget = int(cache_budget_gb * 1024**3) if cache_budget_gb else None
    status = run_worker(
        WorkerConfig(
            server_url=server,
            token=token,
            comfyui_url=comfyui,
            comfy_dir=comfy_dir,
            cache_budget_bytes=budget,
            retry_for=unreachable_timeout,
        )
    )
    if status:
        raise typer.Exit(status)


@app.command("comfy-emulator")
def comfy_emulator(
    port: Annotated[int, typer.Option("--port")] = 8188,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    base_dir: Annotated[Path, typer.Option("--base-dir", help="Folder with models/, input/, output/")] = Path(
        "comfyui"
    ),
    step_seconds: Annotated[float, typer.Option("--step-seconds", min=0)] = 0.05,
    model_load_seconds: Annotated[float, typer.Option("--model-load-seconds", min=0)] = 0.2,
) -> None:
    """Run the ComfyUI emulator: the real ComfyUI API, with Pillow instead of a GPU."""
    from swarmstation.comfy.emulator import EmulatorConfig, run_emulator
    from swarmstation.providers.local import parse_preload_env, write_placeholder_models

    # An emulated instance "has" the pool's preload models: placeholder files, since it loads none.
    write_placeholder_models(base_dir, parse_preload_env(os.environ.get("SWARMSTATION_PRELOAD_MODELS", "[]")))
    run_emulator(
        host,
        port,
        EmulatorConfig(base_dir=base_dir, step_seconds=step_seconds, model_load_seconds=model_load_seconds),
    )


# -- client commands -----------------------------------------------------------------------------
def _client(url: str | None, key: str | None) -> Client:
    return Client(url, key)


def _parse_inputs(pairs: list[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            fail(f"--input takes NAME=VALUE, got {pair!r}")
        try:
            inputs[name] = json.loads(raw)
        except ValueError:
            inputs[name] = raw
    return inputs


def _follow(client: Client, job_id: str, quiet: bool) -> dict[str, Any]:
    """Show a progress bar fed by the job's event stream; reconnects if the stream drops."""
    last_id: str | None = None
    with Progress(
        TextColumn("[bold]{task.fields[state]:<10}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=False,
    ) as bar:
        task = bar.add_task("job", total=1.0, state="QUEUED")
        for attempt in range(1000):
            try:
                for ev in client.events(job_id, last_id):
                    last_id = ev.id
                    if ev.type == "progress":
                        bar.update(task, completed=float(ev.data.get("progress", 0.0)))
                    elif ev.type == "state":
                        state = ev.data["state"]
                        bar.update(task, state=state)
                        if state == "QUEUED" and ev.data.get("reason"):
                            bar.update(task, completed=0.0)
                            err.print(f"[yellow]requeued:[/yellow] {ev.data['reason']}")
                        if state == "COMPLETED":
                            bar.update(task, completed=1.0)
                break
            except (httpx.HTTPError, ClientError) as exc:
                if attempt > 120:
                    raise ClientError(f"lost the event stream: {exc}") from exc
                time.sleep(min(5.0, 0.5 * (attempt + 1)))
    job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}")
    return job


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What to make")],
    tool: Annotated[str, typer.Option("--tool", "-t")] = "sdxl-txt2img",
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the image")] = Path("out.png"),
    inputs: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="NAME=VALUE (JSON value or text)")
    ] = None,
    image: Annotated[
        Path | None, typer.Option("--image", help="Input image for img2img / upscale tools")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Submit and print the job id")] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Run a tool on a prompt and save the image, with live progress."""
    body_inputs = _parse_inputs(inputs or [])
    with _client(url, api_key) as client:
        try:
            detail = client.get(f"/v1/tools/{tool}")
            names = {i["name"] for i in detail["inputs"]}
            if "prompt" in names:
                body_inputs.setdefault("prompt", prompt)
            if seed is not None:
                body_inputs["seed"] = seed
            if image is not None:
                if not image.is_file():
                    fail(f"no such image file: {image}")
                with image.open("rb") as fh:
                    up = client.post("/v1/uploads", files={"file": (image.name, fh)})
                image_inputs = [i["name"] for i in detail["inputs"] if i["type"] == "image"]
                if not image_inputs:
                    fail(f"tool {tool} takes no image")
                body_inputs[image_inputs[0]] = up["ref"]
            job = client.post("/v1/jobs", json={"tool": tool, "inputs": body_inputs})
            if no_wait:
                _print_json(job) if as_json else console.print(job["id"])
                return
            if not as_json:
                err.print(f"job {job['id']} queued (tool {tool}, seed {job['inputs'].get('seed', '-')})")
            job = _follow(client, job["id"], quiet=as_json)
            if job["state"] != "COMPLETED":
                if as_json:
                    _print_json(job)
                fail(f"job {job['id']} {job['state']}: {job.get('error') or 'no reason given'}")
            written = []
            for n, output in enumerate(job["outputs"]):
                target = out if n == 0 else out.with_name(f"{out.stem}-{n}{out.suffix}")
                client.download(output["url"], target)
                written.append(str(target))
            if as_json:
                _print_json({**job, "written": written})
            else:
                console.print(f"[green]done[/green] in {_seconds(job)}: " + ", ".join(written))
        except ClientError as exc:
            fail(str(exc))


def _seconds(job: dict[str, Any]) -> str:
    from datetime import datetime

    try:
        start = datetime.fromisoformat(job["created_at"])
        end = datetime.fromisoformat(job["finished_at"])
        return f"{(end - start).total_seconds():.1f}s"
    except (KeyError, TypeError, ValueError):
        return "?"


@app.command()
def status(
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    all_instances: Annotated[bool, typer.Option("--all", help="Include terminated instances")] = False,
) -> None:
    """Pools, instances with their state, and the queue."""
    with _client(url, api_key) as client:
        try:
            data = client.get("/v1/admin/status", params={"include_terminated": all_instances})
        except ClientError as exc:
            fail(str(exc))
    if as_json:
        _print_json(data)
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


# -- tools ---------------------------------------------------------------------------------------
@tools_app.command("list")
def tools_list(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List the tools."""
    with _client(url, api_key) as client:
        try:
            tools = client.get("/v1/tools")
        except ClientError as exc:
            fail(str(exc))
    if as_json:
        _print_json(tools)
        return
    table = Table()
    for col in ("slug", "name", "category", "base model", "pool"):
        table.add_column(col)
    for t in tools:
        table.add_row(t["slug"], t["name"], t["category"], t["base_model"], t["pool"])
    console.print(table)


@tools_app.command("show")
def tools_show(slug: str, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Show a tool: inputs, models and workflow."""
    with _client(url, api_key) as client:
        try:
            tool = client.get(f"/v1/tools/{slug}")
        except ClientError as exc:
            fail(str(exc))
    if as_json:
        _print_json(tool)
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


@tools_app.command("add")
def tools_add(
    file: Annotated[Path, typer.Argument(help="Tool JSON: metadata, API-format workflow and inputs")],
    replace: Annotated[bool, typer.Option("--replace", help="Update a tool with the same slug")] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Add a tool from a JSON file (admin)."""
    try:
        body = json.loads(file.read_text())
    except OSError as exc:
        fail(f"cannot read {file}: {exc}")
    except ValueError as exc:
        fail(f"{file} is not valid JSON: {exc}")
    with _client(url, api_key) as client:
        try:
            tool = client.post("/v1/admin/tools", json=body, params={"replace": replace})
        except ClientError as exc:
            fail(str(exc))
    _print_json(tool) if as_json else console.print(f"added tool [bold]{tool['slug']}[/bold]")


@tools_app.command("split")
def tools_split(
    slug: str,
    comfydeploy: Annotated[
        int, typer.Option("--comfydeploy", min=0, max=100, help="Percent of jobs to ComfyUI Deploy")
    ],
    deployment: Annotated[
        str | None, typer.Option("--deployment", help="ComfyUI Deploy deployment id")
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Send a share of a tool's jobs to ComfyUI Deploy (admin); the rest run on the pool."""
    body: dict[str, Any] = {"comfydeploy_percent": comfydeploy}
    if deployment:
        body["deployment_id"] = deployment
    data = _call(url, api_key, "PUT", f"/v1/admin/tools/{slug}/split", json=body)
    console.print(
        f"{slug}: {data['comfydeploy_percent']}% to ComfyUI Deploy ({data['deployment_id'] or '-'}), "
        f"{100 - data['comfydeploy_percent']}% to the pool"
    )


@app.command("comfydeploy")
def comfydeploy_list(
    what: Annotated[str, typer.Argument(help="deployments or machines")] = "deployments",
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """List ComfyUI Deploy deployments (each can serve a tool through a split) or machines."""
    data = _call(url, api_key, "GET", f"/v1/admin/comfydeploy/{what}")
    if as_json:
        _print_json(data)
        return
    for item in data:
        console.print("  ".join(f"{k}={v}" for k, v in item.items() if v is not None))


@tools_app.command("from-deployment")
def tools_from_deployment(
    deployment: Annotated[str, typer.Argument(help="ComfyUI Deploy deployment id")],
    slug: Annotated[str, typer.Option("--slug", help="The new tool's slug")],
    like: Annotated[str, typer.Option("--like", help="A tool with the same inputs and base model")],
    name: Annotated[str | None, typer.Option("--name")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Offer a ComfyUI Deploy deployment as a tool (admin): every job of it runs there."""
    body: dict[str, Any] = {"slug": slug, "like": like, **({"name": name} if name else {})}
    data = _call(url, api_key, "POST", f"/v1/admin/comfydeploy/deployments/{deployment}/tool", json=body)
    _print_json(data) if as_json else console.print(f"added tool [bold]{data['slug']}[/bold] on {deployment}")


@tools_app.command("remove")
def tools_remove(slug: str, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Remove a tool (admin)."""
    with _client(url, api_key) as client:
        try:
            client.delete(f"/v1/admin/tools/{slug}")
        except ClientError as exc:
            fail(str(exc))
    console.print(f"removed tool {slug}")


# -- users ---------------------------------------------------------------------------------------
@users_app.command("create")
def users_create(
    name: str,
    role: Annotated[str, typer.Option("--role")] = "user",
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Create a user and print its API key (shown once)."""
    with _client(url, api_key) as client:
        try:
            user = client.post("/v1/admin/users", json={"name": name, "role": role})
        except ClientError as exc:
            fail(str(exc))
    _print_json(user) if as_json else console.print(
        f"user {user['name']} ({user['role']}): {user['api_key']}"
    )


@users_app.command("list")
def users_list(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List users."""
    with _client(url, api_key) as client:
        try:
            users = client.get("/v1/admin/users")
        except ClientError as exc:
            fail(str(exc))
    if as_json:
        _print_json(users)
        return
    for u in users:
        console.print(f"{u['id']}  {u['name']:<20} {u['role']}")


# -- models ---------------------------------------------------------------------------------------
@models_app.command("list")
def models_list(
    folder: Annotated[str | None, typer.Option("--folder")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """List the model catalog."""
    data = _call(url, api_key, "GET", "/v1/admin/models", params={"folder": folder} if folder else {})
    if as_json:
        _print_json(data)
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


@models_app.command("upload")
def models_upload(
    file: Annotated[Path, typer.Argument(help="The model file")],
    folder: Annotated[str, typer.Option("--folder", help="ComfyUI folder: checkpoints, loras, vae, ...")],
    name: Annotated[
        str | None, typer.Option("--name", help="Name inside the folder (default: the file name)")
    ] = None,
    kind: Annotated[str, typer.Option("--kind")] = "other",
    base_model: Annotated[str, typer.Option("--base-model")] = "other",
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
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

    with _client(url, api_key) as client:
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
    _print_json(data) if as_json else console.print(
        f"uploaded {folder}/{data['name']} sha256 {data['sha256']}"
    )


@models_app.command("add-url")
def models_add_url(
    source: Annotated[str, typer.Argument(help="https URL on an allowed host (Hugging Face, Civitai, ...)")],
    folder: Annotated[str, typer.Option("--folder")],
    name: Annotated[str, typer.Option("--name")],
    kind: Annotated[str, typer.Option("--kind")] = "other",
    sha256: Annotated[str | None, typer.Option("--sha256")] = None,
    size: Annotated[int | None, typer.Option("--size")] = None,
    base_model: Annotated[str, typer.Option("--base-model")] = "other",
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
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
    data = _call(url, api_key, "POST", "/v1/admin/models", json=body)
    _print_json(data) if as_json else console.print(f"registered {folder}/{data['name']}")


@models_app.command("remove")
def models_remove(model_id: str, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Remove a model from the catalog (and its file from the object store)."""
    _call(url, api_key, "DELETE", f"/v1/admin/models/{model_id}")
    console.print(f"removed model {model_id}")


# -- pools ---------------------------------------------------------------------------------------
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="KEY=VALUE, VALUE as JSON or text, e.g. max_instances=4 or "
        'gpu_filters=\'{"gpu_names": ["RTX 4090"], "max_price_per_hour": 0.6}\'',
    ),
]


def _pool_table(pools: list[dict[str, Any]]) -> Table:
    table = Table()
    for col in ("pool", "provider", "min", "max", "instances", "parked", "queued", "spend cap $/h", "image"):
        table.add_column(col)
    for p in pools:
        counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(p["instances"].items()) if k != "TERMINATED")
        table.add_row(
            p["name"],
            p["provider"],
            str(p["min_instances"]),
            str(p["max_instances"]),
            counts or "none",
            f"{p.get('parked', 0)}/{p.get('max_parked', 0)}",
            str(p["queued"]),
            str(p["max_spend_per_hour"] or "-"),
            p["image"] or "-",
        )
    return table


@pool_app.command("list")
def pool_list(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List pools."""
    data = _call(url, api_key, "GET", "/v1/admin/pools")
    _print_json(data) if as_json else console.print(_pool_table(data))


@pool_app.command("show")
def pool_show(name: str, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Show a pool's settings."""
    data = _call(url, api_key, "GET", f"/v1/admin/pools/{name}")
    if as_json:
        _print_json(data)
        return
    for key, value in data.items():
        console.print(f"{key:<30} {value}")


@pool_app.command("add")
def pool_add(
    name: str, settings: SetOpt = None, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None
) -> None:
    """Create a pool."""
    data = _call(
        url, api_key, "POST", "/v1/admin/pools", json={"name": name, **_parse_inputs(settings or [])}
    )
    _print_json(data) if as_json else console.print(f"created pool {data['name']}")


@pool_app.command("set")
def pool_set(
    name: str, settings: SetOpt = None, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None
) -> None:
    """Change a pool's settings."""
    if not settings:
        fail("nothing to change: pass --set KEY=VALUE")
    data = _call(url, api_key, "PATCH", f"/v1/admin/pools/{name}", json=_parse_inputs(settings))
    _print_json(data) if as_json else console.print(f"updated pool {name}")


@pool_app.command("remove")
def pool_remove(name: str, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Remove a pool with no instances and no tools."""
    _call(url, api_key, "DELETE", f"/v1/admin/pools/{name}")
    console.print(f"removed pool {name}")


# -- instances (bring your own machine) ------------------------------------------------------
def _print_attached(data: dict[str, Any], as_json: bool, what: str) -> None:
    if as_json:
        _print_json({k: data[k] for k in ("instance_id", "token", "command")})
        return
    console.print(f"{what} instance {data['instance_id']}")
    console.print("its worker token (shown once; rotate it with `swarmstation instances rotate-token`):")
    print(data["token"])
    console.print("on that machine, start ComfyUI (python main.py --listen 127.0.0.1 --port 8188), then run:")
    print(data["command"])


@instances_app.command("attach")
def instances_attach(
    pool: Annotated[str, typer.Option("--pool", help="The pool it serves")],
    name: Annotated[str | None, typer.Option("--name", help="A label for the machine")] = None,
    slots: Annotated[int | None, typer.Option("--slots", min=1, max=64, help="Jobs at once")] = None,
    price_per_hour: Annotated[
        float, typer.Option("--price-per-hour", min=0, help="Its cost per hour, for billing")
    ] = 0.0,
    server: Annotated[
        str | None, typer.Option("--server", help="The control plane's URL as that machine reaches it")
    ] = None,
    comfyui: Annotated[str, typer.Option("--comfyui", help="ComfyUI's URL on that machine")] = (
        "http://127.0.0.1:8188"
    ),
    comfy_dir: Annotated[str, typer.Option("--comfy-dir", help="ComfyUI's folder on that machine")] = (
        "/path/to/ComfyUI"
    ),
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Register a machine you run yourself (provider `static`); prints its token and worker command once."""
    body: dict[str, Any] = {
        "pool": pool,
        "price_per_hour": price_per_hour,
        "comfyui_url": comfyui,
        "comfy_dir": comfy_dir,
    }
    for key, value in (("name", name), ("slots", slots), ("server_url", server)):
        if value is not None:
            body[key] = value
    _print_attached(_call(url, api_key, "POST", "/v1/admin/instances", json=body), as_json, "attached")


@instances_app.command("detach")
def instances_detach(
    instance_id: str, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None
) -> None:
    """Detach an attached machine: it finishes its running jobs, then its token stops working."""
    data = _call(url, api_key, "POST", f"/v1/admin/instances/{instance_id}/detach")
    if as_json:
        _print_json(data)
    elif data["state"] == "TERMINATED":
        console.print(f"detached instance {instance_id}")
    else:
        console.print(f"instance {instance_id} is draining; it is detached when its jobs are done")


@instances_app.command("rotate-token")
def instances_rotate_token(
    instance_id: str, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None
) -> None:
    """Replace an attached machine's token (the old one stops working at once)."""
    data = _call(url, api_key, "POST", f"/v1/admin/instances/{instance_id}/rotate-token")
    _print_attached(data, as_json, "new token for")


@app.command()
def costs(
    by: Annotated[str, typer.Option("--by", help="pool, instance, user, day or tool")] = "pool",
    since: Annotated[str | None, typer.Option("--since", help="ISO time with zone")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """What the pool costs, by pool, instance, user, day or tool (admin)."""
    params = {"group_by": by, **({"since": since} if since else {})}
    data = _call(url, api_key, "GET", "/v1/admin/costs", params=params)
    if as_json:
        _print_json(data)
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


# -- loras ---------------------------------------------------------------------------------------
def _call(url: str | None, api_key: str | None, method: str, path: str, **kwargs: Any) -> Any:
    with _client(url, api_key) as client:
        try:
            resp = client.request(method, path, **kwargs)
        except ClientError as exc:
            fail(str(exc))
    return resp.json() if resp.content else None


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


@loras_app.command("list")
def loras_list(
    base_model: Annotated[
        str | None, typer.Option("--base-model", help="e.g. SDXL (includes Pony, ...)")
    ] = None,
    tag: Annotated[str | None, typer.Option("--tag")] = None,
    query: Annotated[str | None, typer.Option("--search", "-q")] = None,
    status: Annotated[str | None, typer.Option("--status", help="pending_review, approved, ...")] = None,
    mine: Annotated[bool, typer.Option("--mine")] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """List and search LoRAs you can see."""
    params = {
        k: v for k, v in {"base_model": base_model, "tag": tag, "q": query, "status": status}.items() if v
    }
    if mine:
        params["mine"] = "true"
    data = _call(url, api_key, "GET", "/v1/loras", params=params)
    _print_json(data) if as_json else console.print(_lora_table(data["loras"]))


@loras_app.command("show")
def loras_show(slug: str, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Show one LoRA."""
    data = _call(url, api_key, "GET", f"/v1/loras/{slug}")
    if as_json:
        _print_json(data)
        return
    console.print(
        f"[bold]{data['name']}[/bold] ({data['slug']}) — {data['base_model']} "
        f"[{data['source_base_model']}], {data['visibility']}, {data['moderation_status']}"
    )
    console.print(f"triggers: {', '.join(data['triggers']) or '-'}")
    console.print(f"file: {data['file_name']} sha256 {data['file_sha256'] or '?'} staged {data['staged']}")
    if data["moderation_reason"]:
        console.print(f"reason: {data['moderation_reason']}")


@loras_app.command("import")
def loras_import(
    source: Annotated[str, typer.Argument(help="Civitai model/version URL or Hugging Face repo URL")],
    visibility: Annotated[str, typer.Option("--visibility")] = "public",
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Import a LoRA's metadata; it waits for an admin's approval."""
    data = _call(url, api_key, "POST", "/v1/loras/import", json={"url": source, "visibility": visibility})
    _print_json(data) if as_json else console.print(
        f"imported [bold]{data['slug']}[/bold] ({data['base_model']}), waiting for review"
    )


@loras_app.command("approve")
def loras_approve(
    slug: str,
    visibility: Annotated[str | None, typer.Option("--visibility")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Stage the file (download, verify sha256) and approve (admin)."""
    body = {"visibility": visibility} if visibility else {}
    with console.status(f"staging {slug}…"), _client(url, api_key) as client:
        client.http.timeout = httpx.Timeout(30.0, read=3600.0)
        try:
            data = client.post(f"/v1/admin/loras/{slug}/approve", json=body)
        except ClientError as exc:
            fail(str(exc))
    if as_json:
        _print_json(data)
    elif data["moderation_status"] != "approved":
        fail(f"{slug} {data['moderation_status']}: {data['moderation_reason']}")
    else:
        console.print(f"approved {slug} ({data['file_size']} bytes staged)")


@loras_app.command("reject")
def loras_reject(
    slug: str, reason: Annotated[str, typer.Option("--reason")], url: UrlOpt = None, api_key: KeyOpt = None
) -> None:
    """Reject an imported LoRA (admin)."""
    _call(url, api_key, "POST", f"/v1/admin/loras/{slug}/reject", json={"reason": reason})
    console.print(f"rejected {slug}")


@loras_app.command("grant")
def loras_grant(
    slug: str,
    user: str,
    expires: Annotated[
        str | None, typer.Option("--expires", help="ISO time, e.g. 2026-12-31T00:00:00Z")
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Let a user use your private LoRA."""
    body: dict[str, Any] = {"user": user}
    if expires:
        body["expires_at"] = expires
    _call(url, api_key, "POST", f"/v1/loras/{slug}/grants", json=body)
    console.print(f"granted {slug} to {user}")


@loras_app.command("revoke")
def loras_revoke(slug: str, user: str, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Take a grant back."""
    _call(url, api_key, "DELETE", f"/v1/loras/{slug}/grants/{user}")
    console.print(f"revoked {user}'s access to {slug}")


@loras_app.command("triggers")
def loras_triggers(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """The trigger map: trigger word or phrase → LoRAs."""
    data = _call(url, api_key, "GET", "/v1/loras/trigger-map")
    if as_json:
        _print_json(data)
        return
    for trigger, slugs in data.items():
        console.print(f"{trigger:<30} {', '.join(slugs)}")


@loras_app.command("resolve")
def loras_resolve(
    prompt: str,
    tool: Annotated[str, typer.Option("--tool", "-t")] = "sdxl-txt2img",
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Show what a prompt resolves to for a tool, without running it."""
    data = _call(url, api_key, "POST", "/v1/loras/resolve", json={"prompt": prompt, "tool": tool})
    if as_json:
        _print_json(data)
        return
    console.print(f"encoder text: {data['prompt']}")
    for lo in data["loras"]:
        console.print(
            f"  {lo['slug']}  model {lo['strength_model']:g} clip {lo['strength_clip']:g}  "
            f"({lo['source']}: {lo['matched_text']})"
        )
    for w in data["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")


# -- bench ---------------------------------------------------------------------------------------
@app.command()
def bench(
    workers: Annotated[int, typer.Option("--workers", min=1, max=64)] = 16,
    jobs: Annotated[int, typer.Option("--jobs", min=1, max=100_000)] = 2000,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=512, help="Clients in a closed loop")
    ] = 16,
    database_url: DbOpt = None,
) -> None:
    """Control-plane throughput and overhead with emulated workers that take no time (prints JSON)."""
    from swarmstation.bench import BenchConfig, run_bench

    result = run_bench(
        BenchConfig(workers=workers, jobs=jobs, concurrency=concurrency, database_url=database_url),
        progress=err,
    )
    _print_json(result)


@app.command("bench-loras")
def bench_loras(
    prompts: Annotated[int, typer.Option("--prompts", min=1, max=100_000)] = 200,
    loras: Annotated[int, typer.Option("--loras", min=1, max=1_000_000)] = 10_000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """LoRA resolution time per 200-word prompt against a large synthetic registry (prints JSON)."""
    from swarmstation.lora_bench import run_lora_bench

    _print_json(run_lora_bench(prompts=prompts, loras=loras, seed=seed))


@app.command("bench-routing")
def bench_routing(
    instances: Annotated[int, typer.Option("--instances", min=1, max=100_000)] = 1000,
    jobs: Annotated[int, typer.Option("--jobs", min=1, max=1_000_000)] = 10_000,
    free_fraction: Annotated[float, typer.Option("--free-fraction", min=0.0, max=1.0)] = 0.15,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Routing cost per assignment with many instances and a long queue (prints JSON)."""
    from swarmstation.routing_bench import run_routing_bench

    _print_json(run_routing_bench(instances=instances, jobs=jobs, seed=seed, free_fraction=free_fraction))


def _where(url: httpx.URL) -> str:
    # Never the query: presigned URLs carry their signature there.
    return f"{url.scheme}://{url.netloc.decode()}{url.path}"


def _fatal_message(exc: Exception) -> str | None:
    """What to tell the person at the terminal about an error no command handled itself
    (None: a bug, which keeps its traceback)."""
    from swarmstation.client import error_detail

    if isinstance(exc, ClientError):
        return str(exc)
    if isinstance(exc, httpx.HTTPStatusError):
        resp = exc.response
        if resp.status_code == 401 and "/worker/" in resp.url.path:
            return f"the control plane refused this worker: {error_detail(resp)} (HTTP 401; check --token)"
        return (
            f"{exc.request.method} {_where(exc.request.url)} answered HTTP {resp.status_code}: "
            f"{error_detail(resp)}"
        )
    if isinstance(exc, httpx.TransportError):
        try:
            where = _where(exc.request.url)
        except RuntimeError:  # raised without a request
            where = "the server"
        if isinstance(exc, httpx.ConnectError):
            return f"cannot connect to {where}: {exc}"
        return f"the connection to {where} failed: {type(exc).__name__}: {exc}"
    if isinstance(exc, ConnectionError):  # the worker gave up on an unreachable control plane
        return str(exc)
    return None


def main() -> None:
    """The entry point: a server's refusal or an unreachable server ends any command with one
    line and exit status 1, never a traceback."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        app()
    except Exception as exc:
        message = _fatal_message(exc)
        if message is None:
            raise
        err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
