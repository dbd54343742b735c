"""Where a side-by-side run against real ComfyUI (0.8) showed the emulator behaving differently:
safetensors headers are checked on load, independent branches run in ComfyUI's order,
``execution_error.current_outputs`` lists every node, ``extra_data`` carries ``create_time``, and
the version the emulator reports is the one the bootstrap and the Dockerfile install."""

from __future__ import annotations

import itertools
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from swarmstation.comfy.emulator import COMFYUI_VERSION, EmulatorConfig, running_emulator
from swarmstation.comfy.emulator.nodes import SafetensorError, check_safetensors, minimal_safetensors
from swarmstation.providers import bootstrap
from tests.comfy.test_emulator import async_test, poll_history, queue, recv, txt2img, until_done, ws_url
from tests.fake_models import fake_weights

REPO = Path(__file__).resolve().parents[2]


def safetensors_file(header: Any, data: bytes = b"", *, length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return (len(raw) if length is None else length).to_bytes(8, "little") + raw + data


TENSOR = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
INCOMPLETE = "incomplete metadata, file not fully covered"


# ---------------------------------------------------------------- the safetensors header


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(b"CORRUPT", "header too small", id="shorter-than-the-length-field"),
        pytest.param(b"not a safetensors file", "header too large", id="text-file"),
        pytest.param(b"CORRUPT!", "header too large", id="old-emulator-marker"),
        pytest.param(safetensors_file(TENSOR, b"\0" * 8, length=500), "invalid header length", id="past-end"),
        pytest.param(safetensors_file(b"\xff\xfe{}"), "invalid UTF-8 in header", id="not-utf8"),
        pytest.param(safetensors_file(b"{not json"), "invalid JSON in header", id="not-json"),
        pytest.param(safetensors_file([1, 2]), "invalid JSON in header", id="not-a-map"),
        pytest.param(
            safetensors_file({"w": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
            "invalid JSON in header",
            id="unknown-dtype",
        ),
        pytest.param(
            safetensors_file({"w": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12),
            "invalid offset for tensor `w`",
            id="gap-before-first-tensor",
        ),
        pytest.param(
            safetensors_file({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
            "invalid shape, data type, or offset for tensor",
            id="shape-does-not-match-offsets",
        ),
        pytest.param(safetensors_file(TENSOR, b"\0" * 4), INCOMPLETE, id="short"),
        pytest.param(safetensors_file(TENSOR, b"\0" * 9), INCOMPLETE, id="trailing-bytes"),
    ],
)
def test_invalid_safetensors_are_refused_with_safetensors_messages(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(SafetensorError) as caught:
        check_safetensors(str(path))
    assert str(caught.value).startswith(f"Error while deserializing header: {reason}")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(minimal_safetensors(), id="empty-tensor"),
        pytest.param(minimal_safetensors(b"abc", {"ss_output_name": "x"}), id="with-metadata"),
        pytest.param(
            safetensors_file(
                {
                    "__metadata__": {"format": "pt"},
                    "b": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [8, 16]},
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                },
                b"\0" * 16,
            ),
            id="two-tensors-out-of-name-order",
        ),
    ],
)
def test_valid_safetensors_pass(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ok.safetensors"
    path.write_bytes(content)
    check_safetensors(str(path))


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "sd15.safetensors").write_bytes(fake_weights(b"sd15"))
    return tmp_path


async def run_events(
    base: str, http: httpx.AsyncClient, graph: dict[str, Any], client_id: str = "c"
) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    async with websockets.connect(ws_url(base, client_id)) as ws:
        await recv(ws)
        pid = (await queue(http, graph, client_id=client_id))["prompt_id"]
        events = [(t, d) for t, d in await until_done(ws, pid) if t not in ("progress_state", "status")]
    return pid, events


@async_test
async def test_a_checkpoint_that_is_not_safetensors_fails_like_comfyui(base_dir: Path) -> None:
    # Enough bytes for a header length, so the old b"CORRUPT!" check let it through as a model.
    (base_dir / "models" / "checkpoints" / "fake.safetensors").write_bytes(b"fake weights, not safetensors")
    async with running_emulator(EmulatorConfig(base_dir)) as base, httpx.AsyncClient(base_url=base) as http:
        pid, events = await run_events(base, http, txt2img("fake.safetensors"))
        kinds = [t for t, _ in events]
        assert kinds == ["execution_start", "execution_cached", "executing", "execution_error", "executing"]
        error = events[3][1]
        assert set(error) == {
            "prompt_id",
            "node_id",
            "node_type",
            "executed",
            "exception_message",
            "exception_type",
            "traceback",
            "current_inputs",
            "current_outputs",
            "timestamp",
        }
        assert (error["node_id"], error["node_type"]) == ("4", "CheckpointLoaderSimple")
        assert error["executed"] == []
        assert error["exception_type"] == "safetensors._safetensors_rust.SafetensorError"
        assert error["exception_message"] == "Error while deserializing header: header too large\n"
        assert error["current_inputs"] == {"ckpt_name": ["fake.safetensors"]}
        entry = await poll_history(http, pid)
        assert entry["status"]["status_str"] == "error"

        # A valid (tiny) safetensors file under the same name loads.
        (base_dir / "models" / "checkpoints" / "fake.safetensors").write_bytes(minimal_safetensors(b"ok"))
        entry = await poll_history(http, (await queue(http, txt2img("fake.safetensors")))["prompt_id"])
        assert entry["status"]["status_str"] == "success"


# ---------------------------------------------------------------- execution order


def invert_chain(first: int, length: int, prefix: str) -> dict[str, Any]:
    """EmptyImage -> ImageInvert x (length - 2) -> SaveImage, with ids first, first+1, ... (the
    colour differs per chain: identical nodes would share one cache entry, as in ComfyUI)."""
    ids = [str(first + i) for i in range(length)]
    empty = {"width": 8, "height": 8, "batch_size": 1, "color": first}
    graph: dict[str, Any] = {ids[0]: {"class_type": "EmptyImage", "inputs": empty}}
    for previous, node_id in itertools.pairwise(ids[:-1]):
        graph[node_id] = {"class_type": "ImageInvert", "inputs": {"image": [previous, 0]}}
    save = {"images": [ids[-2], 0], "filename_prefix": prefix}
    graph[ids[-1]] = {"class_type": "SaveImage", "inputs": save}
    return graph


@async_test
async def test_independent_branches_run_in_comfyui_order(base_dir: Path) -> None:
    # Outputs are staged depth-first; a ready node that feeds an output goes first, so the short
    # branch 4 -> 5 runs before 1 -> 2 -> 3 although its ids come later.
    graph = {**invert_chain(1, 3, "long"), **invert_chain(4, 2, "short")}
    async with running_emulator(EmulatorConfig(base_dir)) as base, httpx.AsyncClient(base_url=base) as http:
        _, events = await run_events(base, http, graph)
        executing = [d["node"] for t, d in events if t == "executing" and d["node"] is not None]
        assert executing == ["4", "5", "1", "2", "3"]


@async_test
async def test_a_failure_leaves_cached_what_comfyui_would_have_run(base_dir: Path) -> None:
    # A txt2img branch whose checkpoint is broken, beside an image branch that feeds no output
    # within two links: ComfyUI picks the loader first (it is two links from SaveImage 9), so it
    # fails before the image branch ran, and a re-run finds nothing of it cached.
    (base_dir / "models" / "checkpoints" / "broken.safetensors").write_bytes(b"CORRUPT")
    graph = {**txt2img("broken.safetensors"), **invert_chain(10, 5, "image")}
    async with running_emulator(EmulatorConfig(base_dir)) as base, httpx.AsyncClient(base_url=base) as http:
        _, events = await run_events(base, http, graph)
        error = next(d for t, d in events if t == "execution_error")
        assert (error["node_id"], error["executed"]) == ("4", [])
        # ComfyUI reports its output cache's node ids: every node of the prompt.
        assert sorted(error["current_outputs"]) == sorted(graph)

        (base_dir / "models" / "checkpoints" / "broken.safetensors").write_bytes(fake_weights(b"fixed"))
        _, events = await run_events(base, http, graph)
        assert next(d for t, d in events if t == "execution_cached")["nodes"] == []
        assert [t for t, _ in events][-2:] == ["execution_success", "executing"]

        # Everything ran now, so a third run is fully cached.
        _, events = await run_events(base, http, graph)
        assert sorted(next(d for t, d in events if t == "execution_cached")["nodes"]) == sorted(graph)


# ---------------------------------------------------------------- extra_data


@async_test
async def test_queue_and_history_entries_carry_create_time_and_no_api_keys(base_dir: Path) -> None:
    async with (
        running_emulator(EmulatorConfig(base_dir, step_seconds=0.2)) as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        before = int(time.time() * 1000)
        secret = {"api_key_comfy_org": "comfyui-secret", "auth_token_comfy_org": "t"}
        first = (await queue(http, txt2img(steps=3), extra_data=dict(secret)))["prompt_id"]
        pnginfo = {"extra_pnginfo": {"a": 1}}
        second = (await queue(http, txt2img(seed=7, steps=1), extra_data=pnginfo))["prompt_id"]
        after = int(time.time() * 1000)
        listed = (await http.get("/api/queue")).json()
        items = {item[1]: item for item in listed["queue_running"] + listed["queue_pending"]}
        assert set(items) == {first, second}
        assert "comfyui-secret" not in json.dumps(listed)
        for item in items.values():
            assert len(item) == 5
            assert isinstance(item[3]["create_time"], int) and before <= item[3]["create_time"] <= after
        assert items[second][3] == {"extra_pnginfo": {"a": 1}, "create_time": items[second][3]["create_time"]}

        entry = await poll_history(http, second)
        assert entry["prompt"][3] == items[second][3]
        first_entry = await poll_history(http, first)
        assert first_entry["prompt"][3] == {"create_time": items[first][3]["create_time"]}


# ---------------------------------------------------------------- the version


@async_test
async def test_reported_version_is_the_installed_comfyui_release(base_dir: Path) -> None:
    assert re.fullmatch(r"0\.8\.\d+", COMFYUI_VERSION)
    async with running_emulator(EmulatorConfig(base_dir)) as base, httpx.AsyncClient(base_url=base) as http:
        stats = (await http.get("/api/system_stats")).json()
    assert stats["system"]["comfyui_version"] == COMFYUI_VERSION
    assert f"v{COMFYUI_VERSION}" == bootstrap.COMFYUI_REF
    assert f"COMFY_REF=v{COMFYUI_VERSION}\n" in bootstrap.render_onstart()
    dockerfile = (REPO / "deploy" / "worker.Dockerfile").read_text()
    assert re.findall(r"^ARG COMFYUI_REF=(\S+)$", dockerfile, re.M) == [f"v{COMFYUI_VERSION}"]
