"""The ComfyUI Deploy client and webhook helpers, against the fake ComfyUI Deploy server."""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmstation.config import Settings, reveal
from swarmstation.domain.comfydeploy_webhooks import (
    RunUpdate,
    newer,
    parse_webhook,
    verify_webhook_secret,
    webhook_secret,
    webhook_url,
)
from swarmstation.integrations.comfydeploy.client import ComfyDeployClient, ComfyDeployError
from tests.fakes.comfydeploy import FakeComfyDeploy

KEY = b"webhook-signing-key"


class Receiver:
    """Our side of the webhooks: checks the per-run secret, applies updates with `newer`."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.rejected = 0
        self.state: dict[str, RunUpdate] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                job, secret = query.get("job", [""])[0], query.get("secret", [""])[0]
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not verify_webhook_secret(job, secret, KEY):
                    with receiver.lock:
                        receiver.rejected += 1
                    self.send_response(403)
                    self.end_headers()
                    return
                update = parse_webhook(body)
                with receiver.lock:
                    receiver.received.append(json.loads(body))
                    if newer(receiver.state.get(update.run_id), update):
                        receiver.state[update.run_id] = update
                self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/webhook/comfydeploy"

    def hook(self, job_id: str) -> str:
        return webhook_url(self.url, job_id, KEY)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeComfyDeploy]:
    with FakeComfyDeploy() as f:
        yield f


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(fake: FakeComfyDeploy, sleeps: list[float]) -> Iterator[ComfyDeployClient]:
    with ComfyDeployClient(fake.api_key, base_url=fake.url, sleep=sleeps.append, rand=lambda: 0.5) as c:
        yield c


def poll_until_terminal(client: ComfyDeployClient, run_id: str, timeout: float = 5.0) -> RunUpdate:
    deadline = time.monotonic() + timeout
    state: RunUpdate | None = None
    while time.monotonic() < deadline:
        update = client.get_run(run_id)
        if newer(state, update):
            state = update
        if update.terminal:
            assert state is not None
            return state
        time.sleep(0.02)
    raise AssertionError("run did not finish")


# ------------------------------------------------------------------------------------------ end to end


def test_queue_webhooks_and_outputs(
    fake: FakeComfyDeploy, client: ComfyDeployClient, receiver: Receiver
) -> None:
    fake.outputs_per_run = 2
    run_id = client.queue_run("dep-flux", {"input_prompt": "a red cube"}, receiver.hook("job-1"))
    fake.wait_finished(run_id)
    statuses = [w["status"] for w in receiver.received]
    assert statuses[0] == "queued" and statuses[-1] == "success"
    assert "running" in statuses
    progress = [w["progress"] for w in receiver.received if w["status"] == "running"]
    assert progress == sorted(progress) and progress[-1] == 1.0
    final = receiver.state[run_id]
    assert final.status == "success" and final.progress == 1.0
    assert [o.type for o in final.outputs] == ["image", "image"]
    assert fake.runs[run_id].inputs == {"input_prompt": "a red cube"}
    # the same outputs through the API, and the files are real PNGs
    outs = client.outputs(run_id)
    assert outs == list(final.outputs)
    for out in outs:
        data = client.download(out)
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert out.name.endswith(".png") and out.content_type == "image/png"


def test_status_polling_recovers_a_lost_final_webhook(
    fake: FakeComfyDeploy, client: ComfyDeployClient, receiver: Receiver
) -> None:
    fake.lose_statuses = {"success"}
    run_id = client.queue_run("dep-flux", {"input_prompt": "x"}, receiver.hook("job-2"))
    fake.wait_finished(run_id)
    assert receiver.state[run_id].status == "running"  # the webhook alone would leave it running
    polled = client.get_run(run_id)
    assert polled.status == "success" and len(polled.outputs) == 1
    assert newer(receiver.state[run_id], polled)


def test_polling_sees_progress_and_live_status(fake: FakeComfyDeploy, client: ComfyDeployClient) -> None:
    fake.step_delay = 0.1
    run_id = client.queue_run("dep-flux", {})
    seen: list[RunUpdate] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        u = client.get_run(run_id)
        seen.append(u)
        if u.terminal:
            break
        time.sleep(0.03)
    running = [u for u in seen if u.status == "running"]
    assert running and any(u.live_status and "executing node" in u.live_status for u in running)
    assert seen[0].status in ("queued", "running") and seen[-1].status == "success"


def test_failed_run_carries_its_error(
    fake: FakeComfyDeploy, client: ComfyDeployClient, receiver: Receiver
) -> None:
    fake.fail_message = "CUDA out of memory"
    run_id = client.queue_run("dep-flux", {}, receiver.hook("job-3"))
    fake.wait_finished(run_id)
    assert receiver.state[run_id].status == "failed"
    assert receiver.state[run_id].error == "CUDA out of memory"
    assert client.get_run(run_id).error == "CUDA out of memory"


def test_cancel(fake: FakeComfyDeploy, client: ComfyDeployClient, receiver: Receiver) -> None:
    fake.queue_delay = 0.5
    run_id = client.queue_run("dep-flux", {}, receiver.hook("job-4"))
    client.cancel_run(run_id)
    fake.wait_finished(run_id)
    assert client.get_run(run_id).status == "cancelled"
    assert receiver.state[run_id].status == "cancelled"
    assert not any(w["status"] == "running" for w in receiver.received)


def test_duplicated_and_shuffled_webhooks_change_nothing(
    fake: FakeComfyDeploy, client: ComfyDeployClient, receiver: Receiver
) -> None:
    fake.duplicate = 3
    fake.shuffle = True
    fake.rng.seed(7)
    run_id = client.queue_run("dep-flux", {}, receiver.hook("job-5"))
    fake.wait_finished(run_id)
    statuses = [w["status"] for w in receiver.received]
    assert len(statuses) == 3 * 6  # queued, 3 x running, uploading, success — each three times
    assert statuses[-1] != "success" or statuses[0] != "queued"  # really out of order (seeded)
    final = receiver.state[run_id]
    assert final == client.get_run(run_id)
    assert final.status == "success" and len(final.outputs) == 1


def test_webhooks_with_a_wrong_secret_are_rejected(
    fake: FakeComfyDeploy, client: ComfyDeployClient, receiver: Receiver
) -> None:
    bad = receiver.url + "?job=job-6&secret=" + webhook_secret("another-job", KEY)
    run_id = client.queue_run("dep-flux", {}, bad)
    fake.wait_finished(run_id)
    assert receiver.rejected == 6 and receiver.received == []
    assert {w["_code"] for w in fake.sent_webhooks} == {403}


def test_deployments_and_machines(client: ComfyDeployClient) -> None:
    [dep] = client.deployments()
    assert (dep.id, dep.name, dep.machine_id) == ("dep-flux", "flux-prod-01", "m-a10g")
    [machine] = client.machines()
    assert (machine.id, machine.gpu, machine.status) == ("m-a10g", "A10G", "ready")


def test_unknown_deployment_is_a_4xx_without_retry(
    fake: FakeComfyDeploy, client: ComfyDeployClient, sleeps: list[float]
) -> None:
    with pytest.raises(ComfyDeployError) as info:
        client.queue_run("nope", {})
    assert info.value.status_code == 404 and not info.value.retryable
    assert sleeps == [] and fake.requests.count(("POST", "/api/run/deployment/queue")) == 1


# ---------------------------------------------------------------------------------------------- retries


def test_retries_429_and_500_with_backoff(
    fake: FakeComfyDeploy, client: ComfyDeployClient, sleeps: list[float]
) -> None:
    fake.fail("queue", 429)
    run_id = client.queue_run("dep-flux", {})
    assert len(fake.runs) == 1  # a retried queue makes one run
    fake.fail("status", 500, times=2)
    assert client.get_run(run_id).run_id == run_id
    # 429 honours Retry-After: 0 but not below the backoff; then full jitter (domain/backoff.py):
    # 1 x 0.5, 2 x 0.5 (rand = 0.5)
    assert sleeps == [0.5, 0.5, 1.0]


def test_queue_is_not_retried_on_500(
    fake: FakeComfyDeploy, client: ComfyDeployClient, sleeps: list[float]
) -> None:
    fake.fail("queue", 500)
    with pytest.raises(ComfyDeployError) as info:
        client.queue_run("dep-flux", {})
    assert info.value.status_code == 500 and sleeps == []


def test_retries_give_up(fake: FakeComfyDeploy, client: ComfyDeployClient, sleeps: list[float]) -> None:
    fake.fail("deployments", 503, times=10)
    with pytest.raises(ComfyDeployError) as info:
        client.deployments()
    assert info.value.status_code == 503 and info.value.retryable
    assert len(sleeps) == client.retries
    assert fake.requests.count(("GET", "/api/deployments")) == client.retries + 1


def test_connection_errors_are_retried(sleeps: list[float]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json=[{"id": "m1", "name": "m1"}])

    with ComfyDeployClient("k-secret", sleep=sleeps.append, transport=httpx.MockTransport(handler)) as c:
        assert [m.id for m in c.machines()] == ["m1"]
    assert calls == 3 and len(sleeps) == 2


def test_bad_key_is_401_and_not_retried(fake: FakeComfyDeploy, sleeps: list[float]) -> None:
    with (
        ComfyDeployClient("wrong", base_url=fake.url, sleep=sleeps.append) as c,
        pytest.raises(ComfyDeployError) as info,
    ):
        c.machines()
    assert info.value.status_code == 401 and sleeps == []


# ------------------------------------------------------------------------------------------ the API key


def test_api_key_never_in_logs_reprs_or_exceptions(
    fake: FakeComfyDeploy, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    key = "cd-super-secret-key-XYZ"
    settings = Settings(data_dir=tmp_path, comfydeploy_api_key=key, comfydeploy_base_url=fake.url)
    assert key not in repr(settings)
    fake.api_key = key
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    echo = {"n": 0}

    def echoing(request: httpx.Request) -> httpx.Response:
        echo["n"] += 1
        return httpx.Response(500, text=f"bad header {request.headers['authorization']}")

    with ComfyDeployClient.from_settings(settings, sleep=lambda s: None) as c:
        assert key not in repr(c) and key not in str(vars(c).get("base_url"))
        fake.fail("status", 500, times=2)
        c.get_run(c.queue_run("dep-flux", {}))
        for call in (lambda: c.get_run("missing"), lambda: c.queue_run("nope", {})):
            try:
                call()
            except ComfyDeployError as exc:
                errors.append(exc)
    with ComfyDeployClient(key, sleep=lambda s: None, transport=httpx.MockTransport(echoing)) as c2:
        try:
            c2.machines()
        except ComfyDeployError as exc:
            errors.append(exc)
    assert len(errors) == 3 and echo["n"] == 4
    assert "***" in str(errors[-1])  # the echoed key was redacted
    for err in errors:
        assert key not in str(err) and key not in repr(err)
        assert key not in "".join(traceback.format_exception(err))
    assert caplog.records, "expected some log output"
    assert any("retry" in r.getMessage() for r in caplog.records)
    assert all(key not in r.getMessage() for r in caplog.records)


def test_missing_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ComfyDeployError, match="COMFY_DEPLOY_API_KEY"):
        ComfyDeployClient.from_settings(Settings(data_dir=tmp_path, comfydeploy_api_key=None))
    with pytest.raises(ComfyDeployError):
        ComfyDeployClient("  ")


def test_comfy_deploy_variables_keep_working(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SWARMSTATION_COMFYDEPLOY_API_KEY", raising=False)
    monkeypatch.delenv("SWARMSTATION_COMFYDEPLOY_BASE_URL", raising=False)
    monkeypatch.setenv("COMFY_DEPLOY_API_KEY", "cd-key-from-env")
    monkeypatch.setenv("COMFY_DEPLOY_BASE_URL", "http://127.0.0.1:9")
    settings = Settings(data_dir=tmp_path)
    assert reveal(settings.comfydeploy_api_key) == "cd-key-from-env"
    assert "cd-key-from-env" not in repr(settings)
    client = ComfyDeployClient.from_settings(settings)
    assert client.base_url == "http://127.0.0.1:9"
    client.close()


def test_download_sends_the_key_only_to_the_api_host() -> None:
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.host] = request.headers.get("authorization")
        return httpx.Response(200, content=b"x")

    with ComfyDeployClient("k", base_url="https://api.example", transport=httpx.MockTransport(handler)) as c:
        c.download("https://bucket.example/out.png")
        c.download("https://api.example/out.png")
    assert seen == {"bucket.example": None, "api.example": "Bearer k"}


# ----------------------------------------------------------------------------------- pure webhook helpers


def test_webhook_secret_verification() -> None:
    s = webhook_secret("job-1", KEY)
    assert verify_webhook_secret("job-1", s, KEY)
    assert not verify_webhook_secret("job-2", s, KEY)
    assert not verify_webhook_secret("job-1", s, b"other-key")
    assert not verify_webhook_secret("job-1", s[:-1] + ("0" if s[-1] != "0" else "1"), KEY)
    assert not verify_webhook_secret("job-1", "", KEY) and not verify_webhook_secret("job-1", None, KEY)
    q = parse_qs(urlparse(webhook_url("https://x/hook?a=1", "job-1", KEY)).query)
    assert q == {"a": ["1"], "job": ["job-1"], "secret": [s]}


@pytest.mark.parametrize(
    ("body", "status", "progress", "live"),
    [
        ({"run_id": "r", "status": "not-started"}, "queued", None, None),
        (
            {"run_id": "r", "status": "started", "progress": 0.25, "live_status": "KSampler"},
            "running",
            0.25,
            "KSampler",
        ),
        ({"id": "r", "status": "uploading", "progress": 90}, "running", 0.9, None),
        ({"runId": "r", "status": "running", "liveStatus": "x"}, "running", None, "x"),
        ({"event_type": "run.updated", "data": {"run_id": "r", "status": "success"}}, "success", 1.0, None),
        ({"run_id": "r", "status": "timeout"}, "failed", None, None),
        ({"run_id": "r", "status": "canceled"}, "cancelled", None, None),
    ],
)
def test_parse_webhook_shapes(
    body: dict[str, Any], status: str, progress: float | None, live: str | None
) -> None:
    u = parse_webhook(json.dumps(body).encode())
    assert (u.run_id, u.status, u.progress, u.live_status) == ("r", status, progress, live)


def test_parse_webhook_outputs_and_errors() -> None:
    u = parse_webhook(
        {
            "run_id": "r",
            "status": "success",
            "outputs": [
                {"data": {"images": [{"url": "https://f/a.png", "filename": "a.png", "type": "output"}]}},
                {"data": {"gifs": [{"url": "https://f/b.mp4", "filename": "b.mp4"}], "text": ["hi"]}},
                {"data": {"files": [{"url": "https://f/c.bin"}]}},
            ],
        }
    )
    assert [(o.name, o.type) for o in u.outputs] == [
        ("a.png", "image"),
        ("b.mp4", "video"),
        ("c.bin", "file"),
    ]
    failed = parse_webhook({"run_id": "r", "status": "failed", "error": {"message": "boom"}})
    assert failed.error == "boom"
    for bad in (
        b"not json",
        b"[]",
        {"status": "success"},
        {"run_id": "r"},
        {"run_id": "r", "status": "weird"},
    ):
        with pytest.raises(ValueError):
            parse_webhook(bad)


def test_newer_rules() -> None:
    q = RunUpdate("r", "queued")
    r1 = RunUpdate("r", "running", progress=0.3)
    r2 = RunUpdate("r", "running", progress=0.6)
    done = RunUpdate("r", "success", progress=1.0)
    failed = RunUpdate("r", "failed", error="x")
    assert newer(None, q) and newer(q, r1) and newer(r1, r2) and newer(r2, done) and newer(q, failed)
    assert not newer(r2, r1) and not newer(r1, q) and not newer(r1, r1)
    assert not newer(done, failed) and not newer(done, done) and not newer(failed, r2)
    # a terminal status is final even against a later-looking terminal update
    assert not newer(failed, RunUpdate("r", "cancelled", progress=0.5))
    assert not newer(RunUpdate("r", "success", progress=0.9), done)
    assert not newer(r1, RunUpdate("r", "running", progress=0.3, live_status="other"))
    with pytest.raises(ValueError):
        newer(q, RunUpdate("other", "queued"))


def _real_sequence(n_running: int, end: str) -> list[RunUpdate]:
    seq = [RunUpdate("r", "queued", progress=0.0)]
    seq += [RunUpdate("r", "running", progress=(i + 1) / (n_running + 1)) for i in range(n_running)]
    seq.append(RunUpdate("r", end, progress=1.0 if end == "success" else None))  # type: ignore[arg-type]
    return seq


@settings(max_examples=200, deadline=None)
@given(
    n_running=st.integers(0, 6),
    end=st.sampled_from(["success", "failed", "cancelled"]),
    data=st.data(),
)
def test_any_delivery_order_ends_at_the_latest_real_state(
    n_running: int, end: str, data: st.DataObject
) -> None:
    seq = _real_sequence(n_running, end)
    # deliveries: any subset that includes at least one state, each possibly duplicated, in any order
    indices = data.draw(st.lists(st.integers(0, len(seq) - 1), min_size=1, max_size=3 * len(seq)))
    order = data.draw(st.permutations(indices))
    state: RunUpdate | None = None
    for i in order:
        if newer(state, seq[i]):
            state = seq[i]
    assert state == seq[max(indices)]
