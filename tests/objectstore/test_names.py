"""One naming rule for output files, object keys and model names: Unicode is accepted everywhere
(NFC), and a name is judged before any body is read (issue 11, item 12)."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane, build
from swarmstation.control.scheduler import scheduler_pass
from swarmstation.domain.names import BadName, normalise_path, normalise_segment, safe_file_name
from swarmstation.objectstore.base import BadKey, normalise_key
from swarmstation.objectstore.local import LocalObjectStore
from swarmstation.objectstore.s3 import S3ObjectStore
from swarmstation.store.db import transaction
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user
from tests.s3_server import s3_settings

FOX = "狐狸_00001_.png"
PNG = b"\x89PNG\r\n\x1a\n fox pixels"


# -- the rule --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", [FOX, "a b.safetensors", "Ünïcödé.png", "नमस्ते.png", "emoji-🦊.png", "a'b(1)#.png"]
)
def test_names_of_every_script_are_accepted(name: str) -> None:
    assert normalise_segment(name) == name
    assert normalise_key(f"outputs/j/o/{name}") == f"outputs/j/o/{name}"


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "a/b", "a\\b", "a\x00b", "a\nb", "a\u200bb", "a\u2028b", " lead", "trail ", "x" * 256],
)
def test_names_that_cannot_be_a_file_are_refused(name: str) -> None:
    with pytest.raises(BadName):
        normalise_segment(name)


def test_names_have_one_spelling() -> None:
    decomposed = unicodedata.normalize("NFD", "café.png")
    assert decomposed != "café.png"
    assert normalise_segment(decomposed) == "café.png"
    assert normalise_key(f"uploads/{decomposed}") == "uploads/café.png"
    for key in ("a//b", "a/./b", "a/../b", "/abs", "a/", "x" * 1025):
        with pytest.raises(BadKey):
            normalise_key(key)
    assert normalise_path("a/b") == "a/b"


def test_output_names_keep_their_letters() -> None:
    assert safe_file_name(FOX) == FOX
    assert safe_file_name("../../etc/x.png") == "x.png"
    assert safe_file_name("C:\\tmp\\狐.png") == "狐.png"
    assert safe_file_name("a b (1).png") == "a_b__1_.png"
    assert safe_file_name("..") == "output"
    long = safe_file_name("狐" * 300 + ".png")
    assert long.endswith(".png") and len(long.encode()) <= 200
    # Whatever the output naming yields, the store takes.
    for raw in (FOX, "a\x00b.png", "狐" * 300 + ".png", " x ", "\u200b"):
        normalise_key(f"outputs/j/o/{safe_file_name(raw)}")


# -- end to end ------------------------------------------------------------------------------------
def run_job_with_output(plane: ControlPlane, api: TestClient, clock: FakeClock, put: Any) -> tuple[Any, dict]:
    """Submit a job, take it as a worker, report an output named FOX, upload it with `put(url)`
    and complete the job; returns (the finished job, the user's headers)."""
    with transaction(plane.state.sessions) as s:
        _, key = add_user(s, clock(), f"u{uuid.uuid4().hex[:6]}")
        _, token = add_instance(s, clock())
    user = {"Authorization": f"Bearer {key}"}
    worker = {"Authorization": f"Bearer {token}"}
    job = api.post("/v1/jobs", headers=user, json={"tool": "sd15-txt2img", "inputs": {"prompt": "a fox"}})
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    with transaction(plane.state.sessions) as s:
        scheduler_pass(s, plane.state.settings, clock())
    assignment = api.get("/worker/v1/jobs/next", headers=worker, params={"wait": 0}).json()
    lease = {"lease_token": assignment["lease_token"]}
    assert api.post(f"/worker/v1/jobs/{job_id}/started", headers=worker, json=lease).status_code == 204
    r = api.post(
        f"/worker/v1/jobs/{job_id}/outputs",
        headers=worker,
        json={**lease, "files": [{"filename": FOX, "size": len(PNG)}]},
    )
    assert r.status_code == 200, r.text
    upload = r.json()["uploads"][0]
    assert upload["filename"] == FOX
    put(upload["upload_url"])
    r = api.post(
        f"/worker/v1/jobs/{job_id}/complete", headers=worker, json={**lease, "outputs": [upload["output_id"]]}
    )
    assert r.status_code == 204, r.text
    done = api.get(f"/v1/jobs/{job_id}", headers=user).json()
    assert done["state"] == "COMPLETED"
    assert done["outputs"][0]["filename"] == FOX
    return done, user


def test_a_unicode_output_through_the_local_store(
    plane: ControlPlane, api: TestClient, clock: FakeClock
) -> None:
    base = plane.state.settings.base_url

    def put(url: str) -> None:
        r = api.put(url.removeprefix(base), content=PNG)
        assert r.status_code == 204, r.text

    done, user = run_job_with_output(plane, api, clock, put)
    store = plane.state.store
    assert isinstance(store, LocalObjectStore)
    assert [p.name for p in store.root.glob("outputs/*/*/*")] == [FOX]
    r = api.get(done["outputs"][0]["url"], headers=user)
    assert r.status_code == 200 and r.content == PNG


@pytest.fixture
def s3_plane(tmp_path: Path, clock: FakeClock, s3_endpoint: str) -> Iterator[ControlPlane]:
    settings = s3_settings(s3_endpoint, tmp_path / "data")
    cp = build(settings, provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


def test_a_unicode_output_through_the_s3_store(s3_plane: ControlPlane, clock: FakeClock) -> None:
    store = s3_plane.state.store
    assert isinstance(store, S3ObjectStore)

    def put(url: str) -> None:
        r = httpx.put(url, content=PNG)  # straight to the bucket, as a worker does
        assert r.status_code == 200, r.text

    with TestClient(s3_plane.app) as api:
        done, user = run_job_with_output(s3_plane, api, clock, put)
        keys = [o["Key"] for o in store.client.list_objects_v2(Bucket=store.bucket)["Contents"]]
        assert len(keys) == 1 and keys[0].startswith("swarm/outputs/") and keys[0].endswith(f"/{FOX}")
        r = api.get(done["outputs"][0]["url"], headers=user, follow_redirects=False)
        if r.status_code == 307:  # the store sends the client to a presigned URL
            r = httpx.get(r.headers["location"])
        assert r.status_code == 200 and r.content == PNG


# -- model names -----------------------------------------------------------------------------------
class CountingBody:
    """A request body that records how much of it the server has read."""

    def __init__(self, chunks: int, size: int = 65536) -> None:
        self.chunks, self.size, self.read = chunks, size, 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.chunks):
            self.read += 1
            yield b"\x00" * self.size


def test_a_model_name_with_a_space_is_accepted_end_to_end(
    plane: ControlPlane, api: TestClient, admin: dict[str, str]
) -> None:
    r = api.put(
        "/v1/admin/models/upload/checkpoints/a b.safetensors", headers=admin, content=b"weights" * 100
    )
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["name"] == "a b.safetensors"
    store = plane.state.store
    assert isinstance(store, LocalObjectStore)
    assert [p.name for p in store.root.glob("models/checkpoints/*/*")] == ["a b.safetensors"]
    # The same rule by URL: accepted as well (it is the name that is checked, not the route).
    r = api.post(
        "/v1/admin/models",
        headers=admin,
        json={
            "folder": "loras",
            "name": "狐 b.safetensors",
            "url": "https://huggingface.co/x/狐.safetensors",
        },
    )
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "name",
    [
        "\u200bsneaky.safetensors",
        "sdxl/ trailing.safetensors",
        "x" * 256 + ".safetensors",
        "x" * 230 + ".safetensors",  # fits a file system (255 bytes), not the catalog's key column
    ],
)
def test_a_bad_model_name_is_refused_before_the_body_is_read(
    plane: ControlPlane, api: TestClient, admin: dict[str, str], name: str
) -> None:
    body = CountingBody(chunks=200)  # 12.5 MiB, if it were read
    r = api.put(f"/v1/admin/models/upload/checkpoints/{name}", headers=admin, content=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("name:")
    assert body.read <= 2, f"the server read {body.read} chunks of the body before refusing the name"
    store = plane.state.store
    assert isinstance(store, LocalObjectStore)
    assert not list(store.root.glob("models/**/*.safetensors"))
