"""`swarmstation chat`: talk to the agent from the terminal, with the same approvals as the studio.

Without options it is an interactive chat: each plan is shown with its steps and price and asks
"approve? [y/N]"; an approved plan's run is followed on the conversation's event stream
(`/v1/conversations/{id}/events`: `item` and `run` events) until its result arrives. For scripts,
`--message TEXT --json` prints the reply items as JSON, and `--approve PLAN_ID` approves a plan
(`--wait` follows its run to the result)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from swarmstation.cli.common import ClientCommand, JsonOpt, connect, console, err, fail, print_json
from swarmstation.client import Client, ClientError, SseEvent

app = typer.Typer()

_QUIT = {"/quit", "/exit", "/q"}


def _request(client: Client, method: str, path: str, **kwargs: Any) -> Any:
    try:
        resp = client.request(method, path, **kwargs)
    except ClientError as exc:
        fail(str(exc))
    return resp.json() if resp.content else None


# -- showing items ---------------------------------------------------------------------------------
def show_item(item: dict[str, Any], *, agent: str, base_url: str) -> None:
    """One item, as a person reads it."""
    kind = item.get("type")
    if kind == "user_message":
        return
    if kind == "agent_message":
        console.print(f"[bold cyan]{escape(agent)}[/bold cyan]: {escape(item.get('text', ''))}")
        for tool in item.get("suggestions") or []:
            console.print(f"  • {escape(tool['name'])} ({escape(tool['slug'])})")
    elif kind == "plan":
        _show_plan(item)
    elif kind == "approval":
        how = " (auto-approved)" if item.get("auto") else ""
        console.print(f"[dim]plan {item['plan_id']} {item['decision']}{how}[/dim]")
    elif kind == "run":
        console.print(f"[dim]run {item['run_id']} started[/dim]")
    elif kind == "result":
        console.print(f"[green]result[/green] of run {item['run_id']}:")
        for out in item.get("outputs") or []:
            console.print(f"  {escape(out['step'])}.{escape(out['port'])}: {escape(base_url + out['url'])}")
        for step, values in (item.get("values") or {}).items():
            for port, value in values.items():
                console.print(f"  {escape(step)}.{escape(port)}: {escape(str(value))}")
    elif kind == "error":
        console.print(f"[red]error[/red]: {escape(item.get('message', ''))}")


def _show_plan(plan: dict[str, Any]) -> None:
    table = Table(title=f"plan {plan['id']}", title_justify="left")
    for col in ("step", "tool", "inputs", "credits"):
        table.add_column(col)
    credits = {q["step"]: q["credits"] for q in plan["quote"]["steps"]}
    for step in plan["steps"]:
        inputs = ", ".join(f"{k}={_short(v)}" for k, v in step["inputs"].items())
        table.add_row(
            escape(step["id"]), escape(step["tool"]), escape(inputs), str(credits.get(step["id"], ""))
        )
    console.print(table)
    if plan.get("explanation"):
        console.print(escape(plan["explanation"]))
    console.print(f"price: [bold]{plan['quote']['total']}[/bold] credits (at most)")
    if not plan.get("approvable", True):
        console.print(
            f"[yellow]your balance ({plan['balance']}) is {plan['shortfall']} short[/yellow]: "
            f"deposit at {plan.get('deposit_url') or '/account'}"
        )


def _short(value: Any) -> str:
    if isinstance(value, dict) and "from" in value:
        return f"← {value['from']}.{value.get('output')}"
    if isinstance(value, dict) and "input" in value:
        return f"← input {value['input']}"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:39] + "…"


# -- following a run -------------------------------------------------------------------------------
def conversation_events(client: Client, cid: str, after: int) -> Iterator[SseEvent]:
    """The conversation's events after item `after`, reconnecting (with Last-Event-ID) when the
    stream drops; it stays open, so the caller stops reading."""
    last = after
    failures = 0
    while True:
        try:
            for event in client.stream_events(f"/v1/conversations/{cid}/events", str(last)):
                if event.id and event.id.isdigit():
                    last = max(last, int(event.id))
                failures = 0
                yield event
        except httpx.TransportError as exc:
            failures += 1
            if failures > 5:
                raise ClientError(f"the event stream of conversation {cid} failed: {exc}") from exc
            time.sleep(min(5.0, 0.5 * 2**failures))


def wait_for_result(client: Client, cid: str, run_id: str, after: int, *, quiet: bool) -> dict[str, Any]:
    """Follow the conversation until the run's result (or error) item arrives; show progress on
    stderr unless `quiet`."""
    shown = ""
    for event in conversation_events(client, cid, after):
        data = event.data
        if event.type == "run" and data.get("run_id") == run_id and not quiet:
            line = ", ".join(
                f"{s['id']} {s['state'].lower()} {int(100 * s['progress'])}%" for s in data["steps"]
            )
            if line != shown:
                err.print(f"[dim]run {data['state'].lower()}: {escape(line)}[/dim]")
                shown = line
        if event.type == "item" and data.get("run_id") == run_id and data.get("type") in ("result", "error"):
            return data
    raise ClientError("the event stream ended before the run did")


# -- the command -----------------------------------------------------------------------------------
@app.command("chat", cls=ClientCommand)
def chat(
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="Say this once and print the reply")
    ] = None,
    conversation: Annotated[
        str | None,
        typer.Option("--conversation", "-c", help="Continue this conversation (default: a new one)"),
    ] = None,
    images: Annotated[
        list[str] | None,
        typer.Option("--image", help="Attach an upload ref (upload:<id>) or output ref; repeat"),
    ] = None,
    parent: Annotated[
        str | None, typer.Option("--parent", help="Answer this earlier item (branch from it)")
    ] = None,
    approve: Annotated[
        str | None, typer.Option("--approve", metavar="PLAN_ID", help="Approve this plan (runs it)")
    ] = None,
    reject: Annotated[
        str | None, typer.Option("--reject", metavar="PLAN_ID", help="Decline this plan")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="With --approve: follow the run to its result")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Chat with the agent: it proposes plans with their price and runs them when you approve."""
    with connect() as client:
        base_url = client.url
        if approve or reject:
            if conversation is None:
                fail("--approve and --reject need --conversation ID")
            _decide(client, conversation, approve, reject, wait=wait, as_json=as_json, base_url=base_url)
            return
        if message is not None:
            cid = conversation or _new(client)["id"]
            body = {"text": message, "images": images or [], **({"parent_id": parent} if parent else {})}
            reply = _request(client, "POST", f"/v1/conversations/{cid}/messages", json=body)
            if as_json:
                print_json({"conversation_id": cid, **reply})
                return
            agent = _request(client, "GET", "/v1/agent/persona")["name"]
            for item in reply["items"]:
                show_item(item, agent=agent, base_url=base_url)
            console.print(f"[dim]conversation {cid}[/dim]")
            return
        if as_json:
            fail("--json goes with --message, --approve or --reject")
        _interactive(client, conversation, base_url)


