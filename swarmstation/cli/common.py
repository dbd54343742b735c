"""What the command groups share: output helpers, and the one place where a command that talks
to the control plane gets its `--url` and `--api-key` options.

A command declared with `cls=ClientCommand` takes both options (and their environment variables)
without naming them; inside it, `connect()` opens a client and `call()` makes one request."""

from __future__ import annotations

import json
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand

from swarmstation.client import Client, ClientError

console = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]
UrlOpt = Annotated[str | None, typer.Option("--url", envvar="SWARMSTATION_URL", help="Control plane URL")]
KeyOpt = Annotated[
    str | None, typer.Option("--api-key", envvar="SWARMSTATION_API_KEY", help="API key", show_default=False)
]
# Options of the server-side commands (up, serve, bench).
HostOpt = Annotated[str | None, typer.Option("--host", help="Bind address [env SWARMSTATION_HOST]")]
PortOpt = Annotated[int | None, typer.Option("--port", help="Port [env SWARMSTATION_PORT]")]
DbOpt = Annotated[
    str | None, typer.Option("--database-url", help="SQLAlchemy URL [env SWARMSTATION_DATABASE_URL]")
]
LogOpt = Annotated[str, typer.Option("--log-level")]


def fail(message: str) -> NoReturn:
    # The message is the server's or a library's text: printed as is (no rich markup, no wrapping).
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(1)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def parse_inputs(pairs: list[str]) -> dict[str, Any]:
    """NAME=VALUE pairs; a VALUE that parses as JSON is that JSON, otherwise the text."""
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


# -- the shared connection options ---------------------------------------------------------------
@dataclass(frozen=True)
class ControlPlane:
    """Where a client command connects, as its --url/--api-key (or their variables) said."""

    url: str | None
    api_key: str | None


# Set for the duration of one ClientCommand, read by connect().
_control_plane: ContextVar[ControlPlane | None] = ContextVar("control_plane", default=None)


def _connection_options(url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """A template only: Typer turns its parameters into the options every client command gets."""


class ClientCommand(TyperCommand):
    """A command that talks to the control plane: it takes --url and --api-key, which connect()
    reads, instead of passing them to the command's function."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        template = typer.Typer(add_completion=False)
        template.command()(_connection_options)
        # After the command's own options, where each command used to declare them.
        self.params.extend(typer.main.get_command(template).params)
        command = self.callback
        assert command is not None

        def with_control_plane(*, url: str | None, api_key: str | None, **params: Any) -> Any:
            token = _control_plane.set(ControlPlane(url=url, api_key=api_key))
            try:
                return command(**params)
            finally:
                _control_plane.reset(token)

        self.callback = with_control_plane


def connect() -> Client:
    """A client for the control plane the running ClientCommand was pointed at."""
    plane = _control_plane.get()
    if plane is None:
        raise RuntimeError("connect() is for commands declared with cls=ClientCommand")
    return Client(plane.url, plane.api_key)


def call(method: str, path: str, **kwargs: Any) -> Any:
    """One request; its JSON answer (None when empty). An error ends the command with its message."""
    with connect() as client:
        try:
            resp = client.request(method, path, **kwargs)
        except ClientError as exc:
            fail(str(exc))
    return resp.json() if resp.content else None
