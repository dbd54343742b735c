"""The runs API over HTTP (api/runs.py, api/quotes.py with a pipeline): validate, create with an
Idempotency-Key, list, show, the event stream (resumable), cancel, retry; every refusal a 4xx
that names what is wrong, with nothing held and nothing queued. Step jobs are completed by hand
(tests/control/test_runs.py's helpers) and the runner is driven by `runs.advance_all`."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from swarmstation.api.app import ControlPlane
from swarmstation.control import ledger, runs
from swarmstation.store.db import transaction
from swarmstation.store.models import Hold, Job, Run
from tests.conftest import FakeClock
from tests.control.test_runs import BIG, GEN, PIPELINE, complete, fail, step_jobs
from tests.helpers import add_user

PRICES = {GEN: 100, BIG: 20}


@pytest.fixture
def priced(api: TestClient, admin: dict[str, str]) -> None:
    for slug, credits in PRICES.items():
        r = api.put(
            f"/v1/admin/tools/{slug}/price", json={"model": "per_run", "credits": credits}, headers=admin
        )
        assert r.status_code == 200, r.text


def user(plane: ControlPlane, clock: FakeClock, credits: int = 1000) -> tuple[str, dict[str, str]]:
    with transaction(plane.state.sessions) as s:
        u, key = add_user(s, clock())
        if credits:
            ledger.grant(
                s, user_id=u.id, amount=credits, reason="t", actor_id=None, key=f"g:{u.id}", now=clock()
            )
        return u.id, {"Authorization": f"Bearer {key}"}


def problem(r: Any) -> dict[str, Any]:
    """An error answer's body (`{"detail", "code", "errors"?}`, or the same inside `{"error": ...}`)."""
    body: dict[str, Any] = r.json()
    return body.get("error", body) if isinstance(body.get("error"), dict) else body


def held(plane: ControlPlane, user_id: str) -> int:
    with transaction(plane.state.sessions) as s:
        return ledger.balance(s, user_id).held


def counts(plane: ControlPlane) -> tuple[int, int, int]:
    with transaction(plane.state.sessions) as s:
        return tuple(  # type: ignore[return-value]
            int(s.scalar(select(func.count()).select_from(m)) or 0) for m in (Run, Job, Hold)
        )


def tick(plane: ControlPlane, clock: FakeClock) -> None:
    runs.advance_all(plane.state.sessions, plane.state.settings, clock)


