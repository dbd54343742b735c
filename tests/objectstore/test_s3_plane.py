"""The control plane on S3 (a real moto server): uploads, models and outputs live in the bucket
and clients and workers are sent there with presigned URLs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane, build
from swarmstation.control.scheduler import scheduler_pass
from swarmstation.objectstore.s3 import S3ObjectStore
from swarmstation.store.db import transaction
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user
from tests.s3_server import s3_settings


@pytest.fixture(scope="module")
def endpoint(s3_endpoint: str) -> str:
    return s3_endpoint


@pytest.fixture
def plane(tmp_path: Path, clock: FakeClock, endpoint: str) -> Iterator[ControlPlane]:
    settings = s3_settings(endpoint, tmp_path / "data")
    cp = build(settings, provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


def test_models_and_outputs_live_in_the_bucket(plane: ControlPlane, clock: FakeClock) -> None:
    store: Any = plane.state.store
    assert isinstance(store, S3ObjectStore)
    admin = {"Authorization": f"Bearer {plane.admin_key}"}
    with TestClient(plane.app) as api:
        data = b"checkpoint bytes" * 500
        r = api.put(
            "/v1/admin/models/upload/checkpoints/v1-5-pruned-emaonly.safetensors", headers=admin, content=data
        )
        assert r.status_code == 201, r.text
        with transaction(plane.state.sessions) as s:
            _, key = add_user(s, clock(), "erin")
            _, token = add_instance(s, clock())
        user = {"Authorization": f"Bearer {key}"}
        job = api.post(
            "/v1/jobs", headers=user, json={"tool": "sd15-txt2img", "inputs": {"prompt": "x"}}
        ).json()
        with transaction(plane.state.sessions) as s:
            scheduler_pass(s, plane.state.settings, clock())
        w = {"Authorization": f"Bearer {token}"}
        assignment = api.get("/worker/v1/jobs/next", headers=w, params={"wait": 0}).json()
        model = next(m for m in assignment["required_models"] if m["folder"] == "checkpoints")
        fetched = httpx.get(model["url"])  # a presigned S3 URL, straight to the bucket
        assert fetched.status_code == 200 and hashlib.sha256(fetched.content).hexdigest() == model["sha256"]
        lease = {"lease_token": assignment["lease_token"]}
        assert api.post(f"/worker/v1/jobs/{job['id']}/started", headers=w, json=lease).status_code == 204
        uploads = api.post(
            f"/worker/v1/jobs/{job['id']}/outputs",
            headers=w,
            json={**lease, "files": [{"filename": "out.png", "size": 3}]},
        ).json()["uploads"]
        assert httpx.put(uploads[0]["upload_url"], content=b"png").status_code == 200
        r = api.post(
            f"/worker/v1/jobs/{job['id']}/complete",
            headers=w,
            json={**lease, "outputs": [uploads[0]["output_id"]]},
        )
        assert r.status_code == 204, r.text
        done = api.get(f"/v1/jobs/{job['id']}", headers=user).json()
        r = api.get(done["outputs"][0]["url"], headers=user, follow_redirects=False)
        assert r.status_code == 307 and httpx.get(r.headers["location"]).content == b"png"
        assert api.get("/objects/anything?expires=1&signature=x").status_code == 404
