"""End to end, issue 14's story on a real `swarmstation up` (the embedded default: local instances
running the ComfyUI emulator) and a real fake OpenAI server:

a three-step pipeline (prompt enhance on the LLM -> SDXL txt2img -> 4x upscale) runs from the API
with per-step progress events, one hold and three captures; the worker running step 2 is killed
and only that step runs again; the same pipeline runs from the CLI; saved as a public pipeline,
another user runs it with only its exposed input and the author earns the royalty; a cycle and a
type mismatch are refused naming the step and the port, with nothing held."""

from __future__ import annotations

import json
import os
import signal
import threading
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from swarmstation.client import SseParser
from tests.e2e.conftest import Up, wait_for, wait_idle
from tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.slow

PRICES = {"sdxl-txt2img": 300, "upscale-4x": 120}  # per run, credits
ROYALTY_BPS = 500
GRANT = 100_000
IDEA = "a lighthouse in a storm"

PIPELINE: dict[str, Any] = {
    "inputs": {
        "idea": {"type": "string", "label": "Idea"},
        "style": {"type": "string", "required": False, "default": "cinematic"},
    },
    "steps": {
        "enhance": {
            "tool": "prompt-enhance",
            "inputs": {"idea": {"input": "idea"}, "style": {"input": "style"}, "base_model": "SDXL"},
        },
        "gen": {
            "tool": "sdxl-txt2img",
            "inputs": {"prompt": {"from": "enhance", "output": "prompt"}, "steps": 40, "seed": 7},
        },
        "big": {"tool": "upscale-4x", "inputs": {"image": {"from": "gen", "output": "image"}}},
    },
}


def ok(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, (
        f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}"
    )
    return resp.json()


def keyed(up: Up, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=up.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30)


def new_user(admin: httpx.Client, up: Up, name: str) -> tuple[str, httpx.Client, str]:
    made = ok(admin.post("/v1/admin/users", json={"name": name, "role": "user"}), 201)
    ok(admin.post(f"/v1/admin/users/{made['id']}/credits", json={"amount": GRANT, "reason": "test"}), 201)
    return made["id"], keyed(up, made["api_key"]), made["api_key"]


