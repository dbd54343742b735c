"""The `swarmstation` command line: one module per command group, joined here.

Commands that talk to the control plane are declared with `cls=ClientCommand`
(swarmstation/cli/common.py), which gives each of them the same --url and --api-key options."""

from __future__ import annotations

import os
import sys

import httpx
import typer
from rich.markup import escape

from swarmstation.cli import (
    bench,
    chat,
    comfydeploy,
    costs,
    credits,
    emulator,
    eval_agent,
    instances,
    jobs,
    keys,
    loras,
    models,
    pipelines,
    pool,
    serve,
    status,
    tools,
    users,
    worker,
)
from swarmstation.cli.common import err
from swarmstation.client import ClientError
from swarmstation.sim.cli import sim_app

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="swarmstation: generative AI on your own GPU pool"
)
# Commands of the root (no name: their commands join the root's), in the order `--help` lists them.
for commands in (
    serve.app,
    worker.app,
    emulator.app,
    jobs.app,
    status.app,
    comfydeploy.app,
    costs.app,
    bench.app,
    chat.app,
    eval_agent.app,
):
    app.add_typer(commands)
app.add_typer(tools.app, name="tools")
app.add_typer(users.app, name="users")
app.add_typer(credits.app, name="credits")
app.add_typer(keys.app, name="keys")
app.add_typer(loras.app, name="loras")
app.add_typer(pool.app, name="pool")
app.add_typer(instances.app, name="instances")
app.add_typer(models.app, name="models")
app.add_typer(pipelines.app, name="pipelines")
app.add_typer(sim_app, name="simulate", help="Discrete-event simulation of the pool against the alternatives")


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
