"""The HTTP API in process: auth, ownership, bad input, and the worker protocol."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from swarmstation.api import account, admin, objects, public, worker
from swarmstation.api.app import ControlPlane
from swarmstation.control.scheduler import scheduler_pass
from swarmstation.store.db import transaction
from swarmstation.store.models import Job, Output
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user

PLANE_SETTINGS = {"max_prompt_chars": 500, "max_upload_bytes": 50_000}


@pytest.fixture
def alice(plane: ControlPlane, clock: FakeClock) -> dict[str, str]:
    with transaction(plane.state.sessions) as s:
        _, key = add_user(s, clock(), "alice")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def bob(plane: ControlPlane, clock: FakeClock) -> dict[str, str]:
    with transaction(plane.state.sessions) as s:
        _, key = add_user(s, clock(), "bob")
    return {"Authorization": f"Bearer {key}"}


def job_count(plane: ControlPlane) -> int:
    with transaction(plane.state.sessions) as s:
        return s.scalar(select(func.count()).select_from(Job)) or 0


def png_bytes(size: tuple[int, int] = (32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def test_healthz_metrics_and_openapi(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"ok": True, "database": "up"}
    metrics = api.get("/metrics").text
    assert 'swarmstation_jobs{state="QUEUED"} 0.0' in metrics
    assert "/v1/jobs" in api.get("/openapi.json").json()["paths"]
    assert api.get("/docs").status_code == 200


def test_the_worker_protocol_and_the_object_urls_are_matched_first(plane: ControlPlane) -> None:
    """Starlette tries the routes in order: a worker's heartbeat or report, and an upload to a
    presigned URL, should not be tried against every user route first."""
    routers = [getattr(route, "original_router", None) for route in plane.app.routes]

    def position(router: object) -> int:
        return next(n for n, r in enumerate(routers) if r is router)

    first = [position(worker.router), position(objects.router)]
    others = [position(public.router), position(account.router), position(admin.router)]
    assert max(first) < min(others), (first, others)


def test_requests_need_a_valid_key(api: TestClient) -> None:
    assert api.get("/v1/tools").status_code == 401
    r = api.get("/v1/tools", headers={"Authorization": "Bearer ss_nope"})
    assert r.status_code == 401 and "invalid" in r.json()["detail"]


def test_tools_listed_with_input_schema(api: TestClient, alice: dict[str, str]) -> None:
    slugs = {t["slug"] for t in api.get("/v1/tools", headers=alice).json()}
    assert {"sd15-txt2img", "sdxl-txt2img", "flux-txt2img", "sd15-img2img", "upscale-4x"} <= slugs
    tool = api.get("/v1/tools/sdxl-txt2img", headers=alice).json()
    assert "prompt" in tool["input_schema"]["properties"]
    assert {"folder": "checkpoints", "name": "sd_xl_base_1.0.safetensors"} in tool["required_models"]
    assert api.get("/v1/tools/nope", headers=alice).status_code == 404


def test_submit_job_binds_inputs(api: TestClient, alice: dict[str, str]) -> None:
    r = api.post(
        "/v1/jobs", headers=alice, json={"tool": "sd15-txt2img", "inputs": {"prompt": "a fox", "seed": 5}}
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "QUEUED" and job["inputs"]["seed"] == 5 and job["inputs"]["prompt"] == "a fox"
    assert {"folder": "checkpoints", "name": "v1-5-pruned-emaonly.safetensors"} in job["required_models"]
    random_seed = api.post(
        "/v1/jobs", headers=alice, json={"tool": "sd15-txt2img", "inputs": {"prompt": "x", "seed": -1}}
    )
    assert random_seed.json()["inputs"]["seed"] >= 0


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ("{not json", 400, "malformed JSON"),
        ({"tool": "nope", "inputs": {}}, 404, "unknown tool"),
        ({"tool": "sd15-txt2img", "inputs": {"prompt": "x", "width": "wide"}}, 422, "inputs.width"),
        ({"tool": "sd15-txt2img", "inputs": {"prompt": "x", "steps": 100000}}, 422, "inputs.steps"),
        ({"tool": "sd15-txt2img", "inputs": {"prompt": "x" * 501}}, 422, "too long"),
        ({"tool": "sd15-txt2img", "inputs": {"prompt": "x", "bogus": 1}}, 422, "bogus"),
        ({"tool": "sd15-txt2img", "inputs": {}}, 422, "prompt"),
        ({"tool": 5, "inputs": {}}, 422, "tool"),
        ({"tool": "sd15-txt2img", "inputs": [], "extra": 1}, 422, "extra"),
        (
            {"tool": "sd15-img2img", "inputs": {"prompt": "x", "image": "http://evil/x.png"}},
            422,
            "inputs.image",
        ),
    ],
)
def test_bad_job_requests_get_a_clear_4xx_and_write_nothing(
    api: TestClient, plane: ControlPlane, alice: dict[str, str], body: Any, status: int, fragment: str
) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    r = api.post("/v1/jobs", headers={**alice, "Content-Type": "application/json"}, content=content)
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]
    assert job_count(plane) == 0


def test_users_see_only_their_own_jobs(api: TestClient, alice: dict[str, str], bob: dict[str, str]) -> None:
    job = api.post(
        "/v1/jobs", headers=alice, json={"tool": "sd15-txt2img", "inputs": {"prompt": "mine"}}
    ).json()
    assert api.get(f"/v1/jobs/{job['id']}", headers=alice).status_code == 200
    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/events", f"/v1/jobs/{job['id']}/outputs/x"):
        r = api.get(path, headers=bob)
        assert r.status_code == 404 and "not found" in r.json()["detail"]
    assert api.post(f"/v1/jobs/{job['id']}/cancel", headers=bob).status_code == 404
    assert api.get("/v1/jobs", headers=bob).json()["jobs"] == []
    assert api.get("/v1/jobs/00000000-0000-0000-0000-000000000000", headers=alice).status_code == 404


def test_admin_endpoints_need_admin(api: TestClient, alice: dict[str, str], admin: dict[str, str]) -> None:
    assert api.get("/v1/admin/status", headers=alice).status_code == 403
    status = api.get("/v1/admin/status", headers=admin).json()
    assert status["pools"][0]["name"] == "default" and status["queue"]["queued"] == 0


def test_admin_creates_users_and_keys(api: TestClient, admin: dict[str, str]) -> None:
    r = api.post("/v1/admin/users", headers=admin, json={"name": "carol"})
    assert r.status_code == 201
    key = r.json()["api_key"]
    assert api.get("/v1/tools", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert api.post("/v1/admin/users", headers=admin, json={"name": "carol"}).status_code == 409
    assert api.post("/v1/admin/users", headers=admin, json={"name": "bad name!"}).status_code == 422
    assert key not in json.dumps(api.get("/v1/admin/users", headers=admin).json())


def _custom_tool() -> dict[str, Any]:
    return {
        "slug": "invert",
        "name": "Invert an image",
        "description": "EmptyImage then ImageInvert",
        "category": "utility",
        "base_model": "other",
        "workflow": {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
            },
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}},
        },
        "inputs": [
            {"name": "width", "type": "integer", "bindings": ["1.width"], "minimum": 16, "maximum": 512}
        ],
    }


def test_admin_adds_validates_and_removes_tools(
    api: TestClient, admin: dict[str, str], alice: dict[str, str]
) -> None:
    tool = _custom_tool()
    assert api.post("/v1/admin/tools", headers=alice, json=tool).status_code == 403
    r = api.post("/v1/admin/tools", headers=admin, json=tool)
    assert r.status_code == 201, r.text
    assert api.post("/v1/admin/tools", headers=admin, json=tool).status_code == 409
    assert api.post("/v1/admin/tools?replace=true", headers=admin, json=tool).status_code == 201

    broken = _custom_tool()
    broken["inputs"][0]["bindings"] = ["1.nonexistent"]
    r = api.post("/v1/admin/tools", headers=admin, json={**broken, "slug": "broken"})
    assert r.status_code == 422 and "nonexistent" in r.json()["detail"]
    no_output = _custom_tool()
    del no_output["workflow"]["3"]
    r = api.post("/v1/admin/tools", headers=admin, json={**no_output, "slug": "no-output"})
    assert r.status_code == 422 and "output" in r.json()["detail"]
    dangling = _custom_tool()
    dangling["workflow"]["2"]["inputs"]["image"] = ["99", 0]
    r = api.post("/v1/admin/tools", headers=admin, json={**dangling, "slug": "dangling"})
    assert r.status_code == 422 and "99" in r.json()["detail"]
    assert api.post(
        "/v1/admin/tools",
        headers=admin,
        content="[1,",
    ).status_code in (400, 422)

    assert api.delete("/v1/admin/tools/invert", headers=admin).status_code == 204
    assert api.get("/v1/tools/invert", headers=admin).status_code == 404
    assert api.delete("/v1/admin/tools/invert", headers=admin).status_code == 404


def test_uploads_are_checked(api: TestClient, alice: dict[str, str], bob: dict[str, str]) -> None:
    r = api.post("/v1/uploads", headers=alice, files={"file": ("in.png", png_bytes(), "image/png")})
    assert r.status_code == 201, r.text
    ref = r.json()["ref"]
    assert r.json()["width"] == 32
    job = api.post("/v1/jobs", headers=alice, json={"tool": "upscale-4x", "inputs": {"image": ref}})
    assert job.status_code == 201, job.text
    # Bob cannot use Alice's upload.
    r = api.post("/v1/jobs", headers=bob, json={"tool": "upscale-4x", "inputs": {"image": ref}})
    assert r.status_code == 422 and "unknown upload" in r.json()["detail"]
    r = api.post("/v1/uploads", headers=alice, files={"file": ("x.png", b"not an image", "image/png")})
    assert r.status_code == 422 and "not a readable image" in r.json()["detail"]
    r = api.post(
        "/v1/uploads", headers=alice, files={"file": ("big.png", png_bytes((1200, 1200)) + b"\0" * 60_000)}
    )
    assert r.status_code == 413


def test_worker_protocol_and_token_scopes(
    api: TestClient, plane: ControlPlane, clock: FakeClock, alice: dict[str, str], bob: dict[str, str]
) -> None:
    with transaction(plane.state.sessions) as s:
        inst_a, token_a = add_instance(s, clock())
        inst_b, token_b = add_instance(s, clock())
        a_id = inst_a.id
    wa = {"Authorization": f"Bearer {token_a}"}
    wb = {"Authorization": f"Bearer {token_b}"}
    # Worker tokens reach only the worker API; user keys do not reach the worker API.
    assert api.get("/v1/tools", headers=wa).status_code == 401
    assert api.post("/worker/v1/heartbeat", headers=alice, json={}).status_code == 401

    with transaction(plane.state.sessions) as s:
        s.get(type(inst_b), inst_b.id).state = "DRAINING"  # only A can take the job
    job = api.post("/v1/jobs", headers=alice, json={"tool": "sd15-txt2img", "inputs": {"prompt": "p"}}).json()
    with transaction(plane.state.sessions) as s:
        scheduler_pass(s, plane.state.settings, clock())
    r = api.get("/worker/v1/jobs/next", headers=wa, params={"wait": 0})
    assert r.status_code == 200, r.text
    assignment = r.json()
    assert assignment["job_id"] == job["id"] and assignment["lease_token"] == 1
    token = {"lease_token": 1}
    # Another instance cannot report on A's job, nor can A with a wrong fencing token.
    assert api.post(f"/worker/v1/jobs/{job['id']}/started", headers=wb, json=token).status_code == 409
    assert (
        api.post(f"/worker/v1/jobs/{job['id']}/started", headers=wa, json={"lease_token": 2}).status_code
        == 409
    )
    assert api.post(f"/worker/v1/jobs/{job['id']}/started", headers=wa, json=token).status_code == 204
    r = api.post(
        f"/worker/v1/jobs/{job['id']}/progress", headers=wa, json={**token, "progress": 0.5, "node": "3"}
    )
    assert r.status_code == 204
    uploads = api.post(
        f"/worker/v1/jobs/{job['id']}/outputs",
        headers=wa,
        json={**token, "files": [{"filename": "../../etc/x.png", "size": 4}]},
    ).json()["uploads"]
    assert uploads[0]["filename"] == "x.png"
    # Completing with an output that was never uploaded is refused.
    r = api.post(
        f"/worker/v1/jobs/{job['id']}/complete",
        headers=wa,
        json={**token, "outputs": [uploads[0]["output_id"]]},
    )
    assert r.status_code == 422
    url = uploads[0]["upload_url"].removeprefix(plane.state.settings.base_url)
    sig = url.split("signature=")[1]
    forged = url.replace(sig, ("1" if sig[0] != "1" else "2") + sig[1:])
    assert api.put(forged, content=b"x").status_code == 403
    assert api.put(url, content=png_bytes()).status_code == 204
    r = api.post(
        f"/worker/v1/jobs/{job['id']}/complete",
        headers=wa,
        json={**token, "outputs": [uploads[0]["output_id"]], "timings": {"run_seconds": 0.1}},
    )
    assert r.status_code == 204
    done = api.get(f"/v1/jobs/{job['id']}", headers=alice).json()
    assert done["state"] == "COMPLETED" and done["instance_id"] == a_id
    out = api.get(done["outputs"][0]["url"], headers=alice)
    assert out.status_code == 200 and out.content[:8] == b"\x89PNG\r\n\x1a\n"
    # The terminal event carries the outputs' ids and URLs: a client need not read the job again.
    with api.stream("GET", f"/v1/jobs/{job['id']}/events", headers=alice) as events:
        data = [json.loads(line[6:]) for line in events.iter_lines() if line.startswith("data: ")]
    assert data[-1]["state"] == "COMPLETED" and data[-1]["outputs"] == [uploads[0]["output_id"]]
    assert data[-1]["output_urls"] == [done["outputs"][0]["url"]]
    assert api.get(f"/v1/jobs/{job['id']}/events", headers=bob).status_code == 404
    # A late report after completion is refused and changes nothing.
    r = api.post(f"/worker/v1/jobs/{job['id']}/fail", headers=wa, json={**token, "error": "late"})
    assert r.status_code == 409
    assert api.get(f"/v1/jobs/{job['id']}", headers=alice).json()["state"] == "COMPLETED"
    with transaction(plane.state.sessions) as s:
        assert s.scalar(select(func.count()).select_from(Output)) == 1


def test_a_poll_with_start_starts_the_job_and_hands_a_lost_answer_out_again(
    api: TestClient, plane: ControlPlane, clock: FakeClock, alice: dict[str, str]
) -> None:
    """start=true: the answer is the job's start (RUNNING, no /started); a RUNNING job the
    worker does not say it holds is handed out again (the answer that started it was lost), one
    it holds is not; fencing is unchanged."""
    with transaction(plane.state.sessions) as s:
        _, token = add_instance(s, clock())
    w = {"Authorization": f"Bearer {token}"}
    job = api.post("/v1/jobs", headers=alice, json={"tool": "sd15-txt2img", "inputs": {"prompt": "p"}}).json()
    with transaction(plane.state.sessions) as s:
        scheduler_pass(s, plane.state.settings, clock())
    first = api.get("/worker/v1/jobs/next", headers=w, params={"wait": 0, "start": "true"})
    assert first.status_code == 200, first.text
    assert first.json()["job_id"] == job["id"] and first.json()["started"] is True
    seen = api.get(f"/v1/jobs/{job['id']}", headers=alice).json()
    assert seen["state"] == "RUNNING" and seen["started_at"] is not None
    # Lost on its way: the next poll gets the same lease again, still started.
    again = api.get("/worker/v1/jobs/next", headers=w, params={"wait": 0, "start": "true"})
    assert again.status_code == 200 and again.json()["job_id"] == job["id"]
    assert again.json()["lease_token"] == first.json()["lease_token"] and again.json()["started"] is True
    held = api.get(
        "/worker/v1/jobs/next", headers=w, params={"wait": 0, "start": "true", "holding": job["id"]}
    )
    assert held.status_code == 204
    # Without start (older workers) a RUNNING job is not handed out: only ASSIGNED ones are.
    assert api.get("/worker/v1/jobs/next", headers=w, params={"wait": 0}).status_code == 204
    lease = {"lease_token": first.json()["lease_token"]}
    assert (
        api.post(
            f"/worker/v1/jobs/{job['id']}/fail", headers=w, json={"lease_token": 99, "error": "x"}
        ).status_code
        == 409
    )
    r = api.post(f"/worker/v1/jobs/{job['id']}/progress", headers=w, json={**lease, "progress": 0.5})
    assert r.status_code == 204
    r = api.post(f"/worker/v1/jobs/{job['id']}/complete", headers=w, json={**lease, "timings": {}})
    assert r.status_code == 204
    assert api.get(f"/v1/jobs/{job['id']}", headers=alice).json()["state"] == "COMPLETED"
    assert api.get("/worker/v1/jobs/next", headers=w, params={"wait": 0, "start": "true"}).status_code == 204


def test_a_poll_without_start_leaves_the_job_assigned(
    api: TestClient, plane: ControlPlane, clock: FakeClock, alice: dict[str, str]
) -> None:
    with transaction(plane.state.sessions) as s:
        _, token = add_instance(s, clock())
    w = {"Authorization": f"Bearer {token}"}
    job = api.post("/v1/jobs", headers=alice, json={"tool": "sd15-txt2img", "inputs": {"prompt": "p"}}).json()
    with transaction(plane.state.sessions) as s:
        scheduler_pass(s, plane.state.settings, clock())
    r = api.get("/worker/v1/jobs/next", headers=w, params={"wait": 0})
    assert r.status_code == 200 and r.json()["started"] is False
    assert api.get(f"/v1/jobs/{job['id']}", headers=alice).json()["state"] == "ASSIGNED"


def test_events_stream_replays_and_ends(api: TestClient, alice: dict[str, str]) -> None:
    job = api.post("/v1/jobs", headers=alice, json={"tool": "sd15-txt2img", "inputs": {"prompt": "p"}}).json()
    assert api.post(f"/v1/jobs/{job['id']}/cancel", headers=alice).json()["state"] == "CANCELLED"
    with api.stream("GET", f"/v1/jobs/{job['id']}/events", headers=alice) as r:
        body = "".join(r.iter_text())
    assert body.index('"state": "QUEUED"') < body.index('"state": "CANCELLED"')
    assert "event: state" in body
    assert api.post(f"/v1/jobs/{job['id']}/cancel", headers=alice).status_code == 409


def test_worker_whose_comfyui_stopped_answering_is_marked_unhealthy(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    with transaction(plane.state.sessions) as s:
        inst, token = add_instance(s, clock())
        inst_id = inst.id
    w = {"Authorization": f"Bearer {token}"}
    assert api.post("/worker/v1/heartbeat", headers=w, json={"comfyui_ok": False}).status_code == 200
    clock.advance(plane.state.settings.heartbeat_timeout_seconds / 2)
    assert (
        api.post("/worker/v1/heartbeat", headers=w, json={"comfyui_ok": True}).status_code == 200
    )  # it came back
    assert api.post("/worker/v1/heartbeat", headers=w, json={"comfyui_ok": False}).status_code == 200
    clock.advance(plane.state.settings.heartbeat_timeout_seconds + 1)
    r = api.post("/worker/v1/heartbeat", headers=w, json={"comfyui_ok": False})
    assert r.status_code == 410 and "ComfyUI" in r.json()["detail"]
    status = api.get(
        f"/v1/admin/instances/{inst_id}", headers={"Authorization": f"Bearer {plane.admin_key}"}
    ).json()
    assert status["state"] == "UNHEALTHY"


def test_bootstrap_failure_marks_instance_unhealthy(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    from swarmstation.domain.states import InstanceState

    with transaction(plane.state.sessions) as s:
        inst, token = add_instance(s, clock(), state=InstanceState.PROVISIONING)
        inst_id = inst.id
    w = {"Authorization": f"Bearer {token}"}
    assert (
        api.post("/worker/v1/bootstrap", headers=w, json={"stage": "install", "ok": True}).status_code == 204
    )
    r = api.post(
        "/worker/v1/bootstrap", headers=w, json={"stage": "comfyui", "ok": False, "message": "port taken"}
    )
    assert r.status_code == 204
    status = api.get(
        f"/v1/admin/instances/{inst_id}", headers={"Authorization": f"Bearer {plane.admin_key}"}
    ).json()
    assert (
        status["state"] == "UNHEALTHY" and status["state_reason"] == "bootstrap failed at comfyui: port taken"
    )
    assert [t["to_state"] for t in status["transitions"]] == ["INITIALIZING", "UNHEALTHY"]
    assert (
        api.post("/worker/v1/bootstrap", headers=w, json={"stage": "x" * 51, "ok": True}).status_code == 422
    )


def test_split_needs_comfydeploy_configured(api: TestClient, admin: dict[str, str]) -> None:
    r = api.put(
        "/v1/admin/tools/sd15-txt2img/split",
        headers=admin,
        json={"comfydeploy_percent": 10, "deployment_id": "d"},
    )
    assert r.status_code == 422 and "COMFY_DEPLOY_API_KEY" in r.json()["detail"]
    assert (
        api.put("/v1/admin/tools/nope/split", headers=admin, json={"comfydeploy_percent": 0}).status_code
        == 404
    )
    assert api.get("/v1/admin/comfydeploy/deployments", headers=admin).status_code == 409
    r = api.post("/v1/webhooks/comfydeploy", params={"job": "x", "secret": "y"}, content=b"{}")
    assert r.status_code == 403


def test_the_process_can_hand_freed_heap_back() -> None:
    """glibc keeps freed heap; the lifespan's task calls malloc_trim every TRIM_SECONDS."""
    import sys

    from swarmstation.api.app import TRIM_SECONDS, _malloc_trim

    trim = _malloc_trim()
    if sys.platform == "linux":
        assert trim is not None and trim() in (0, 1)
    assert 0 < TRIM_SECONDS <= 60
