"""The background staging of approved LoRAs (control/moderation.py), on SQLite and PostgreSQL:
approval answers at once, progress shows on the LoRA, a restart mid-staging stages it again and
approves it, a failed download ends `deployment_failed` with the reason, a rejection abandons it.

The file comes from a real HTTP server that sends it slowly, in pieces, so that a test can look
at (and cut) a staging while it runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.domain.moderation import ModerationState
from swarmstation.store.db import transaction
from swarmstation.store.models import Lora
from tests.conftest import FakeClock
from tests.fakes.model_hubs import FakeHubs, lora_bytes

PIECE = 1024 * 1024  # stage_file reads 1 MiB chunks: one progress report per piece
CONTENT = lora_bytes("slow", size=6 * PIECE)


@dataclass
class SlowFileHost:
    """Serves `content` at /lora.safetensors in 1 MiB pieces, `delay` seconds apart, or answers
    `fail_status`. Counts the downloads it was asked for."""

    content: bytes
    delay: float = 0.25
    fail_status: int | None = None
    downloads: int = 0
    server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def hostport(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.hostport}/lora.safetensors"

    def start(self) -> SlowFileHost:
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with host._lock:
                    host.downloads += 1
                if host.fail_status is not None:
                    self.send_response(host.fail_status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(host.content)))
                self.end_headers()
                try:
                    for start in range(0, len(host.content), PIECE):
                        self.wfile.write(host.content[start : start + PIECE])
                        self.wfile.flush()
                        time.sleep(host.delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the stager hung up (stopped, or the LoRA was rejected)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def slow() -> Iterator[SlowFileHost]:
    host = SlowFileHost(CONTENT).start()
    yield host
    host.stop()


@pytest.fixture
def hubs(slow: SlowFileHost) -> Iterator[FakeHubs]:
    fake = FakeHubs().start()
    fake.add_civitai_lora(
        31, 310, name="Slow Ink", trained_words=["slow ink"], content=CONTENT, download_url=slow.url
    )
    yield fake
    fake.stop()


@pytest.fixture
def make_plane(
    tmp_path: Path, database_url: str, clock: FakeClock, hubs: FakeHubs, slow: SlowFileHost
) -> Iterator[Any]:
    """Control planes on one database and data folder: calling it again is a restart."""
    planes: list[ControlPlane] = []

    def make() -> ControlPlane:
        settings = Settings(
            data_dir=tmp_path / "data",
            database_url=database_url,
            provider="none",
            civitai_base_url=hubs.url,
            outbound_allow_hosts=[slow.hostport],
            scheduler_interval_seconds=60,
            control_interval_seconds=60,
            lora_staging_poll_seconds=0.05,
        )
        plane = build(settings, provider=None, clock=clock)
        planes.append(plane)
        return plane

    yield make
    for plane in planes:
        plane.state.engine.dispose()


def client(plane: ControlPlane, admin_key: str | None = None) -> TestClient:
    """An admin's client; a restarted plane shows no key (the admin exists), so pass the first one."""
    api = TestClient(plane.app)
    api.headers["Authorization"] = f"Bearer {admin_key or plane.admin_key}"
    return api


def import_slow(api: TestClient, hubs: FakeHubs) -> str:
    r = api.post("/v1/loras/import", json={"url": f"{hubs.url}/models/31"})
    assert r.status_code == 201, r.text
    return str(r.json()["slug"])