def _new(client: Client) -> dict[str, Any]:
    created: dict[str, Any] = _request(client, "POST", "/v1/conversations", json={})
    return created


def _decide(
    client: Client,
    cid: str,
    approve: str | None,
    reject: str | None,
    *,
    wait: bool,
    as_json: bool,
    base_url: str,
) -> None:
    if approve and reject:
        fail("give --approve or --reject, not both")
    if reject:
        answer = _request(client, "POST", f"/v1/conversations/{cid}/plans/{reject}/reject")
        if as_json:
            print_json(answer)
        else:
            console.print(f"plan {reject} rejected: nothing runs")
        return
    assert approve is not None
    before = _last_seq(client, cid)
    answer = _request(client, "POST", f"/v1/conversations/{cid}/plans/{approve}/approve")
    if wait:
        answer["result"] = wait_for_result(client, cid, answer["run_id"], before, quiet=as_json)
    if as_json:
        print_json(answer)
        return
    console.print(f"approved: run {answer['run_id']}")
    if "result" in answer:
        show_item(answer["result"], agent="", base_url=base_url)


def _last_seq(client: Client, cid: str) -> int:
    items = _request(client, "GET", f"/v1/conversations/{cid}")["items"]
    return max((int(i["seq"]) for i in items), default=0)


def _interactive(client: Client, cid: str | None, base_url: str) -> None:
    agent = _request(client, "GET", "/v1/agent/persona")["name"]
    if cid is None:
        created = _new(client)
        cid = str(created["id"])
        for item in created["items"]:
            show_item(item, agent=agent, base_url=base_url)
    else:
        items = _request(client, "GET", f"/v1/conversations/{cid}")["items"]
        for item in items[-3:]:
            show_item(item, agent=agent, base_url=base_url)
    console.print(f"[dim]conversation {cid}; /quit to leave[/dim]")
    while True:
        try:
            text = console.input("[bold]you[/bold]> ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if text in _QUIT:
            return
        if not text:
            continue
        reply = _request(client, "POST", f"/v1/conversations/{cid}/messages", json={"text": text})
        for item in reply["items"]:
            show_item(item, agent=agent, base_url=base_url)
        for plan in (i for i in reply["items"] if i["type"] == "plan" and i["state"] == "proposed"):
            if plan.get("approvable", True):
                _offer(client, cid, plan, reply, agent=agent, base_url=base_url)
        for run in (i for i in reply["items"] if i["type"] == "run"):  # auto-approved
            _follow(client, cid, run["run_id"], int(run["seq"]), agent=agent, base_url=base_url)


def _offer(
    client: Client, cid: str, plan: dict[str, Any], reply: dict[str, Any], *, agent: str, base_url: str
) -> None:
    try:
        answer = console.input(f"approve for {plan['quote']['total']} credits? [y/N] ").strip().lower()
    except (EOFError, KeyboardInterrupt):
        answer = ""
    if answer not in ("y", "yes"):
        _request(client, "POST", f"/v1/conversations/{cid}/plans/{plan['id']}/reject")
        console.print("[dim]not run[/dim]")
        return
    after = max(int(i["seq"]) for i in reply["items"])
    done = _request(client, "POST", f"/v1/conversations/{cid}/plans/{plan['id']}/approve")
    _follow(client, cid, done["run_id"], after, agent=agent, base_url=base_url)


def _follow(client: Client, cid: str, run_id: str, after: int, *, agent: str, base_url: str) -> None:
    console.print(f"[dim]running {run_id} (Ctrl-C stops waiting, not the run)[/dim]")
    try:
        result = wait_for_result(client, cid, run_id, after, quiet=False)
    except KeyboardInterrupt:
        console.print("[dim]stopped waiting; the run goes on[/dim]")
        return
    show_item(result, agent=agent, base_url=base_url)
