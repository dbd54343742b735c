"""An output's upload URL dies with its job's lease: the local store's PUT handler refuses it once
the job has completed or moved to another lease (whatever the URL's expiry says), and every
store's URL expires no later than the lease would."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.control.scheduler import scheduler_pass
from swarmstation.objectstore.s3 import S3ObjectStore
from swarmstation.store.db import transaction
from swarmstation.store.models import Job
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user
from tests.s3_server import ACCESS_KEY, SECRET_KEY, create_bucket, moto_endpoint

LEASE_SECONDS = 40


class Worker:
    """The worker side of one job, through the real worker API."""

    def __init__(self, api: TestClient, plane: ControlPlane, clock: FakeClock) -> None:
        self.api, self.plane, self.clock = api, plane, clock
        with transaction(plane.state.sessions) as s:
            _, key = add_user(s, clock())
            _, token = add_instance(s, clock())
        self.user = {"Authorization": f"Bearer {key}"}
        self.headers = {"Authorization": f"Bearer {token}"}

    def take_job(self) -> tuple[str, dict[str, int]]:
        job = self.api.post(
            "/v1/jobs", headers=self.user, json={"tool": "sd15-txt2img", "inputs": {"prompt": "a fox"}}
        ).json()
        self.schedule()
        assignment = self.api.get("/worker/v1/jobs/next", headers=self.headers, params={"wait": 0}).json()
        lease = {"lease_token": assignment["lease_token"]}
        r = self.api.post(f"/worker/v1/jobs/{job['id']}/started", headers=self.headers, json=lease)
        assert r.status_code == 204, r.text
        return str(job["id"]), lease

    def schedule(self) -> None:
        with transaction(self.plane.state.sessions) as s:
            scheduler_pass(s, self.plane.state.settings, self.clock())

    def upload_urls(self, job_id: str, lease: dict[str, int]) -> list[dict[str, Any]]:
        r = self.api.post(
            f"/worker/v1/jobs/{job_id}/outputs",
            headers=self.headers,
            json={**lease, "files": [{"filename": "out.png", "size": 3}]},
        )
        assert r.status_code == 200, r.text
        uploads: list[dict[str, Any]] = r.json()["uploads"]
        return uploads

    def complete(self, job_id: str, lease: dict[str, int], output_id: str) -> None:
        r = self.api.post(
            f"/worker/v1/jobs/{job_id}/complete", headers=self.headers, json={**lease, "outputs": [output_id]}
        )
        assert r.status_code == 204, r.text


@pytest.fixture
def local_plane(tmp_path: Path, clock: FakeClock) -> Iterator[ControlPlane]:
    settings = Settings(
        data_dir=tmp_path / "data",
        provider="none",
        lease_seconds=LEASE_SECONDS,
        scheduler_interval_seconds=60,
        control_interval_seconds=60,
    )
    cp = build(settings, provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


def test_a_local_upload_url_is_refused_after_its_job_completed(
    local_plane: ControlPlane, clock: FakeClock
) -> None:
    with TestClient(local_plane.app) as api:
        worker = Worker(api, local_plane, clock)
        job_id, lease = worker.take_job()
        [upload] = worker.upload_urls(job_id, lease)
        url = upload["upload_url"]
        # no longer than the lease (real seconds: the local store signs with the wall clock)
        expires = int(parse_qs(urlsplit(url).query)["expires"][0])
        assert expires - time.time() <= LEASE_SECONDS + 1
        assert api.put(url, content=b"png").status_code == 204
        worker.complete(job_id, lease, upload["output_id"])

        # the URL has not expired yet, but the job is over: the output cannot be replaced
        r = api.put(url, content=b"evil")
        assert r.status_code == 403, r.text
        assert "lease" in r.json()["detail"]
        done = api.get(f"/v1/jobs/{job_id}", headers=worker.user).json()
        assert done["state"] == "COMPLETED"
        assert api.get(done["outputs"][0]["url"], headers=worker.user).content == b"png"

        # the lease is part of the signature: pointing the URL at another lease does not help
        forged = url.replace(f"lease={lease['lease_token']}", f"lease={lease['lease_token'] + 1}")
        assert api.put(forged, content=b"evil").status_code == 403


def test_a_local_upload_url_is_refused_once_the_job_moved_to_another_lease(
    local_plane: ControlPlane, clock: FakeClock
) -> None:
    with TestClient(local_plane.app) as api:
        worker = Worker(api, local_plane, clock)
        job_id, lease = worker.take_job()
        [upload] = worker.upload_urls(job_id, lease)
        # the lease lapses (no heartbeat): the scheduler requeues the job, the URL dies with it
        clock.advance(LEASE_SECONDS + 1)
        worker.schedule()
        with local_plane.state.sessions() as s:
            job = s.get(Job, job_id)
            assert job is not None and job.state == "QUEUED"
        r = api.put(upload["upload_url"], content=b"late")
        assert r.status_code == 403, r.text
        # assigned again, to a new lease: the old lease's URL stays dead
        with local_plane.state.sessions() as s, s.begin():
            job = s.get(Job, job_id)
            assert job is not None
            job.state, job.lease_token = "RUNNING", lease["lease_token"] + 1
        assert api.put(upload["upload_url"], content=b"late").status_code == 403


@pytest.fixture
def s3_plane(tmp_path: Path, clock: FakeClock) -> Iterator[ControlPlane]:
    with moto_endpoint() as endpoint:
        bucket = f"ss-{uuid.uuid4().hex[:12]}"
        create_bucket(endpoint, bucket)
        settings = Settings(
            s3_bucket=bucket,
            s3_endpoint_url=endpoint,
            s3_region="us-east-1",
            s3_access_key_id=ACCESS_KEY,
            s3_secret_access_key=SECRET_KEY,
            data_dir=tmp_path / "data",
            provider="none",
            lease_seconds=LEASE_SECONDS,
            scheduler_interval_seconds=60,
            control_interval_seconds=60,
        )
        cp = build(settings, provider=None, clock=clock)
        try:
            yield cp
        finally:
            cp.state.engine.dispose()


def test_an_s3_upload_url_expires_with_the_lease(s3_plane: ControlPlane, clock: FakeClock) -> None:
    # moto ignores presigned expiry, so the expiry itself is what is checked, from the URL
    assert isinstance(s3_plane.state.store, S3ObjectStore)
    with TestClient(s3_plane.app) as api:
        worker = Worker(api, s3_plane, clock)
        job_id, lease = worker.take_job()  # `started` renews the lease: LEASE_SECONDS from now
        clock.advance(LEASE_SECONDS - 12)
        [upload] = worker.upload_urls(job_id, lease)
        query = parse_qs(urlsplit(upload["upload_url"]).query)
        assert query["X-Amz-Expires"] == ["12"]
        assert httpx.put(upload["upload_url"], content=b"png").status_code == 200
        worker.complete(job_id, lease, upload["output_id"])
