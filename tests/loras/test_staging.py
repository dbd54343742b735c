"""Approving a LoRA fetches a URL that a source API named: every hop is checked, redirects are
bounded, the source's token goes only to the source, and the admin sees where the file came from.

The fake Civitai runs on loopback and is trusted because it is the configured
`civitai_base_url`; every other loopback server is a "remote host" only if the test allow-lists it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from tests.conftest import FakeClock
from tests.fakes.model_hubs import FakeHubs, RecordingHost, lora_bytes

TOKEN = "civitai-secret-token-0123"


@pytest.fixture
def civitai() -> Iterator[FakeHubs]:
    hubs = FakeHubs().start()
    yield hubs
    hubs.stop()


@pytest.fixture
def third() -> Iterator[RecordingHost]:
    """A host that is not Civitai: allow-listed (a reachable third party), fails on Authorization."""
    host = RecordingHost(refuse_authorization=True).start()
    yield host
    host.stop()


@pytest.fixture
def internal() -> Iterator[RecordingHost]:
    """Something on loopback that must never be fetched (standing for the control plane's /metrics)."""
    host = RecordingHost().start()
    host.routes["/metrics"] = (200, {"Content-Type": "text/plain"}, b"swarmstation_jobs_total 3\n")
    yield host
    host.stop()


@pytest.fixture
def plane(
    tmp_path: Path, clock: FakeClock, civitai: FakeHubs, third: RecordingHost
) -> Iterator[ControlPlane]:
    settings = Settings(
        data_dir=tmp_path / "data",
        provider="none",
        civitai_base_url=civitai.url,
        civitai_token=TOKEN,
        outbound_allow_hosts=[third.hostport],
        scheduler_interval_seconds=60,
        control_interval_seconds=60,
        lora_staging_poll_seconds=0.05,
    )
    cp = build(settings, provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


@pytest.fixture
def api(plane: ControlPlane) -> Iterator[TestClient]:
    with TestClient(plane.app) as client:
        client.headers["Authorization"] = f"Bearer {plane.admin_key}"
        yield client


def import_and_approve(
    api: TestClient, civitai: FakeHubs, version_id: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    r = api.post("/v1/loras/import", json={"url": f"{civitai.url}/models/{version_id // 10}"})
    assert r.status_code == 201, r.text
    before = r.json()
    queued = api.get("/v1/admin/loras").json()["loras"]
    assert [q["source_url"] for q in queued if q["slug"] == before["slug"]] == [before["source_url"]]
    r = api.post(f"/v1/admin/loras/{before['slug']}/approve", json={})
    assert r.status_code == 202, r.text
    # Approval answers at once; the staging (and its checks) runs in the background.
    deadline = time.monotonic() + 15
    while (after := api.get(f"/v1/loras/{before['slug']}").json())["moderation_status"] == "staging":
        assert time.monotonic() < deadline, after
        time.sleep(0.02)
    return before, after


def test_a_download_url_on_loopback_is_refused(
    api: TestClient, civitai: FakeHubs, internal: RecordingHost
) -> None:
    metrics = f"{internal.url}/metrics"
    page = b"swarmstation_jobs_total 3\n"
    civitai.add_civitai_lora(11, 110, name="Sneaky", trained_words=["x"], content=page, download_url=metrics)
    before, after = import_and_approve(api, civitai, 110)
    assert before["source_url"] == metrics and before["final_url"] is None
    assert after["moderation_status"] == "deployment_failed"
    assert "refused" in after["failure_reason"] and "loopback" in after["failure_reason"]
    assert after["staged"] is False and after["final_url"] is None
    assert internal.requests == []  # not one byte went there
    assert hashlib.sha256(page).hexdigest() not in str(api.get("/v1/admin/loras?status=approved").json())


def test_a_redirect_to_the_metadata_address_is_refused(api: TestClient, civitai: FakeHubs) -> None:
    civitai.add_civitai_lora(12, 120, name="Metadata", trained_words=["x"])
    civitai.download_redirects[120] = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    _, after = import_and_approve(api, civitai, 120)
    assert after["moderation_status"] == "deployment_failed"
    assert "metadata" in after["failure_reason"], after["failure_reason"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1:70/x", "http://10.0.0.7/lora"])
def test_other_schemes_and_private_addresses_are_refused(
    api: TestClient, civitai: FakeHubs, url: str
) -> None:
    vid = 130 + len(civitai.civitai_versions)
    civitai.add_civitai_lora(vid // 10, vid, name=f"Odd {vid}", trained_words=["x"], download_url=url)
    _, after = import_and_approve(api, civitai, vid)
    assert after["moderation_status"] == "deployment_failed"
    assert "refused" in after["failure_reason"]


def test_redirect_loops_are_bounded(api: TestClient, civitai: FakeHubs) -> None:
    civitai.add_civitai_lora(14, 140, name="Loop", trained_words=["x"])
    civitai.download_redirects[140] = f"{civitai.url}/api/download/models/140"
    _, after = import_and_approve(api, civitai, 140)
    assert after["moderation_status"] == "deployment_failed"
    assert "redirects" in after["failure_reason"]
    assert civitai.requests.count("/api/download/models/140") == 6  # the first and five redirects


def test_the_token_goes_to_civitai_only(api: TestClient, civitai: FakeHubs, third: RecordingHost) -> None:
    # one source names a third party's URL outright; another redirects there, as to a CDN
    direct = lora_bytes("direct")
    civitai.add_civitai_lora(
        15,
        150,
        name="Direct",
        trained_words=["x"],
        content=direct,
        download_url=third.file("/d.safetensors", direct),
    )
    cdn = lora_bytes("cdn")
    civitai.add_civitai_lora(16, 160, name="Via CDN", trained_words=["y"], content=cdn)
    civitai.download_redirects[160] = third.file("/cdn/v160.safetensors", cdn) + "?X-Amz-Signature=s3cr3t"
    slugs: dict[int, str] = {}
    for vid in (150, 160):
        before, after = import_and_approve(api, civitai, vid)
        slugs[vid] = after["slug"]
        assert after["moderation_status"] == "approved", after["failure_reason"]
        assert after["source_url"] == before["source_url"]
    assert third.leaks == [] and all("authorization" not in r.headers for r in third.requests)
    assert third.paths() == ["/d.safetensors", "/cdn/v160.safetensors"]
    # Civitai itself did get the token: for its API and its own download endpoint
    sent = dict(civitai.authorizations)
    assert sent["/api/v1/models/16"] == f"Bearer {TOKEN}"
    assert sent["/api/download/models/160"] == f"Bearer {TOKEN}"
    # the admin sees where the file came from, without the signed query
    approved = {lora["slug"]: lora for lora in api.get("/v1/admin/loras?status=approved").json()["loras"]}
    via_cdn, direct_one = approved[slugs[160]], approved[slugs[150]]
    assert via_cdn["final_url"] == f"{third.url}/cdn/v160.safetensors"
    assert via_cdn["source_url"] == f"{civitai.url}/api/download/models/160"
    assert direct_one["final_url"] == f"{third.url}/d.safetensors"
