"""ComfyClient against the emulator, and against tiny fakes for the failure paths."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from swarmstation.comfy.client import (
    ComfyClient,
    ComfyError,
    ComfyExecutionError,
    ComfyTimeout,
    ComfyUnavailable,
    ComfyValidationError,
    OutputFile,
    ProgressEvent,
)
from swarmstation.comfy.emulator import EmulatorConfig, running_emulator
from tests.fake_models import fake_weights
from tests.helpers import async_test, txt2img


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "sd15.safetensors").write_bytes(fake_weights(b"dummy weights"))
    return tmp_path


@contextlib.asynccontextmanager
async def comfy(base_dir: Path, **config: Any) -> AsyncIterator[ComfyClient]:
    async with (
        running_emulator(EmulatorConfig(base_dir, **config)) as url,
        ComfyClient(url, timeout=5) as client,
    ):
        yield client


# ---------------------------------------------------------------- against the emulator


@async_test
async def test_run_reports_progress_and_returns_output_files(base_dir: Path) -> None:
    workflow = txt2img()
    workflow["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    seen: list[ProgressEvent] = []

    async def on_progress(event: ProgressEvent) -> None:
        seen.append(event)

    async with comfy(base_dir) as client:
        result = await client.run(workflow, on_progress=on_progress, prompt_id="job-1")
        assert result.prompt_id == "job-1"
        assert result.outputs == [OutputFile("9", "swarmstation_00001_.png", "", "output")]
        assert result.history["status"]["status_str"] == "success"
        assert result.history["outputs"]["10"]["images"][0]["type"] == "temp"  # kept in history only
        extra_data = result.history["prompt"][3]
        assert extra_data == {"client_id": client.client_id, "create_time": extra_data["create_time"]}
        assert isinstance(extra_data["create_time"], int)  # ComfyUI 0.8 stamps when it was queued
        png = Image.open(io.BytesIO(await client.download(result.outputs[0])))
        assert png.format == "PNG" and png.size == (64, 48)

    assert seen[0] == ProgressEvent("started", None)
    assert [e.node for e in seen if e.kind == "executing"][-2:] in (["9", "10"], ["10", "9"])
    assert [(e.node, e.value, e.max) for e in seen if e.kind == "progress"] == [
        ("3", 1, 3),
        ("3", 2, 3),
        ("3", 3, 3),
    ]


@async_test
async def test_cached_rerun_reports_cached_nodes(base_dir: Path) -> None:
    seen: list[ProgressEvent] = []

    async def on_progress(event: ProgressEvent) -> None:
        seen.append(event)

    async with comfy(base_dir) as client:
        first = await client.run(txt2img())
        second = await client.run(txt2img(), on_progress=on_progress)
    assert second.outputs == first.outputs
    assert sorted(e.node or "" for e in seen if e.kind == "cached") == ["3", "4", "5", "6", "7", "8", "9"]
    assert not [e for e in seen if e.kind == "executing"]


@async_test
async def test_validation_errors_are_mapped_with_a_readable_summary(base_dir: Path) -> None:
    async with comfy(base_dir) as client:
        with pytest.raises(ComfyValidationError) as caught:
            await client.run(txt2img("missing.safetensors"))
        assert str(caught.value) == (
            "node 4 (CheckpointLoaderSimple): Value not in list: "
            "ckpt_name: 'missing.safetensors' not in ['sd15.safetensors']"
        )
        assert caught.value.error["type"] == "prompt_outputs_failed_validation"
        assert caught.value.node_errors["4"]["errors"][0]["type"] == "value_not_in_list"

        broken = txt2img()
        broken["7"]["class_type"] = "NopeNode"
        with pytest.raises(
            ComfyValidationError, match=r"^Cannot execute because node NopeNode does not exist\.: "
        ):
            await client.run(broken)


@async_test
async def test_execution_error_is_mapped(base_dir: Path) -> None:
    (base_dir / "models" / "checkpoints" / "broken.safetensors").write_bytes(b"CORRUPT")
    async with comfy(base_dir) as client:
        with pytest.raises(ComfyExecutionError) as caught:
            await client.run(txt2img("broken.safetensors"))
    error = caught.value
    assert (error.node_id, error.node_type, error.interrupted) == ("4", "CheckpointLoaderSimple", False)
    assert error.exception_type == "safetensors._safetensors_rust.SafetensorError"
    assert error.message == "Error while deserializing header: header too small"
    assert "node 4 (CheckpointLoaderSimple)" in str(error)


@async_test
async def test_interrupt_from_a_progress_callback(base_dir: Path) -> None:
    async with comfy(base_dir, step_seconds=0.03) as client:

        async def on_progress(event: ProgressEvent) -> None:
            if event.kind == "progress" and event.value == 2:
                await client.interrupt("job-2")

        with pytest.raises(ComfyExecutionError) as caught:
            await client.run(txt2img(steps=50), on_progress=on_progress, prompt_id="job-2")
    assert caught.value.interrupted and caught.value.node_id == "3" and caught.value.node_type == "KSampler"


@async_test
async def test_timeout_leaves_the_prompt_to_the_caller(base_dir: Path) -> None:
    async with comfy(base_dir, step_seconds=0.03) as client:
        with pytest.raises(ComfyTimeout) as caught:
            await client.run(txt2img(steps=300), timeout=0.5)
        assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, ComfyError)
        prompt_id = caught.value.prompt_id
        await client.interrupt(prompt_id)
        entry = None
        for _ in range(250):
            entry = (await client._json("GET", f"/api/history/{prompt_id}")).get(prompt_id)
            if entry:
                break
            await asyncio.sleep(0.02)
        assert entry is not None, "the interrupted prompt never reached the history"
        assert entry["status"]["messages"][-1][0] == "execution_interrupted"


@async_test
async def test_upload_then_img2img(base_dir: Path) -> None:
    source = io.BytesIO()
    Image.new("RGB", (40, 24), (10, 200, 30)).save(source, format="PNG")
    other = io.BytesIO()
    Image.new("RGB", (40, 24), (200, 10, 30)).save(other, format="PNG")
    async with comfy(base_dir) as client:
        name = await client.upload_image("src.png", source.getvalue(), subfolder="up")
        assert name == "up/src.png"
        assert (
            await client.upload_image("src.png", other.getvalue(), subfolder="up", overwrite=False)
            == "up/src (1).png"
        )
        workflow = txt2img(latent=["11", 0], denoise=0.6)
        workflow["10"] = {"class_type": "LoadImage", "inputs": {"image": name}}
        workflow["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
        result = await client.run(workflow)
        image = Image.open(io.BytesIO(await client.download(result.outputs[0])))
    assert image.size == (40, 24)
    assert image.getpixel((0, 0)) != (10, 200, 30)  # sampled, but blended with the source


@async_test
async def test_concurrent_runs_on_one_client(base_dir: Path) -> None:
    async with comfy(base_dir, step_seconds=0.01) as client:
        a, b = await asyncio.gather(
            client.run(txt2img(seed=1, prefix="a")), client.run(txt2img(seed=2, prefix="b"))
        )
    assert a.outputs[0].filename == "a_00001_.png" and b.outputs[0].filename == "b_00001_.png"


@async_test
async def test_listing_stats_and_readiness(base_dir: Path) -> None:
    async with comfy(base_dir) as client:
        await client.wait_until_ready(2)
        assert await client.list_models("checkpoints") == ["sd15.safetensors"]
        with pytest.raises(ComfyError):
            await client.list_models("nope")
        assert (await client.system_stats())["devices"][0]["type"] == "cpu"


# ---------------------------------------------------------------- failure paths with fakes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@async_test
async def test_unreachable_server_is_unavailable() -> None:
    async with ComfyClient(f"http://127.0.0.1:{free_port()}", timeout=1) as client:
        with pytest.raises(ComfyUnavailable):
            await client.system_stats()
        with pytest.raises(ComfyUnavailable):
            await client.run(txt2img())
        with pytest.raises(ComfyUnavailable, match="not ready after"):
            await client.wait_until_ready(0.3)


HISTORY_ENTRY: dict[str, Any] = {
    "prompt": [0, "fake-1", {}, {"client_id": "x"}, ["9"]],
    "outputs": {
        "9": {"images": [{"filename": "out_00001_.png", "subfolder": "s", "type": "output"}]},
        "10": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}]},
        "11": {
            "gifs": [
                {"filename": "clip_00001.mp4", "subfolder": "", "type": "output", "format": "video/h264-mp4"}
            ],
            "text": ["hello"],
        },
    },
    "status": {"status_str": "success", "completed": True, "messages": []},
    "meta": {},
}


@contextlib.asynccontextmanager
async def fake_comfy(ws_mode: str, prompt_status: int = 200) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A ComfyUI stand-in whose socket misbehaves; history appears on the third poll."""
    state: dict[str, Any] = {"history_calls": 0, "origin": "unset", "client_ids": []}

    async def ws_handler(request: web.Request) -> web.StreamResponse:
        state["origin"] = request.headers.get("Origin")
        state["client_ids"].append(request.query.get("clientId"))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}})
        if ws_mode == "close":
            await ws.close()
        elif ws_mode == "noisy":
            await asyncio.sleep(0.05)  # the prompt is queued by now
            await ws.send_bytes(b"\x00\x00\x00\x01\x00\x00\x00\x02not-a-png")
            other = {
                "prompt_id": "someone-else",
                "node_id": "1",
                "node_type": "X",
                "exception_message": "boom",
            }
            await ws.send_json({"type": "execution_error", "data": other})
            await ws.send_json({"type": "executing", "data": {"node": None, "prompt_id": "someone-else"}})
            await ws.send_json({"type": "executing", "data": {"node": "9", "prompt_id": "fake-1"}})
            state["history_calls"] = 2  # the entry exists once the final message is sent
            await ws.send_json({"type": "executing", "data": {"node": None, "prompt_id": "fake-1"}})
        async for _ in ws:  # "silent" and "noisy": keep the socket open
            pass
        return ws

    async def post_prompt(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        state["prompt_client_id"] = body.get("client_id")
        if prompt_status != 200:
            return web.Response(
                status=prompt_status, text="500 Internal Server Error\n\nServer got itself in trouble"
            )
        return web.json_response({"prompt_id": "fake-1", "number": 0, "node_errors": {}})

    async def history(request: web.Request) -> web.StreamResponse:
        state["history_calls"] += 1
        found = state["history_calls"] >= 3 and request.match_info["prompt_id"] == "fake-1"
        return web.json_response({"fake-1": HISTORY_ENTRY} if found else {})

    app = web.Application()
    if ws_mode != "missing":
        app.router.add_get("/api/ws", ws_handler)
    app.router.add_post("/api/prompt", post_prompt)
    app.router.add_get("/api/history/{prompt_id}", history)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", state
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("ws_mode", ["close", "missing", "silent", "noisy"])
@async_test
async def test_socket_trouble_falls_back_to_history(ws_mode: str) -> None:
    async with fake_comfy(ws_mode) as (url, state), ComfyClient(url, timeout=2, client_id="me") as client:
        client.fallback_poll_interval = 0.01
        client.history_poll_interval = 0.05
        result = await asyncio.wait_for(client.run({"9": {"class_type": "SaveImage", "inputs": {}}}), 5)
    assert result.prompt_id == "fake-1"
    assert result.outputs == [
        OutputFile("9", "out_00001_.png", "s", "output"),
        OutputFile("11", "clip_00001.mp4", "", "output"),
    ]
    assert result.history["outputs"]["11"]["text"] == ["hello"]
    assert state["history_calls"] >= 3
    assert state["prompt_client_id"] == "me"
    if ws_mode != "missing":
        assert state["origin"] is None and state["client_ids"] == ["me"]


@async_test
async def test_server_error_on_prompt_is_unavailable() -> None:
    async with fake_comfy("silent", prompt_status=500) as (url, _), ComfyClient(url, timeout=2) as client:
        with pytest.raises(ComfyUnavailable, match="HTTP 500"):
            await client.run({"9": {"class_type": "SaveImage", "inputs": {}}})
