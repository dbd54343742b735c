"""`swarmstation chat` against a real control plane over HTTP: `--message … --json` prints the
reply items for scripts, `--approve` starts the plan's run once however often it is repeated, the
interactive chat asks before anything runs, and mistakes end in one line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.cli.test_pipelines import cli, served  # noqa: F401 - the fixture
from tests.e2e.conftest import BIN

FOX = "a watercolor fox in the snow, then make it 4x bigger"


def chat_json(where: tuple[str, str], *args: str) -> dict:
    done = cli(where, "chat", *args, "--json")
    assert done.returncode == 0, done.stderr
    answer: dict = json.loads(done.stdout)
    return answer


def test_a_message_as_json_then_approval_once(served: tuple[str, str]) -> None:  # noqa: F811
    first = chat_json(served, "--message", FOX)
    cid = first["conversation_id"]
    assert first["message"]["text"] == FOX
    [plan] = [i for i in first["items"] if i["type"] == "plan"]
    assert plan["steps"][-1]["tool"] == "upscale-4x" and "total" in plan["quote"]

    approved = chat_json(served, "--conversation", cid, "--approve", plan["id"])
    assert [i["type"] for i in approved["items"]] == ["approval", "run"]
    again = chat_json(served, "--conversation", cid, "--approve", plan["id"])
    assert again == {"run_id": approved["run_id"], "items": []}

    song = chat_json(served, "--conversation", cid, "--message", "make a song about it")
    [declined] = song["items"]
    assert declined["kind"] == "abstain" and declined["suggestions"]


def test_the_reply_for_people_shows_the_steps_and_price(served: tuple[str, str]) -> None:  # noqa: F811
    done = cli(served, "chat", "--message", FOX)
    assert done.returncode == 0, done.stderr
    assert "upscale-4x" in done.stdout and "price:" in done.stdout and "credits" in done.stdout


def test_the_interactive_chat_asks_before_running(served: tuple[str, str]) -> None:  # noqa: F811
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSTATION_")}
    env = {**clean, "COLUMNS": "200", "SWARMSTATION_URL": served[0], "SWARMSTATION_API_KEY": served[1]}
    done = subprocess.run(
        [str(BIN), "chat"],
        input=f"{FOX}\nn\n/quit\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(Path("/")),
    )
    assert done.returncode == 0, done.stderr
    assert "approve for" in done.stdout and "not run" in done.stdout
    listed = chat_conversations(served)
    assert len(listed) == 1


def chat_conversations(where: tuple[str, str]) -> list[dict]:
    import httpx

    r = httpx.get(f"{where[0]}/v1/conversations", headers={"Authorization": f"Bearer {where[1]}"})
    r.raise_for_status()
    items = r.json()["conversations"]
    assert isinstance(items, list)
    return items


def test_mistakes_end_in_one_line(served: tuple[str, str]) -> None:  # noqa: F811
    done = cli(served, "chat", "--approve", "p1")
    assert done.returncode == 1 and "--conversation" in done.stderr and "Traceback" not in done.stderr
    done = cli(served, "chat", "--conversation", "nope", "--message", "hi", "--json")
    assert done.returncode == 1 and "404" in done.stderr and "Traceback" not in done.stderr
