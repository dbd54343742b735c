"""`swarmstation up` and `swarmstation serve`: the control plane in this process."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from swarmstation.cli.common import DbOpt, HostOpt, LogOpt, PortOpt, console, fail

app = typer.Typer()

DataOpt = Annotated[Path | None, typer.Option("--data-dir", help="Data folder [env SWARMSTATION_DATA_DIR]")]


def _serve(
    *,
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    database_url: str | None,
    provider: str | None,
    stop_instances: bool,
    open_signup: bool,
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
    if settings.open_signup is None:  # unset: each command's own default (`up` on, `serve` off)
        settings = settings.model_copy(update={"open_signup": open_signup})
    try:
        plane = build(settings)
    except Exception as exc:  # an unreachable database, an unwritable folder: say so plainly
        fail(f"cannot start the control plane: {exc}")
    console.print(
        f"[bold green]swarmstation[/bold green] control plane on [bold]{settings.base_url}[/bold]"
        f"  (API docs: {settings.base_url}/docs)"
    )
    from swarmstation.api.studio import DIST

    if (DIST / "index.html").is_file():
        console.print(f"web studio: [bold]{settings.base_url}/[/bold]")
    else:
        console.print("web studio: not built (`make run` builds it; or cd web && npm ci && npm run build)")
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
        open_signup=True,  # one machine, one person: a wallet signs in without an admin
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
        open_signup=False,
        log_level=log_level,
    )