def wait_lora(api: TestClient, slug: str, until: Any, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        lora: dict[str, Any] = api.get(f"/v1/loras/{slug}").json()
        if until(lora):
            return lora
        assert time.monotonic() < deadline, f"timed out: {lora}"
        time.sleep(0.02)


def test_approval_answers_at_once_and_progress_shows_on_the_lora(
    make_plane: Any, hubs: FakeHubs, slow: SlowFileHost
) -> None:
    plane = make_plane()
    with client(plane) as api:
        slug = import_slow(api, hubs)
        started = time.monotonic()
        r = api.post(f"/v1/admin/loras/{slug}/approve", json={"visibility": "private"})
        assert r.status_code == 202, r.text
        assert time.monotonic() - started < 1.0  # the 1.5 s download is not inside the request
        answered = r.json()
        assert answered["moderation_status"] == "staging" and not answered["staged"]
        assert answered["staging_bytes_done"] == 0 and answered["staging_bytes_total"] == len(CONTENT)
        midway = wait_lora(api, slug, lambda lo: lo["staging_bytes_done"] > 0)
        assert midway["moderation_status"] == "staging"
        assert 0 < midway["staging_bytes_done"] < midway["staging_bytes_total"] == len(CONTENT)
        # The queue of LoRAs staging is visible to the admin too.
        queued = api.get("/v1/admin/loras?status=staging").json()["loras"]
        assert [lo["slug"] for lo in queued] == [slug]
        # A second approval while staging starts nothing new.
        assert api.post(f"/v1/admin/loras/{slug}/approve", json={}).json()["moderation_status"] == "staging"
        done = wait_lora(api, slug, lambda lo: lo["moderation_status"] != "staging")
    assert done["moderation_status"] == "approved", done
    assert done["staged"] and done["failure_reason"] == "" and done["visibility"] == "private"
    assert done["staging_bytes_done"] == done["staging_bytes_total"] == len(CONTENT)
    assert done["final_url"] == slow.url
    assert plane.state.store.get_bytes(f"models/loras/{done['file_sha256']}.safetensors") == CONTENT
    assert slow.downloads == 1


def test_a_restart_mid_staging_stages_again_and_approves(
    make_plane: Any, hubs: FakeHubs, slow: SlowFileHost
) -> None:
    first = make_plane()
    with client(first) as api:
        slug = import_slow(api, hubs)
        assert api.post(f"/v1/admin/loras/{slug}/approve", json={}).status_code == 202
        cut = wait_lora(api, slug, lambda lo: lo["staging_bytes_done"] > 0)
    # The first control plane stopped (its lifespan ended) in the middle of the download.
    with transaction(first.state.sessions) as s:
        lora = s.scalar(select(Lora).where(Lora.slug == slug))
        assert lora is not None
        assert lora.state == ModerationState.STAGING
        assert 0 < lora.staging_bytes_done < len(CONTENT)
    assert cut["moderation_status"] == "staging"

    second = make_plane()
    with client(second, first.admin_key) as api:
        done = wait_lora(api, slug, lambda lo: lo["moderation_status"] != "staging")
    assert done["moderation_status"] == "approved" and done["staged"], done
    assert second.state.store.get_bytes(f"models/loras/{done['file_sha256']}.safetensors") == CONTENT
    assert slow.downloads == 2  # staged again from the start: content-addressed, so idempotent


def test_a_lora_left_staging_by_a_killed_process_is_picked_up(
    make_plane: Any, hubs: FakeHubs, slow: SlowFileHost
) -> None:
    plane = make_plane()
    with client(plane) as api:
        slug = import_slow(api, hubs)
    # As if the process approving it had died before any staging started: nobody works on it.
    with transaction(plane.state.sessions) as s:
        s.execute(
            text("UPDATE loras SET moderation_status = 'staging', staging_bytes_done = 123 WHERE slug = :s"),
            {"s": slug},
        )
    slow.delay = 0
    with client(make_plane(), plane.admin_key) as api:
        done = wait_lora(api, slug, lambda lo: lo["moderation_status"] != "staging")
    assert done["moderation_status"] == "approved" and done["staging_bytes_done"] == len(CONTENT)


def test_a_failing_download_ends_deployment_failed_with_the_reason(
    make_plane: Any, hubs: FakeHubs, slow: SlowFileHost
) -> None:
    slow.fail_status = 500
    with client(make_plane()) as api:
        slug = import_slow(api, hubs)
        assert api.post(f"/v1/admin/loras/{slug}/approve", json={}).status_code == 202
        failed = wait_lora(api, slug, lambda lo: lo["moderation_status"] != "staging")
        assert failed["moderation_status"] == "deployment_failed" and not failed["staged"]
        assert failed["failure_reason"] == "download failed: HTTP 500 from 127.0.0.1", failed
        assert failed["moderation_reason"] == ""
        # Approving again retries; this time the source answers.
        slow.fail_status, slow.delay = None, 0
        retry = api.post(f"/v1/admin/loras/{slug}/approve", json={})
        assert retry.status_code == 202 and retry.json()["failure_reason"] == ""
        done = wait_lora(api, slug, lambda lo: lo["moderation_status"] != "staging")
    assert done["moderation_status"] == "approved" and done["failure_reason"] == ""


def test_rejecting_while_staging_abandons_the_staging(
    make_plane: Any, hubs: FakeHubs, slow: SlowFileHost
) -> None:
    plane = make_plane()
    with client(plane) as api:
        slug = import_slow(api, hubs)
        assert api.post(f"/v1/admin/loras/{slug}/approve", json={}).status_code == 202
        wait_lora(api, slug, lambda lo: lo["staging_bytes_done"] > 0)
        r = api.post(f"/v1/admin/loras/{slug}/reject", json={"reason": "changed my mind"})
        assert r.status_code == 200 and r.json()["moderation_status"] == "rejected", r.text
        time.sleep(6 * slow.delay + 0.5)  # longer than the rest of the download would take
        after = api.get(f"/v1/loras/{slug}").json()
    assert after["moderation_status"] == "rejected" and after["moderation_reason"] == "changed my mind"
    assert not after["staged"] and after["final_url"] is None