def events(
    api: TestClient, run_id: str, headers: dict[str, str], last: int | None = None
) -> list[dict[str, Any]]:
    """The run's event stream, read to its end (the run must have finished)."""
    extra = {"Last-Event-ID": str(last)} if last is not None else {}
    with api.stream("GET", f"/v1/runs/{run_id}/events", headers={**headers, **extra}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    out = []
    for block in text.strip().split("\n\n"):
        if not block or block.startswith(":"):
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return out


def finish(plane: ControlPlane, clock: FakeClock, run_id: str) -> None:
    """Complete the run's current-attempt jobs of each step that is running, step by step."""
    for step in ("gen", "big"):
        with transaction(plane.state.sessions) as s:
            run = s.get(Run, run_id)
            assert run is not None
            attempt = run.attempt
        for job_id in step_jobs(plane, run_id, step, attempt=attempt):
            complete(plane, clock, job_id)
        tick(plane, clock)


# -- validate ------------------------------------------------------------------------------------


def test_validate_answers_the_order_items_and_inputs(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    _, alice = user(plane, clock)
    varied = copy.deepcopy(PIPELINE)
    varied["steps"]["gen"]["variations"] = {"count": 3}
    r = api.post("/v1/pipelines/validate", json={"pipeline": varied}, headers=alice)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["valid"] is True and body["order"] == ["gen", "big"] and body["items"] == {"gen": 3, "big": 3}
    assert body["inputs"]["idea"]["type"] == "string"


def test_validate_refuses_cycles_mismatches_unknown_and_unavailable_tools(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    _, alice = user(plane, clock)
    cycle = copy.deepcopy(PIPELINE)
    cycle["steps"]["gen"]["inputs"]["prompt"] = {"from": "big", "output": "image"}
    r = api.post("/v1/pipelines/validate", json={"pipeline": cycle}, headers=alice)
    assert r.status_code == 422 and problem(r)["code"] == "invalid_pipeline"
    assert "gen" in problem(r)["detail"] and "big" in problem(r)["detail"] and "cycle" in problem(r)["detail"]

    mismatch = copy.deepcopy(PIPELINE)
    mismatch["steps"]["again"] = {"tool": GEN, "inputs": {"prompt": {"from": "big", "output": "image"}}}
    r = api.post("/v1/pipelines/validate", json={"pipeline": mismatch}, headers=alice)
    assert r.status_code == 422
    assert [e["field"] for e in problem(r)["errors"]] == ["steps.again.inputs.prompt"]

    unknown = copy.deepcopy(PIPELINE)
    unknown["steps"]["big"]["tool"] = "no-such-tool"
    r = api.post("/v1/pipelines/validate", json={"pipeline": unknown}, headers=alice)
    assert r.status_code == 422 and problem(r)["errors"][0]["field"].startswith("steps.big")

    llm = {"steps": {"enhance": {"tool": "prompt-enhance", "inputs": {"idea": "a fox"}}}}
    r = api.post("/v1/pipelines/validate", json={"pipeline": llm}, headers=alice)
    assert r.status_code == 422 and "SWARMSTATION_LLM_BASE_URL" in problem(r)["detail"]

    bodies: list[dict[str, Any]] = [
        {},
        {"pipeline": []},
        {"pipeline": {"steps": {}}},
        {"pipeline": PIPELINE, "x": 1},
    ]
    for bad in bodies:
        r = api.post("/v1/pipelines/validate", json=bad, headers=alice)
        assert r.status_code == 422, (bad, r.text)
    assert api.post("/v1/pipelines/validate", json={"pipeline": PIPELINE}).status_code == 401


# -- runs ----------------------------------------------------------------------------------------


def test_a_run_over_http_from_creation_to_its_outputs_and_events(
    api: TestClient, plane: ControlPlane, clock: FakeClock, priced: None
) -> None:
    alice_id, alice = user(plane, clock)
    r = api.post("/v1/runs", json={"pipeline": PIPELINE, "inputs": {"idea": "a storm"}}, headers=alice)
    assert r.status_code == 201, r.text
    run = r.json()
    assert (run["state"], run["quote"], run["captured"], run["attempt"]) == ("RUNNING", 120, 0, 1)
    assert run["inputs"] == {"idea": "a storm"} and run["pipeline_id"] is None
    assert [(s["id"], s["state"], s["quote"]) for s in run["steps"]] == [
        ("gen", "RUNNING", 100),
        ("big", "PENDING", 20),
    ]
    [job] = run["steps"][0]["jobs"]
    assert (job["state"], job["item"]) == ("QUEUED", 0)
    assert held(plane, alice_id) == 120

    finish(plane, clock, run["id"])
    done = api.get(f"/v1/runs/{run['id']}", headers=alice).json()
    assert (done["state"], done["captured"], done["error"]) == ("COMPLETED", 120, None)
    steps = {s["id"]: s for s in done["steps"]}
    assert (steps["gen"]["cost"], steps["big"]["cost"]) == (100, 20)
    assert steps["big"]["seconds"] is not None and steps["big"]["finished_at"] is not None
    [big] = steps["big"]["jobs"]
    [out] = big["outputs"]
    assert out["port"] == "image" and out["url"] == f"/v1/jobs/{big['id']}/outputs/{out['id']}"
    assert done["outputs"] == {"big": {"image": f"output:{out['id']}"}}
    assert steps["big"]["jobs"][0]["state"] == "COMPLETED"
    assert held(plane, alice_id) == 0

    seen = events(api, run["id"], alice)
    assert seen[-1]["event"] == "state" and seen[-1]["data"]["state"] == "COMPLETED"
    steps_seen = [(e["data"]["step"], e["data"]["state"]) for e in seen if e["event"] == "step"]
    assert steps_seen == [("gen", "RUNNING"), ("gen", "COMPLETED"), ("big", "RUNNING"), ("big", "COMPLETED")]
    assert all(e["data"]["run_id"] == run["id"] for e in seen)
    assert any(e["event"] == "job" and e["data"]["state"] == "COMPLETED" for e in seen)
    middle = seen[3]["id"]
    assert events(api, run["id"], alice, last=middle) == [e for e in seen if e["id"] > middle]
    assert events(api, run["id"], alice, last=seen[-1]["id"]) == []

    listed = api.get("/v1/runs", headers=alice).json()["runs"]
    assert [(x["id"], x["state"], x["steps"]) for x in listed] == [(run["id"], "COMPLETED", 2)]


def test_an_idempotency_key_answers_the_first_run_and_refuses_another_body(
    api: TestClient, plane: ControlPlane, clock: FakeClock, priced: None
) -> None:
    alice_id, alice = user(plane, clock)
    body = {"pipeline": PIPELINE, "inputs": {"idea": "a storm"}}
    first = api.post("/v1/runs", json=body, headers={**alice, "Idempotency-Key": "k-1"})
    again = api.post("/v1/runs", json=body, headers={**alice, "Idempotency-Key": "k-1"})
    assert first.status_code == 201 and again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert held(plane, alice_id) == 120 and counts(plane)[0] == 1
    other = api.post(
        "/v1/runs", json={**body, "inputs": {"idea": "a calm"}}, headers={**alice, "Idempotency-Key": "k-1"}
    )
    assert other.status_code == 422 and problem(other)["code"] == "idempotency_key_reused"
    assert counts(plane)[0] == 1


def test_refused_runs_hold_and_queue_nothing(
    api: TestClient, plane: ControlPlane, clock: FakeClock, priced: None
) -> None:
    poor_id, poor = user(plane, clock, credits=50)
    before = counts(plane)
    r = api.post("/v1/runs", json={"pipeline": PIPELINE, "inputs": {"idea": "x"}}, headers=poor)
    assert r.status_code == 402 and (problem(r)["required"], problem(r)["available"]) == (120, 50)
    _, alice = user(plane, clock)
    mismatch = copy.deepcopy(PIPELINE)
    mismatch["steps"]["again"] = {"tool": GEN, "inputs": {"prompt": {"from": "big", "output": "image"}}}
    bad_bodies: list[tuple[dict[str, Any], int, str]] = [
        ({"pipeline": mismatch, "inputs": {"idea": "x"}}, 422, "steps.again.inputs.prompt"),
        ({"pipeline": PIPELINE, "inputs": {}}, 422, "inputs.idea"),
        ({"pipeline": PIPELINE, "inputs": {"idea": "x", "extra": 1}}, 422, "inputs.extra"),
        ({"pipeline": PIPELINE, "inputs": {"idea": 5}}, 422, "inputs.idea"),
        ({"inputs": {"idea": "x"}}, 422, "pipeline"),
        ({"pipeline": PIPELINE, "pipeline_id": "p", "inputs": {}}, 422, "pipeline"),
        ({"pipeline": PIPELINE, "version": 2, "inputs": {"idea": "x"}}, 422, "version"),
    ]
    for body, status, where in bad_bodies:
        r = api.post("/v1/runs", json=body, headers=alice)
        assert r.status_code == status, (body, r.text)
        assert any(e["field"] == where for e in problem(r)["errors"]), (body, r.json())
    missing = api.post("/v1/runs", json={"pipeline_id": "nope", "inputs": {}}, headers=alice)
    assert missing.status_code == 404
    assert counts(plane) == before and held(plane, poor_id) == 0


def test_runs_are_private_to_their_user(
    api: TestClient, plane: ControlPlane, clock: FakeClock, priced: None
) -> None:
    _, alice = user(plane, clock)
    _, bob = user(plane, clock)
    run = api.post("/v1/runs", json={"pipeline": PIPELINE, "inputs": {"idea": "x"}}, headers=alice).json()
    for method, path in (
        ("GET", f"/v1/runs/{run['id']}"),
        ("GET", f"/v1/runs/{run['id']}/events"),
        ("POST", f"/v1/runs/{run['id']}/cancel"),
        ("POST", f"/v1/runs/{run['id']}/retry"),
    ):
        r = api.request(method, path, headers=bob)
        assert r.status_code == 404, (path, r.text)
    assert api.get("/v1/runs", headers=bob).json() == {"runs": []}
    clock.advance(1)
    second = api.post("/v1/runs", json={"pipeline": PIPELINE, "inputs": {"idea": "y"}}, headers=alice).json()
    assert [x["id"] for x in api.get("/v1/runs", headers=alice).json()["runs"]] == [second["id"], run["id"]]


def test_cancel_then_retry_and_the_conflicts(
    api: TestClient, plane: ControlPlane, clock: FakeClock, priced: None
) -> None:
    alice_id, alice = user(plane, clock)
    run = api.post("/v1/runs", json={"pipeline": PIPELINE, "inputs": {"idea": "x"}}, headers=alice).json()
    assert api.post(f"/v1/runs/{run['id']}/retry", headers=alice).status_code == 409  # still running
    r = api.post(f"/v1/runs/{run['id']}/cancel", headers=alice)
    assert r.status_code == 200, r.text
    cancelled = r.json()
    assert cancelled["state"] == "CANCELLED" and [s["state"] for s in cancelled["steps"]] == ["CANCELLED"] * 2
    assert cancelled["steps"][0]["jobs"][0]["state"] == "CANCELLED"
    assert held(plane, alice_id) == 0
    assert api.post(f"/v1/runs/{run['id']}/cancel", headers=alice).status_code == 409
    assert events(api, run["id"], alice)[-1]["data"]["state"] == "CANCELLED"

    r = api.post(f"/v1/runs/{run['id']}/retry", headers=alice)
    assert r.status_code == 200, r.text
    retried = r.json()
    assert (retried["state"], retried["attempt"], retried["quote"]) == ("RUNNING", 2, 120)
    assert retried["steps"][0]["state"] == "RUNNING" and len(retried["steps"][0]["jobs"]) == 1
    assert held(plane, alice_id) == 120
    finish(plane, clock, run["id"])
    assert api.get(f"/v1/runs/{run['id']}", headers=alice).json()["state"] == "COMPLETED"


def test_a_failed_step_shows_its_reason_and_a_retry_reuses_the_finished_step(
    api: TestClient, plane: ControlPlane, clock: FakeClock, priced: None
) -> None:
    _, alice = user(plane, clock)
    run = api.post("/v1/runs", json={"pipeline": PIPELINE, "inputs": {"idea": "x"}}, headers=alice).json()
    complete(plane, clock, step_jobs(plane, run["id"], "gen")[0])
    tick(plane, clock)
    fail(plane, clock, step_jobs(plane, run["id"], "big")[0], "out of memory")
    tick(plane, clock)
    failed = api.get(f"/v1/runs/{run['id']}", headers=alice).json()
    assert failed["state"] == "FAILED" and failed["error"] == "step 'big' failed: out of memory"
    assert (
        failed["steps"][1]["error"] == "out of memory"
        and failed["steps"][1]["jobs"][0]["error"] == "out of memory"
    )
    retried = api.post(f"/v1/runs/{run['id']}/retry", headers=alice).json()
    assert (retried["quote"], [s["state"] for s in retried["steps"]]) == (20, ["COMPLETED", "RUNNING"])


def test_another_user_runs_a_saved_pipeline_with_only_its_exposed_inputs(
    api: TestClient, plane: ControlPlane, clock: FakeClock, priced: None
) -> None:
    author_id, author = user(plane, clock, credits=0)
    _, bob = user(plane, clock)
    two = copy.deepcopy(PIPELINE)
    two["inputs"]["style"] = {"type": "string", "required": False, "default": "plain"}
    saved = api.post(
        "/v1/pipelines",
        json={
            "name": "storm",
            "pipeline": two,
            "exposed": [{"name": "idea", "label": "Idea"}],
            "visibility": "public",
        },
        headers=author,
    )
    assert saved.status_code == 201, saved.text
    pid = saved.json()["id"]
    hidden = api.post(
        "/v1/runs", json={"pipeline_id": pid, "inputs": {"idea": "x", "style": "noir"}}, headers=bob
    )
    assert hidden.status_code == 422 and "style" in hidden.text
    quote = api.post("/v1/quotes", json={"pipeline_id": pid, "inputs": {"idea": "x"}}, headers=bob).json()
    assert quote["total"] == 120
    assert {"kind": "royalty", "pipeline": pid, "step": "gen"}.items() <= quote["lines"][2].items()
    r = api.post("/v1/runs", json={"pipeline_id": pid, "version": 1, "inputs": {"idea": "x"}}, headers=bob)
    assert r.status_code == 201, r.text
    run = r.json()
    assert (run["pipeline_id"], run["pipeline_version"]) == (pid, 1)
    finish(plane, clock, run["id"])
    with transaction(plane.state.sessions) as s:
        assert ledger.balance(s, author_id).balance == 100 * 500 // 10_000 + 20 * 500 // 10_000


# -- quotes --------------------------------------------------------------------------------------


def test_quotes_take_a_pipeline_and_still_take_one_tool(
    api: TestClient, plane: ControlPlane, clock: FakeClock, priced: None
) -> None:
    alice_id, alice = user(plane, clock)
    varied = copy.deepcopy(PIPELINE)
    varied["steps"]["gen"]["variations"] = {"count": 2}
    r = api.post("/v1/quotes", json={"pipeline": varied, "inputs": {"idea": "x"}}, headers=alice)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["total"], body["charged"]) == (240, True)
    assert [(x["step"], x["items"], x["credits"]) for x in body["steps"]] == [("gen", 2, 200), ("big", 2, 40)]
    assert [line["item"] for line in body["steps"][0]["lines"]] == [0, 1]
    one = api.post("/v1/quotes", json={"tool": GEN, "inputs": {"prompt": "a fox"}}, headers=alice).json()
    assert one["total"] == 100 and "steps" not in one
    both = api.post("/v1/quotes", json={"tool": GEN, "pipeline": PIPELINE}, headers=alice)
    assert both.status_code == 422
    bad = api.post("/v1/quotes", json={"pipeline": PIPELINE, "inputs": {}}, headers=alice)
    assert bad.status_code == 422 and problem(bad)["errors"][0]["field"] == "inputs.idea"
    assert held(plane, alice_id) == 0 and counts(plane) == (0, 0, 0)