def run_entries(http: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    entries = ok(http.get("/v1/account/ledger", params={"limit": 500}))["entries"]
    return [e for e in reversed(entries) if e["ref_id"] == run_id]


def finished(http: httpx.Client, run_id: str, timeout: float = 240) -> dict[str, Any]:
    return wait_for(  # type: ignore[no-any-return]
        lambda: (
            (r := ok(http.get(f"/v1/runs/{run_id}")))["state"] in ("COMPLETED", "FAILED", "CANCELLED") and r
        ),
        timeout,
        f"run {run_id} to finish",
        interval=0.5,
    )


class EventLog:
    """Reads a run's SSE stream in a thread, as a client would."""

    def __init__(self, up: Up, api_key: str, run_id: str) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._thread = threading.Thread(target=self._read, args=(up.url, api_key, run_id), daemon=True)
        self._thread.start()

    def _read(self, url: str, api_key: str, run_id: str) -> None:
        with httpx.stream(
            "GET",
            f"{url}/v1/runs/{run_id}/events",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(30, read=300),
        ) as resp:
            parser = SseParser()
            for chunk in resp.iter_text():
                for event in parser.feed(chunk):
                    self.events.append((event.type, json.loads(event.data)))

    def join(self) -> list[tuple[str, dict[str, Any]]]:
        self._thread.join(timeout=60)
        return self.events


def test_three_step_pipeline_story(up_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    llm = FakeOpenAI(api_key="sk-test-pipelines").start()
    try:
        up: Up = up_factory(
            pool_min_instances=2,
            pool_max_instances=2,
            emulator_step_seconds=0.1,
            heartbeat_timeout_seconds=4,
            control_interval_seconds=0.5,
            lease_seconds=60,
            llm_base_url=f"{llm.url}/v1",
            llm_api_key="sk-test-pipelines",
            llm_model="fake-writer",
            pipeline_royalty_bps=ROYALTY_BPS,
        )
        up.start()
        admin = up.client()
        for slug, credits in PRICES.items():
            ok(admin.put(f"/v1/admin/tools/{slug}/price", json={"model": "per_run", "credits": credits}))
        wait_idle(admin, 2)
        _, author, author_key = new_user(admin, up, "author")
        _, other, _ = new_user(admin, up, "other")

        # -- refused: a cycle and a type mismatch name the step and the port; nothing held -------
        cycle = json.loads(json.dumps(PIPELINE))
        cycle["steps"]["enhance"]["inputs"]["idea"] = {"from": "big", "output": "image"}
        refused = author.post("/v1/pipelines/validate", json={"pipeline": cycle})
        assert refused.status_code == 422, refused.text
        assert "cycle" in refused.text and "enhance" in refused.text
        mismatch = json.loads(json.dumps(PIPELINE))
        mismatch["steps"]["gen"]["inputs"]["prompt"] = {"from": "big", "output": "image"}
        mismatch["steps"]["big"]["inputs"]["image"] = {"from": "enhance", "output": "prompt"}
        for path in ("/v1/pipelines/validate", "/v1/runs"):
            body: dict[str, Any] = {"pipeline": mismatch, "inputs": {"idea": IDEA}}
            if path.endswith("validate"):
                del body["inputs"]
            bad = author.post(path, json=body)
            assert bad.status_code == 422, bad.text
            fields = [e["field"] for e in bad.json()["errors"]]
            assert any(f.startswith("steps.") and ".inputs." in f for f in fields), bad.text
        assert ok(author.get("/v1/account"))["held"] == 0
        assert ok(author.get("/v1/runs"))["runs"] == []

        # -- the quote is the whole run; the run holds it once ---------------------------------
        quote = ok(author.post("/v1/quotes", json={"pipeline": PIPELINE, "inputs": {"idea": IDEA}}))
        assert quote["total"] >= PRICES["sdxl-txt2img"] + PRICES["upscale-4x"]
        assert [s["step"] for s in quote["steps"]] == ["enhance", "gen", "big"]
        run = ok(
            author.post(
                "/v1/runs",
                json={"pipeline": PIPELINE, "inputs": {"idea": IDEA}},
                headers={"Idempotency-Key": "story-run-1"},
            ),
            201,
        )
        again = author.post(
            "/v1/runs",
            json={"pipeline": PIPELINE, "inputs": {"idea": IDEA}},
            headers={"Idempotency-Key": "story-run-1"},
        )
        assert again.status_code in (200, 201) and again.json()["id"] == run["id"]
        events = EventLog(up, author_key, run["id"])
        assert ok(author.get("/v1/account"))["held"] == quote["total"]

        # -- kill the worker running step 2: that step runs again, step 1 does not ---------------
        def gen_running() -> dict[str, Any] | None:
            step = next(s for s in ok(author.get(f"/v1/runs/{run['id']}"))["steps"] if s["id"] == "gen")
            jobs = [j for j in step["jobs"] if j["state"] == "RUNNING" and j["progress"] > 0]
            return jobs[0] if jobs else None

        gen_job = wait_for(gen_running, 120, "step gen running")
        victim = ok(author.get(f"/v1/jobs/{gen_job['id']}"))["instance_id"]
        state = next(s for s in up.instance_state_files() if s["instance_id"] == victim)
        os.kill(int(state["worker_pid"]), signal.SIGKILL)  # type: ignore[call-overload]

        done = finished(author, run["id"])
        assert done["state"] == "COMPLETED", done
        steps = {s["id"]: s for s in done["steps"]}
        assert [steps[k]["state"] for k in ("enhance", "gen", "big")] == ["COMPLETED"] * 3
        assert len(llm.requests) == 1  # the prompt was enhanced once
        [enhance_job] = steps["enhance"]["jobs"]
        assert ok(author.get(f"/v1/jobs/{enhance_job['id']}"))["attempt"] == 1
        [gen_done] = steps["gen"]["jobs"]
        gen_detail = ok(author.get(f"/v1/jobs/{gen_done['id']}"))
        assert gen_detail["attempt"] == 2 and gen_detail["instance_id"] != victim
        # the enhanced prompt reached the image step
        assert gen_detail["inputs"]["prompt"] == steps["enhance"]["outputs"]["prompt"]
        assert steps["enhance"]["outputs"]["prompt"] != IDEA
        # the image passed through the object store: the upscale is 4x the generated image
        [big_job] = steps["big"]["jobs"]
        [out] = big_job["outputs"]
        image = author.get(out["url"], follow_redirects=True)
        assert image.status_code == 200 and image.content[:4] == b"\x89PNG"

        # per-step progress events, in order, ending with the run's final state
        seen = events.join()
        step_states = [(d["step"], d["state"]) for t, d in seen if t == "step"]
        for step in ("enhance", "gen", "big"):
            assert (step, "RUNNING") in step_states and (step, "COMPLETED") in step_states
        assert step_states.index(("enhance", "COMPLETED")) < step_states.index(("gen", "RUNNING"))
        assert any(t == "job" and d.get("progress", 0) > 0 for t, d in seen)
        assert seen[-1][0] == "state" and seen[-1][1]["state"] == "COMPLETED"

        # one hold, three captures (one per step), the rest released
        entries = run_entries(author, run["id"])
        kinds = [e["kind"] for e in entries]
        assert kinds.count("hold") == 1 and kinds.count("capture") == 3, entries
        captured = -sum(e["amount"] for e in entries if e["kind"] == "capture")
        assert captured == done["captured"] == sum(s["cost"] for s in done["steps"])
        assert captured >= PRICES["sdxl-txt2img"] + PRICES["upscale-4x"]
        account = ok(author.get("/v1/account"))
        assert account["held"] == 0 and account["balance"] == GRANT - captured

        # -- the CLI runs it too, with a progress display per step -------------------------------
        spec = tmp_path / "portrait.json"
        spec.write_text(json.dumps(PIPELINE))
        env_key = {"SWARMSTATION_API_KEY": author_key}
        up.env.update(env_key)
        r = up.cli("pipelines", "run", str(spec), "--input", f"idea={IDEA}", timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "COMPLETED" in r.stdout and "Traceback" not in r.stderr
        for step in ("enhance", "gen", "big"):
            assert step in r.stdout

        # -- saved, public; another user runs it with only the exposed prompt --------------------
        saved = ok(
            author.post(
                "/v1/pipelines",
                json={
                    "name": "Storm portrait",
                    "description": "an idea, enhanced, generated and upscaled",
                    "pipeline": PIPELINE,
                    "exposed": [{"name": "idea", "label": "Your idea", "default": "a quiet harbour"}],
                    "visibility": "public",
                },
            ),
            201,
        )
        listed = ok(other.get("/v1/pipelines", params={"q": "storm"}))
        assert [p["id"] for p in listed["pipelines"]] == [saved["id"]]
        author_before = ok(author.get("/v1/account"))["balance"]
        theirs = ok(
            other.post("/v1/runs", json={"pipeline_id": saved["id"], "inputs": {"idea": "a red fox"}}), 201
        )
        assert theirs["pipeline_version"] == 1
        their_done = finished(other, theirs["id"])
        assert their_done["state"] == "COMPLETED", their_done
        their_captures = [e for e in run_entries(other, theirs["id"]) if e["kind"] == "capture"]
        assert len(their_captures) == 3
        royalty = sum(-e["amount"] * ROYALTY_BPS // 10_000 for e in their_captures)
        assert royalty > 0
        assert ok(author.get("/v1/account"))["balance"] == author_before + royalty
        # only the exposed inputs
        hidden = other.post(
            "/v1/runs", json={"pipeline_id": saved["id"], "inputs": {"idea": "x", "style": "noir"}}
        )
        assert hidden.status_code == 422 and "style" in hidden.text
        assert ok(admin.get("/v1/admin/credits/verify"))["ok"] is True
    finally:
        llm.stop()


def test_variations_gathered_into_a_contact_sheet_survive_a_control_plane_restart(up_factory) -> None:  # type: ignore[no-untyped-def]
    up: Up = up_factory(
        pool_min_instances=2, pool_max_instances=2, emulator_step_seconds=0.1, control_interval_seconds=0.5
    )
    up.start()
    http = up.client()
    wait_idle(http, 2)
    pipeline = {
        "inputs": {"subject": {"type": "string"}},
        "steps": {
            "gen": {
                "tool": "sd15-txt2img",
                "inputs": {"prompt": {"input": "subject"}, "steps": 30, "width": 256, "height": 256},
                "variations": {"count": 3},
            },
            "small": {
                "tool": "image-resize",
                "inputs": {"image": {"from": "gen", "output": "image"}, "width": 64},
            },
            "sheet": {
                "tool": "contact-sheet",
                "inputs": {"images": {"from": "small", "output": "image"}, "columns": 3, "cell": 64},
            },
        },
    }
    checked = ok(http.post("/v1/pipelines/validate", json={"pipeline": pipeline}))
    assert checked["items"] == {"gen": 3, "small": 3, "sheet": 1}
    run = ok(http.post("/v1/runs", json={"pipeline": pipeline, "inputs": {"subject": "a paper boat"}}), 201)
    wait_for(
        lambda: any(
            j["state"] == "RUNNING"
            for s in ok(http.get(f"/v1/runs/{run['id']}"))["steps"]
            if s["id"] == "gen"
            for j in s["jobs"]
        ),
        120,
        "a variation running",
    )
    up.kill()  # the control plane dies mid-run; the run is in the database
    up.start()
    http = up.client()
    done = finished(http, run["id"])
    assert done["state"] == "COMPLETED", done
    steps = {s["id"]: s for s in done["steps"]}
    assert [steps[k]["items"] for k in ("gen", "small", "sheet")] == [3, 3, 1]
    seeds = {ok(http.get(f"/v1/jobs/{j['id']}"))["inputs"]["seed"] for j in steps["gen"]["jobs"]}
    assert len(seeds) == 3  # three variations, three seeds
    assert len(steps["small"]["outputs"]["image"]) == 3
    [sheet_job] = steps["sheet"]["jobs"]
    [out] = sheet_job["outputs"]
    png = http.get(out["url"], follow_redirects=True)
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    with Image.open(BytesIO(png.content)) as img:
        assert img.size == (3 * 64, 64)  # one row of three cells
