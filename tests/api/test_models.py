"""The model catalog: upload, register by URL, validation, and where workers fetch models from."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient
from sqlalchemy import select

from swarmstation.api.app import ControlPlane
from swarmstation.control.scheduler import scheduler_pass
from swarmstation.store.db import transaction
from swarmstation.store.models import Job
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user

PLANE_SETTINGS = {"max_model_bytes": 1_000_000}


def test_upload_hashes_and_stores(api: TestClient, plane: ControlPlane, admin: dict[str, str]) -> None:
    data = b"weights" * 1000
    r = api.put(
        "/v1/admin/models/upload/checkpoints/sd/v1-5-pruned-emaonly.safetensors",
        headers=admin,
        content=data,
        params={"kind": "checkpoint", "base_model": "SD1.5"},
    )
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["sha256"] == hashlib.sha256(data).hexdigest() and m["size"] == len(data)
    assert m["name"] == "sd/v1-5-pruned-emaonly.safetensors"
    assert (
        api.put(
            "/v1/admin/models/upload/checkpoints/sd/v1-5-pruned-emaonly.safetensors",
            headers=admin,
            content=data,
        ).status_code
        == 409
    )
    assert [x["id"] for x in api.get("/v1/admin/models", headers=admin).json()] == [m["id"]]
    assert (
        api.put(
            "/v1/admin/models/upload/checkpoints/big.safetensors", headers=admin, content=b"x" * 1_000_001
        ).status_code
        == 413
    )
    assert (
        api.put("/v1/admin/models/upload/nope/x.safetensors", headers=admin, content=b"x").status_code == 422
    )
    r = api.put("/v1/admin/models/upload/checkpoints/a/../../x.safetensors", headers=admin, content=b"x")
    assert r.status_code in (404, 422)
    assert api.delete(f"/v1/admin/models/{m['id']}", headers=admin).status_code == 204
    assert not any(plane.state.store.root.glob("models/checkpoints/*/*"))


def test_register_url_is_allow_listed(api: TestClient, admin: dict[str, str]) -> None:
    body = {
        "folder": "checkpoints",
        "name": "flux1-schnell.safetensors",
        "kind": "unet",
        "url": "https://huggingface.co/black-forest-labs/FLUX.1-schnell/resolve/main/flux1-schnell.safetensors",
    }
    assert api.post("/v1/admin/models", headers=admin, json=body).status_code == 201
    for bad, fragment in (
        ({**body, "name": "b", "url": "https://evil.example/x.safetensors"}, "not an allowed model host"),
        ({**body, "name": "c", "url": "http://huggingface.co/x"}, "https"),
        ({**body, "name": "/etc/passwd"}, "name"),
        ({**body, "name": "d", "sha256": "xyz"}, "sha256"),
    ):
        r = api.post("/v1/admin/models", headers=admin, json=bad)
        assert r.status_code == 422 and fragment in r.json()["detail"], r.text
    user = {"Authorization": "Bearer nope"}
    assert api.get("/v1/admin/models", headers=user).status_code == 401


def test_job_models_come_with_a_source(
    api: TestClient, plane: ControlPlane, clock: FakeClock, admin: dict[str, str]
) -> None:
    data = b"sdxl" * 100
    r = api.put(
        "/v1/admin/models/upload/checkpoints/sd_xl_base_1.0.safetensors",
        headers=admin,
        content=data,
        params={"kind": "checkpoint"},
    )
    assert r.status_code == 201
    with transaction(plane.state.sessions) as s:
        _, key = add_user(s, clock(), "dora")
        _, token = add_instance(s, clock())
    job = api.post(
        "/v1/jobs",
        headers={"Authorization": f"Bearer {key}"},
        json={"tool": "sdxl-txt2img", "inputs": {"prompt": "x"}},
    ).json()
    ckpt = next(m for m in job["required_models"] if m["folder"] == "checkpoints")
    assert ckpt["sha256"] == hashlib.sha256(data).hexdigest() and "key" not in ckpt
    with transaction(plane.state.sessions) as s:
        scheduler_pass(s, plane.state.settings, clock())
    assignment = api.get(
        "/worker/v1/jobs/next", headers={"Authorization": f"Bearer {token}"}, params={"wait": 0}
    ).json()
    model = next(m for m in assignment["required_models"] if m["folder"] == "checkpoints")
    got = api.get(model["url"].removeprefix(plane.state.settings.base_url))
    assert got.status_code == 200 and got.content == data


def test_popular_models_are_prefetched_onto_idle_instances(
    api: TestClient, plane: ControlPlane, clock: FakeClock, admin: dict[str, str]
) -> None:
    r = api.put(
        "/v1/admin/models/upload/checkpoints/sd_xl_base_1.0.safetensors", headers=admin, content=b"m" * 64
    )
    assert r.status_code == 201
    with transaction(plane.state.sessions) as s:
        _, key = add_user(s, clock(), "finn")
    user = {"Authorization": f"Bearer {key}"}
    for _ in range(3):
        assert (
            api.post(
                "/v1/jobs", headers=user, json={"tool": "sdxl-txt2img", "inputs": {"prompt": "x"}}
            ).status_code
            == 201
        )
    with transaction(plane.state.sessions) as s:
        _, token = add_instance(s, clock())
    with transaction(plane.state.sessions) as s:
        for job in s.scalars(select(Job)):
            job.state = "CANCELLED"  # demand is remembered from recent jobs; the instance stays idle
        scheduler_pass(s, plane.state.settings, clock())
    hb = api.post("/worker/v1/heartbeat", headers={"Authorization": f"Bearer {token}"}, json={}).json()
    keys = [f"{m['folder']}/{m['name']}" for m in hb["prefetch"]]
    assert keys == ["checkpoints/sd_xl_base_1.0.safetensors"] and hb["prefetch"][0]["url"]
    # Once the instance reports the model, it is no longer asked to fetch it.
    api.post(
        "/worker/v1/heartbeat",
        headers={"Authorization": f"Bearer {token}"},
        json={"models": ["checkpoints/sd_xl_base_1.0.safetensors"]},
    )
    with transaction(plane.state.sessions) as s:
        scheduler_pass(s, plane.state.settings, clock())
    hb = api.post("/worker/v1/heartbeat", headers={"Authorization": f"Bearer {token}"}, json={}).json()
    assert hb["prefetch"] == []
