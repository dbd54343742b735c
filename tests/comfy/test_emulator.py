"""The ComfyUI emulator over real HTTP and WebSocket, driven with raw httpx and websockets."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from PIL import Image

from swarmstation.comfy.emulator import EmulatorConfig, running_emulator
from swarmstation.comfy.emulator.nodes import NODE_CLASSES, render_image
from tests.fake_models import fake_weights
from tests.helpers import async_test, txt2img

#: ComfyUI's own §1.2 example: no models needed.
IMAGE_GRAPH: dict[str, Any] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 32, "batch_size": 2, "color": 0x102030},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t/run"}},
    "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
}


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "sd15.safetensors").write_bytes(fake_weights(b"dummy weights"))
    return tmp_path


async def recv(ws: Any, timeout: float = 5.0) -> dict[str, Any]:
    """Next JSON message, skipping binary frames."""
    while True:
        raw = await asyncio.wait_for(ws.recv(), timeout)
        if isinstance(raw, str):
            message: dict[str, Any] = json.loads(raw)
            return message


async def until_done(ws: Any, prompt_id: str, timeout: float = 10.0) -> list[tuple[str, dict[str, Any]]]:
    """All messages up to and including ``executing {node: null}`` for ``prompt_id``."""
    seen = []
    while True:
        message = await recv(ws, timeout)
        seen.append((message["type"], message["data"]))
        data = message["data"]
        if message["type"] == "executing" and data["node"] is None and data.get("prompt_id") == prompt_id:
            return seen


async def drain(ws: Any, quiet: float = 0.2) -> list[tuple[str, dict[str, Any]]]:
    seen = []
    with_timeout = True
    while with_timeout:
        try:
            message = await recv(ws, quiet)
        except TimeoutError:
            with_timeout = False
        else:
            seen.append((message["type"], message["data"]))
    return seen


def ws_url(base: str, client_id: str | None = None) -> str:
    url = base.replace("http://", "ws://") + "/api/ws"
    return url + (f"?clientId={client_id}" if client_id else "")


async def queue(http: httpx.AsyncClient, prompt: dict[str, Any], **extra: Any) -> dict[str, Any]:
    response = await http.post("/api/prompt", json={"prompt": prompt, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# ---------------------------------------------------------------- a successful run


@async_test
async def test_txt2img_events_history_and_png(base_dir: Path) -> None:
    async with (
        running_emulator(EmulatorConfig(base_dir)) as base,
        httpx.AsyncClient(base_url=base) as http,
        websockets.connect(ws_url(base, "owner")) as owner,
        websockets.connect(ws_url(base, "bystander")) as bystander,
    ):
        hello = await recv(owner)
        assert hello == {
            "type": "status",
            "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "owner"},
        }
        await recv(bystander)
        reply = await queue(http, txt2img(steps=3), client_id="owner")
        assert reply["number"] == 0 and reply["node_errors"] == {}
        events = [(t, d) for t, d in await until_done(owner, reply["prompt_id"]) if t != "progress_state"]

        pid = reply["prompt_id"]
        kinds = [t for t, _ in events]
        assert kinds[:4] == ["status", "status", "execution_start", "execution_cached"]
        assert kinds[-4:] == ["executed", "execution_success", "status", "executing"]
        assert events[3][1]["nodes"] == []
        assert events[-2][1] == {"status": {"exec_info": {"queue_remaining": 0}}}
        assert events[-1][1] == {"node": None, "prompt_id": pid}
        executing = [d["node"] for t, d in events[:-1] if t == "executing"]
        assert sorted(executing) == ["3", "4", "5", "6", "7", "8", "9"]
        assert executing.index("4") < executing.index("6") < executing.index("3") < executing.index("8")
        assert executing[-1] == "9"
        progress = [d for t, d in events if t == "progress"]
        assert progress == [{"value": v, "max": 3, "prompt_id": pid, "node": "3"} for v in (1, 2, 3)]
        image = {"filename": "swarmstation_00001_.png", "subfolder": "", "type": "output"}
        assert events[-4][1] == {
            "node": "9",
            "display_node": "9",
            "output": {"images": [image]},
            "prompt_id": pid,
        }

        # The bystander sees queue status broadcasts only.
        assert {t for t, _ in await drain(bystander)} == {"status"}

        history = (await http.get(f"/api/history/{pid}")).json()
        entry = history[pid]
        assert set(entry) == {"prompt", "outputs", "status", "meta"}
        assert entry["prompt"][:2] == [0, pid]
        assert entry["prompt"][3] == {"client_id": "owner", "create_time": entry["prompt"][3]["create_time"]}
        assert entry["prompt"][4] == ["9"]
        assert entry["outputs"] == {"9": {"images": [image]}}
        assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
        assert [m[0] for m in entry["status"]["messages"]] == [
            "execution_start",
            "execution_cached",
            "execution_success",
        ]
        assert entry["meta"] == {
            "9": {"node_id": "9", "display_node": "9", "parent_node": None, "real_node_id": "9"}
        }

        view = await http.get(
            "/api/view", params={"filename": image["filename"], "type": "output", "subfolder": ""}
        )
        assert view.status_code == 200
        assert view.headers["content-type"] == "image/png"
        assert view.headers["content-disposition"] == 'filename="swarmstation_00001_.png"'
        png = Image.open(io.BytesIO(view.content))
        assert png.format == "PNG" and png.size == (64, 48)
        assert json.loads(png.info["prompt"])["3"]["class_type"] == "KSampler"
        assert (base_dir / "output" / "swarmstation_00001_.png").read_bytes() == view.content


@async_test
async def test_identical_rerun_is_served_from_cache(base_dir: Path) -> None:
    async with (
        running_emulator(EmulatorConfig(base_dir)) as base,
        httpx.AsyncClient(base_url=base) as http,
        websockets.connect(ws_url(base, "c")) as ws,
    ):
        first = await queue(http, txt2img(), client_id="c")
        await until_done(ws, first["prompt_id"])
        second = await queue(http, txt2img(), client_id="c")
        events = await until_done(ws, second["prompt_id"])
        cached = next(d for t, d in events if t == "execution_cached")
        assert sorted(cached["nodes"]) == ["3", "4", "5", "6", "7", "8", "9"]
        assert [d["node"] for t, d in events if t == "executing"] == [None]
        history = (await http.get(f"/history/{second['prompt_id']}")).json()[second["prompt_id"]]
        assert history["outputs"]["9"]["images"][0]["filename"] == "swarmstation_00001_.png"

        third = await queue(http, txt2img(seed=7), client_id="c")
        events = await until_done(ws, third["prompt_id"])
        assert sorted(next(d for t, d in events if t == "execution_cached")["nodes"]) == ["4", "5", "6", "7"]
        history = (await http.get(f"/history/{third['prompt_id']}")).json()[third["prompt_id"]]
        assert history["outputs"]["9"]["images"][0]["filename"] == "swarmstation_00002_.png"

        assert (
            await http.post("/api/free", json={"unload_models": True, "free_memory": True})
        ).status_code == 200
        await asyncio.sleep(0.05)
        fourth = await queue(http, txt2img(seed=7), client_id="c")
        events = await until_done(ws, fourth["prompt_id"])
        assert next(d for t, d in events if t == "execution_cached")["nodes"] == []


@async_test
async def test_flux_style_graph_with_split_loaders(base_dir: Path) -> None:
    models = base_dir / "models"
    for folder, name in [
        ("unet", "flux1-dev.safetensors"),
        ("clip", "t5xxl.safetensors"),
        ("text_encoders", "clip_l.safetensors"),
        ("vae", "ae.safetensors"),
        ("loras", "style.safetensors"),
    ]:
        (models / folder).mkdir(parents=True, exist_ok=True)
        (models / folder / name).write_bytes(fake_weights())
    graph: dict[str, Any] = {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"},
        },
        "2": {
            "class_type": "DualCLIPLoader",
            "inputs": {"clip_name1": "t5xxl.safetensors", "clip_name2": "clip_l.safetensors", "type": "flux"},
        },
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {
            "class_type": "LoraLoaderModelOnly",
            "inputs": {"model": ["1", 0], "lora_name": "style.safetensors", "strength_model": 0.7},
        },
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "a misty forest", "clip": ["2", 0]}},
        "6": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["5", 0], "guidance": 3.5}},
        "7": {
            "class_type": "CLIPLoader",
            "inputs": {"clip_name": "clip_l.safetensors", "type": "stable_diffusion"},
        },
        "8": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["7", 0]}},
        "9": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 96, "height": 64, "batch_size": 2}},
        "10": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["4", 0],
                "seed": 5,
                "steps": 2,
                "cfg": 1.0,
                "sampler_name": "euler",
                "scheduler": "simple",
                "positive": ["6", 0],
                "negative": ["8", 0],
                "latent_image": ["9", 0],
                "denoise": 1.0,
            },
        },
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["3", 0]}},
        "12": {
            "class_type": "SaveImage",
            "inputs": {"images": ["11", 0], "filename_prefix": "flux/%width%x%height%"},
        },
    }
    async with running_emulator(EmulatorConfig(base_dir)) as base, httpx.AsyncClient(base_url=base) as http:
        entry = await poll_history(http, (await queue(http, graph))["prompt_id"])
        assert entry["status"]["status_str"] == "success", entry["status"]
        files = entry["outputs"]["12"]["images"]
        assert [(f["subfolder"], f["filename"]) for f in files] == [
            ("flux", "96x64_00001_.png"),
            ("flux", "96x64_00002_.png"),
        ]
        first, second = [
            Image.open(io.BytesIO((await http.get("/api/view", params=f)).content)) for f in files
        ]
        assert first.size == second.size == (96, 64)
        assert first.tobytes() != second.tobytes()  # each batch item gets its own seed


def test_render_image_is_deterministic_per_seed_and_text() -> None:
    a = render_image(1, "cat", 32, 16)
    assert a.size == (32, 16)
    assert a.tobytes() == render_image(1, "cat", 32, 16).tobytes()
    assert a.tobytes() != render_image(2, "cat", 32, 16).tobytes()
    assert a.tobytes() != render_image(1, "dog", 32, 16).tobytes()


@async_test
async def test_image_graph_save_counter_subfolder_and_preview(base_dir: Path) -> None:
    (base_dir / "output" / "t").mkdir(parents=True)
    (base_dir / "output" / "t" / "run_00007_.png").write_bytes(b"older file")
    async with running_emulator(EmulatorConfig(base_dir)) as base, httpx.AsyncClient(base_url=base) as http:
        pid = (await queue(http, IMAGE_GRAPH))["prompt_id"]
        entry = await poll_history(http, pid)
        saved = entry["outputs"]["3"]["images"]
        assert saved == [
            {"filename": "run_00008_.png", "subfolder": "t", "type": "output"},
            {"filename": "run_00009_.png", "subfolder": "t", "type": "output"},
        ]
        preview = entry["outputs"]["4"]["images"]
        assert len(preview) == 2 and preview[0]["type"] == "temp" and preview[0]["subfolder"] == ""
        assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", preview[0]["filename"])
        inverted = Image.open(io.BytesIO((await http.get("/view", params=saved[0])).content))
        assert inverted.size == (64, 32) and inverted.getpixel((3, 3)) == (0xEF, 0xDF, 0xCF)
        temp = await http.get("/view", params=preview[0])
        assert Image.open(io.BytesIO(temp.content)).getpixel((0, 0)) == (0x10, 0x20, 0x30)


async def poll_history(http: httpx.AsyncClient, prompt_id: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = (await http.get(f"/api/history/{prompt_id}")).json()
        if prompt_id in body:
            entry: dict[str, Any] = body[prompt_id]
            return entry
        await asyncio.sleep(0.02)
    raise AssertionError(f"no history for {prompt_id}")


@pytest.mark.parametrize(
    ("extra_nodes", "expected_size"),
    [
        pytest.param(
            {
                "10": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x-Test.pth"}},
                "11": {
                    "class_type": "ImageUpscaleWithModel",
                    "inputs": {"upscale_model": ["10", 0], "image": ["1", 0]},
                },
            },
            (32, 16),
            id="upscale-model-x4",
        ),
        pytest.param(
            {
                "11": {
                    "class_type": "ImageScaleBy",
                    "inputs": {"image": ["1", 0], "upscale_method": "area", "scale_by": 0.5},
                }
            },
            (4, 2),
            id="scale-by-half",
        ),
        pytest.param(
            {
                "11": {
                    "class_type": "ImageScale",
                    "inputs": {
                        "image": ["1", 0],
                        "upscale_method": "lanczos",
                        "width": 0,
                        "height": 20,
                        "crop": "disabled",
                    },
                }
            },
            (40, 20),
            id="scale-keeps-aspect-when-width-is-0",
        ),
    ],
)
@async_test
async def test_image_nodes_resize_real_pixels(
    base_dir: Path, extra_nodes: dict[str, Any], expected_size: tuple[int, int]
) -> None:
    (base_dir / "models" / "upscale_models").mkdir(parents=True)
    (base_dir / "models" / "upscale_models" / "4x-Test.pth").write_bytes(b"esrgan")
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 1, "color": 255}},
        **extra_nodes,
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "scaled"}},
    }
    async with running_emulator(EmulatorConfig(base_dir)) as base, httpx.AsyncClient(base_url=base) as http:
        entry = await poll_history(http, (await queue(http, graph))["prompt_id"])
        assert entry["status"]["status_str"] == "success", entry["status"]
        file = entry["outputs"]["12"]["images"][0]
        assert (
            Image.open(io.BytesIO((await http.get("/api/view", params=file)).content)).size == expected_size
        )


# ---------------------------------------------------------------- validation


def lora_graph(lora_name: str) -> dict[str, Any]:
    graph = txt2img()
    graph["2"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["4", 0],
            "clip": ["4", 1],
            "lora_name": lora_name,
            "strength_model": 0.8,
            "strength_clip": 1.0,
        },
    }
    graph["3"]["inputs"]["model"] = ["2", 0]
    graph["6"]["inputs"]["clip"] = ["2", 1]
    return graph


@async_test
async def test_missing_model_is_value_not_in_list_with_exact_details(base_dir: Path) -> None:
    loras = base_dir / "models" / "loras" / "sub"
    loras.mkdir(parents=True)
    (loras / "mylora.safetensors").write_bytes(fake_weights(b"lora"))
    (loras / "readme.txt").write_text("not a model")
    async with running_emulator(EmulatorConfig(base_dir)) as base, httpx.AsyncClient(base_url=base) as http:
        response = await http.post("/api/prompt", json={"prompt": lora_graph("missing.safetensors")})
        assert response.status_code == 400
        assert response.json() == {
            "error": {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": "",
                "extra_info": {},
            },
            "node_errors": {
                "2": {
                    "errors": [
                        {
                            "type": "value_not_in_list",
                            "message": "Value not in list",
                            "details": "lora_name: 'missing.safetensors' not in ['sub/mylora.safetensors']",
                            "extra_info": {
                                "input_name": "lora_name",
                                "input_config": [
                                    ["sub/mylora.safetensors"],
                                    {"tooltip": "The name of the LoRA."},
                                ],
                                "received_value": "missing.safetensors",
                            },
                        }
                    ],
                    "dependent_outputs": ["9"],
                    "class_type": "LoraLoader",
                }
            },
        }

        # A file that appears later is seen by the next validation.
        (loras.parent / "missing.safetensors").write_bytes(fake_weights(b"lora"))
        assert (
            await http.post("/api/prompt", json={"prompt": lora_graph("missing.safetensors")})
        ).status_code == 200

        for i in range(20):
            (base_dir / "models" / "checkpoints" / f"extra{i:02}.ckpt").write_bytes(b"x")
        body = (await http.post("/api/prompt", json={"prompt": txt2img("nope.safetensors")})).json()
        error = body["node_errors"]["4"]["errors"][0]
        assert error["details"] == "ckpt_name: 'nope.safetensors' not in (list of length 21)"
        assert error["extra_info"]["input_config"] is None


@pytest.mark.parametrize(
    ("mutate", "node", "error"),
    [
        pytest.param(
            lambda g: g["5"]["inputs"].update(height="abc"),
            "5",
            {
                "type": "invalid_input_type",
                "message": "Failed to convert an input value to a INT value",
                "details": "height, abc, invalid literal for int() with base 10: 'abc'",
            },
            id="int-conversion",
        ),
        pytest.param(
            lambda g: g["5"]["inputs"].update(width=0),
            "5",
            {
                "type": "value_smaller_than_min",
                "message": "Value 0 smaller than min of 16",
                "details": "width",
            },
            id="min",
        ),
        pytest.param(
            lambda g: g["3"]["inputs"].update(denoise=1.5),
            "3",
            {
                "type": "value_bigger_than_max",
                "message": "Value 1.5 bigger than max of 1.0",
                "details": "denoise",
            },
            id="max",
        ),
        pytest.param(
            lambda g: g["3"]["inputs"].update(sampler_name="euler_z"),
            "3",
            {
                "type": "value_not_in_list",
                "message": "Value not in list",
                "details": "sampler_name: 'euler_z' not in (list of length 42)",
            },
            id="sampler-combo",
        ),
        pytest.param(
            lambda g: g["3"]["inputs"].pop("steps"),
            "3",
            {"type": "required_input_missing", "message": "Required input is missing", "details": "steps"},
            id="required-missing",
        ),
        pytest.param(
            lambda g: g["8"]["inputs"].update(samples=["99", 0]),
            "8",
            {
                "type": "exception_during_inner_validation",
                "message": "Exception when validating inner node",
                "details": "'99'",
            },
            id="upstream-link-to-missing-node",
        ),
        pytest.param(
            lambda g: g["9"]["inputs"].update(images=["99", 0]),
            "9",
            {
                "type": "exception_during_validation",
                "message": "Exception when validating node",
                "details": "'99'",
            },
            id="output-link-to-missing-node",
        ),
        pytest.param(
            lambda g: g["8"]["inputs"].update(samples=["4", 0]),
            "8",
            {
                "type": "return_type_mismatch",
                "message": "Return type mismatch between linked nodes",
                "details": "samples, received_type(MODEL) mismatch input_type(LATENT)",
            },
            id="type-mismatch",
        ),
    ],
)
@async_test
async def test_input_errors(
    base_dir: Path, mutate: Callable[[dict[str, Any]], Any], node: str, error: dict[str, str]
) -> None:
    graph = txt2img()
    mutate(graph)
    async with running_emulator(EmulatorConfig(base_dir)) as base, httpx.AsyncClient(base_url=base) as http:
        response = await http.post("/api/prompt", json={"prompt": graph})
        assert response.status_code == 400
        body = response.json()
        assert body["error"]["type"] == "prompt_outputs_failed_validation"
        assert list(body["node_errors"]) == [node]
        got = body["node_errors"][node]["errors"][0]
        assert {k: got[k] for k in error} == error
        assert body["node_errors"][node]["dependent_outputs"] == ["9"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        pytest.param(
            {"prompt": {"1": {"inputs": {}}}},
            {
                "type": "invalid_prompt",
                "message": "Cannot execute because a node is missing the class_type property.",
                "details": "Node ID '#1'",
                "extra_info": {},
            },
            id="missing-class-type",
        ),
        pytest.param(
            {"prompt": {**IMAGE_GRAPH, "2": {"class_type": "NopeNode", "inputs": {}}}},
            {
                "type": "invalid_prompt",
                "message": "Cannot execute because node NopeNode does not exist.",
                "details": "Node ID '#2'",
                "extra_info": {},
            },
            id="unknown-class",
        ),
        pytest.param(
            {"prompt": {"1": IMAGE_GRAPH["1"]}},
            {
                "type": "prompt_no_outputs",
                "message": "Prompt has no outputs",
                "details": "",
                "extra_info": {},
            },
            id="no-outputs",
        ),
        pytest.param(
            {"client_id": "x"},
            {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            },
            id="no-prompt",
        ),
    ],
)
@async_test
async def test_prompt_level_errors(base_dir: Path, body: dict[str, Any], error: dict[str, Any]) -> None:
    async with running_emulator(EmulatorConfig(base_dir)) as base, httpx.AsyncClient(base_url=base) as http:
        response = await http.post("/prompt", json=body)
        assert response.status_code == 400
        assert response.json() == {"error": error, "node_errors": {}}


@async_test
async def test_counter_increments_before_validation_and_literals_are_coerced(base_dir: Path) -> None:
    async with running_emulator(EmulatorConfig(base_dir)) as base, httpx.AsyncClient(base_url=base) as http:
        first = await queue(http, IMAGE_GRAPH)
        assert (await http.post("/api/prompt", json={"prompt": txt2img("nope")})).status_code == 400
        graph = txt2img()
        graph["5"]["inputs"]["width"] = "64"
        second = await queue(http, graph, prompt_id="my-own-id")
        assert (first["number"], second["number"], second["prompt_id"]) == (0, 2, "my-own-id")
        entry = await poll_history(http, "my-own-id")
        assert entry["prompt"][2]["5"]["inputs"]["width"] == 64


@async_test
async def test_partial_validation_failure_runs_the_valid_output(base_dir: Path) -> None:
    graph = txt2img()
    graph["11"] = {"class_type": "LoadImage", "inputs": {"image": "nope.png"}}
    graph["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}}
    async with running_emulator(EmulatorConfig(base_dir)) as base, httpx.AsyncClient(base_url=base) as http:
        reply = await queue(http, graph)
        assert reply["node_errors"] == {
            "11": {
                "errors": [
                    {
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": "image - Invalid image file: nope.png",
                        "extra_info": {"input_name": "image"},
                    }
                ],
                "dependent_outputs": ["10"],
                "class_type": "LoadImage",
            }
        }
        entry = await poll_history(http, reply["prompt_id"])
        assert list(entry["outputs"]) == ["9"] and entry["prompt"][4] == ["9"]


@async_test
async def test_invalid_json_is_a_plain_500(base_dir: Path) -> None:
    async with running_emulator(EmulatorConfig(base_dir)) as base, httpx.AsyncClient(base_url=base) as http:
        for path in ("/prompt", "/api/prompt", "/api/queue", "/api/history", "/api/free"):
            response = await http.post(path, content=b"{not json")
            assert response.status_code == 500
            assert response.headers["content-type"].startswith("text/plain")
            assert response.text == "500 Internal Server Error\n\nServer got itself in trouble"
        assert (await http.post("/api/interrupt", content=b"")).status_code == 200


# ---------------------------------------------------------------- failures at run time


@async_test
async def test_corrupt_model_gives_execution_error(base_dir: Path) -> None:
    (base_dir / "models" / "checkpoints" / "broken.safetensors").write_bytes(b"CORRUPT")
    async with (
        running_emulator(EmulatorConfig(base_dir)) as base,
        httpx.AsyncClient(base_url=base) as http,
        websockets.connect(ws_url(base, "c")) as ws,
    ):
        await recv(ws)
        pid = (await queue(http, txt2img("broken.safetensors"), client_id="c"))["prompt_id"]
        events = [(t, d) for t, d in await until_done(ws, pid) if t != "progress_state"]
        assert [t for t, _ in events] == [
            "status",
            "status",
            "execution_start",
            "execution_cached",
            "executing",
            "execution_error",
            "status",
            "executing",
        ]
        assert events[4][1]["node"] == "4"
        error = events[5][1]
        assert {k: error[k] for k in ("prompt_id", "node_id", "node_type", "executed", "exception_type")} == {
            "prompt_id": pid,
            "node_id": "4",
            "node_type": "CheckpointLoaderSimple",
            "executed": [],
            "exception_type": "safetensors._safetensors_rust.SafetensorError",
        }
        assert error["exception_message"] == "Error while deserializing header: header too small\n"
        assert error["current_inputs"] == {"ckpt_name": ["broken.safetensors"]}
        assert isinstance(error["traceback"], list) and "timestamp" in error
        entry = (await http.get(f"/api/history/{pid}")).json()[pid]
        assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
        assert entry["status"]["messages"][-1][0] == "execution_error"
        assert entry["outputs"] == {}


@async_test
async def test_interrupt_stops_the_sampler_at_the_next_step(base_dir: Path) -> None:
    async with (
        running_emulator(EmulatorConfig(base_dir, step_seconds=0.05)) as base,
        httpx.AsyncClient(base_url=base) as http,
        websockets.connect(ws_url(base, "c")) as ws,
    ):
        pid = (await queue(http, txt2img(steps=40), client_id="c"))["prompt_id"]
        while (await recv(ws))["type"] != "progress":
            pass
        await http.post("/api/interrupt", json={"prompt_id": "somebody-else"})  # not running: no-op
        await asyncio.sleep(0.12)
        assert (await http.post("/api/interrupt", json={"prompt_id": pid})).status_code == 200
        events = [(t, d) for t, d in await until_done(ws, pid) if t not in ("progress_state", "progress")]
        assert [t for t, _ in events] == ["execution_interrupted", "status", "executing"]
        interrupted = events[0][1]
        assert interrupted["node_id"] == "3" and interrupted["node_type"] == "KSampler"
        assert sorted(interrupted["executed"]) == ["4", "5", "6", "7"]
        entry = (await http.get(f"/api/history/{pid}")).json()[pid]
        assert entry["status"]["status_str"] == "error"
        assert entry["status"]["messages"][-1][0] == "execution_interrupted"


@async_test
async def test_loadimage_file_vanishing_after_validation_is_an_execution_error(base_dir: Path) -> None:
    (base_dir / "input").mkdir()
    Image.new("RGB", (16, 16), "red").save(base_dir / "input" / "in.png")
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "loaded"}},
    }
    async with running_emulator(EmulatorConfig(base_dir, step_seconds=0.05)) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            busy = await queue(http, txt2img(steps=100))
            pid = (await queue(http, graph))["prompt_id"]
            (base_dir / "input" / "in.png").unlink()
            await http.post("/api/interrupt", json={"prompt_id": busy["prompt_id"]})
            entry = await poll_history(http, pid)
        error = entry["status"]["messages"][-1]
        assert error[0] == "execution_error"
        assert error[1]["node_id"] == "1" and error[1]["exception_type"] == "FileNotFoundError"


# ---------------------------------------------------------------- queue and sockets


@async_test
async def test_front_number_delete_and_queue_listing(base_dir: Path) -> None:
    async with (
        running_emulator(EmulatorConfig(base_dir, step_seconds=0.05)) as base,
        httpx.AsyncClient(base_url=base) as http,
        websockets.connect(ws_url(base, "c")) as ws,
    ):
        running = await queue(http, txt2img(steps=100), client_id="c")
        while (await recv(ws))["type"] != "execution_start":
            pass
        late = await queue(http, IMAGE_GRAPH, client_id="c")
        first = await queue(http, IMAGE_GRAPH, client_id="c", front=True)
        dropped = await queue(http, IMAGE_GRAPH, client_id="c", number=0.5)
        assert (late["number"], first["number"], dropped["number"]) == (1, -2, 0.5)
        listing = (await http.get("/api/queue")).json()
        assert [item[1] for item in listing["queue_running"]] == [running["prompt_id"]]
        assert len(listing["queue_running"][0]) == 5
        assert sorted(item[1] for item in listing["queue_pending"]) == sorted(
            [late["prompt_id"], first["prompt_id"], dropped["prompt_id"]]
        )
        assert (await http.get("/prompt")).json() == {"exec_info": {"queue_remaining": 4}}
        await http.post("/api/queue", json={"delete": [dropped["prompt_id"]]})
        await http.post("/api/interrupt", json={"prompt_id": running["prompt_id"]})
        started = [running["prompt_id"]]  # its execution_start was read above
        while len(started) < 3:
            message = await recv(ws)
            if message["type"] == "execution_start":
                started.append(message["data"]["prompt_id"])
        assert started == [running["prompt_id"], first["prompt_id"], late["prompt_id"]]
        await until_done(ws, late["prompt_id"])
        assert (await http.get(f"/api/history/{dropped['prompt_id']}")).json() == {}
        newest = (await http.get("/api/history", params={"max_items": 1})).json()
        assert list(newest) == [late["prompt_id"]]
        await http.post("/api/history", json={"delete": [late["prompt_id"]]})
        assert late["prompt_id"] not in (await http.get("/api/history")).json()


@async_test
async def test_reconnect_replays_the_running_node_and_moves_the_events(base_dir: Path) -> None:
    async with (
        running_emulator(EmulatorConfig(base_dir, step_seconds=0.04)) as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        old = await websockets.connect(ws_url(base, "me"))
        pid = (await queue(http, txt2img(steps=100), client_id="me"))["prompt_id"]
        while (await recv(old))["type"] != "progress":
            pass
        async with websockets.connect(ws_url(base, "me")) as new:
            assert (await recv(new))["data"]["sid"] == "me"
            assert await recv(new) == {"type": "executing", "data": {"node": "3"}}
            while (await recv(new))["type"] != "progress":
                pass
            await http.post("/api/interrupt", json={"prompt_id": pid})  # no need to wait for 100 steps
            events = await until_done(new, pid)
            assert any(t == "execution_interrupted" for t, _ in events)
        leftovers = await drain(old, 0.1)
        assert not any(t in ("executing", "execution_success") for t, _ in leftovers)
        await old.close()


@async_test
async def test_without_client_id_no_execution_events_are_sent(base_dir: Path) -> None:
    async with (
        running_emulator(EmulatorConfig(base_dir)) as base,
        httpx.AsyncClient(base_url=base) as http,
        websockets.connect(ws_url(base)) as ws,
    ):
        assert re.fullmatch(r"[0-9a-f]{32}", (await recv(ws))["data"]["sid"])
        pid = (await queue(http, txt2img()))["prompt_id"]
        await poll_history(http, pid)
        kinds = {t for t, _ in await drain(ws)}
        assert kinds <= {"status", "progress", "progress_state"} and "status" in kinds


@async_test
async def test_feature_flags_reply(base_dir: Path) -> None:
    async with (
        running_emulator(EmulatorConfig(base_dir)) as base,
        websockets.connect(ws_url(base, "f")) as ws,
    ):
        await recv(ws)
        await ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        assert await recv(ws) == {
            "type": "feature_flags",
            "data": {"supports_preview_metadata": True, "max_upload_size": 104857600},
        }


@async_test
async def test_model_load_sleeps_only_when_the_model_changes(base_dir: Path) -> None:
    (base_dir / "models" / "checkpoints" / "other.safetensors").write_bytes(fake_weights(b"other"))

    async def timed(http: httpx.AsyncClient, graph: dict[str, Any]) -> float:
        start = time.monotonic()
        entry = await poll_history(http, (await queue(http, graph))["prompt_id"])
        assert entry["status"]["status_str"] == "success"
        return time.monotonic() - start

    async with (
        running_emulator(EmulatorConfig(base_dir, model_load_seconds=0.6)) as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        assert await timed(http, txt2img()) >= 0.6
        await timed(http, IMAGE_GRAPH)  # evicts the cached loader output
        assert await timed(http, txt2img(seed=3)) < 0.5
        assert await timed(http, txt2img("other.safetensors")) >= 0.6


# ---------------------------------------------------------------- files and listings


@async_test
async def test_view_status_codes(base_dir: Path) -> None:
    (base_dir / "output").mkdir()
    (base_dir / "output" / "a.png").write_bytes(b"png-ish")
    cases = [
        ({}, 404),
        ({"filename": "missing.png"}, 404),
        ({"filename": "../a.png"}, 400),
        ({"filename": "/etc/passwd"}, 400),
        ({"filename": "a.png", "type": "models"}, 400),
        ({"filename": "a.png", "subfolder": "../.."}, 403),
        ({"filename": "a.png"}, 200),
        ({"filename": "a.png [output]", "type": "input"}, 200),
    ]
    async with running_emulator(EmulatorConfig(base_dir)) as base, httpx.AsyncClient(base_url=base) as http:
        for params, status in cases:
            assert (await http.get("/api/view", params=params)).status_code == status, params


@async_test
async def test_upload_reuses_identical_bytes_and_renames_different_ones(base_dir: Path) -> None:
    async with running_emulator(EmulatorConfig(base_dir)) as base, httpx.AsyncClient(base_url=base) as http:

        async def upload(data: bytes, **form: str) -> httpx.Response:
            return await http.post(
                "/api/upload/image", files={"image": ("in.png", data, "image/png")}, data=form
            )

        assert (await upload(b"A", subfolder="up")).json() == {
            "name": "in.png",
            "subfolder": "up",
            "type": "input",
        }
        assert (await upload(b"A", subfolder="up")).json()["name"] == "in.png"
        assert (await upload(b"B", subfolder="up")).json()["name"] == "in (1).png"
        assert (await upload(b"C", subfolder="up")).json()["name"] == "in (2).png"
        assert (await upload(b"D", subfolder="up", overwrite="true")).json()["name"] == "in.png"
        assert (base_dir / "input" / "up" / "in.png").read_bytes() == b"D"
        assert (base_dir / "input" / "up" / "in (1).png").read_bytes() == b"B"
        assert (await upload(b"E", subfolder="../../x")).status_code == 400
        assert (await http.post("/api/upload/image", data={"subfolder": "up"})).status_code == 400


@async_test
async def test_model_listings_object_info_and_system_stats(base_dir: Path) -> None:
    sub = base_dir / "models" / "checkpoints" / "sdxl"
    sub.mkdir()
    (sub / "base.SAFETENSORS").write_bytes(b"x")
    (base_dir / "models" / "checkpoints" / "notes.txt").write_text("no")
    (base_dir / "models" / "clip").mkdir()
    (base_dir / "models" / "clip" / "t5.safetensors").write_bytes(b"x")
    async with running_emulator(EmulatorConfig(base_dir)) as base, httpx.AsyncClient(base_url=base) as http:
        folders = (await http.get("/api/models")).json()
        assert {"checkpoints", "loras", "vae", "text_encoders", "diffusion_models", "upscale_models"} <= set(
            folders
        )
        assert (await http.get("/models/checkpoints")).json() == ["sd15.safetensors", "sdxl/base.SAFETENSORS"]
        assert (await http.get("/api/models/text_encoders")).json() == ["t5.safetensors"]
        assert (await http.get("/api/models/nope")).status_code == 404

        info = (await http.get("/api/object_info")).json()
        assert set(NODE_CLASSES) <= set(info)
        ckpt = (await http.get("/object_info/CheckpointLoaderSimple")).json()["CheckpointLoaderSimple"]
        assert ckpt["input"]["required"]["ckpt_name"][0] == ["sd15.safetensors", "sdxl/base.SAFETENSORS"]
        assert ckpt["output"] == ["MODEL", "CLIP", "VAE"] and ckpt["output_node"] is False
        assert ckpt["input_order"] == {"required": ["ckpt_name"]}
        assert info["SaveImage"]["output_node"] is True
        assert info["DualCLIPLoader"]["input"]["required"]["clip_name1"][0] == ["t5.safetensors"]
        assert info["KSampler"]["input"]["required"]["steps"] == [
            "INT",
            {"default": 20, "min": 1, "max": 10000},
        ]
        assert (await http.get("/api/object_info/Nope")).json() == {}

        stats = (await http.get("/api/system_stats")).json()
        assert set(stats["system"]) >= {
            "os",
            "ram_total",
            "ram_free",
            "comfyui_version",
            "python_version",
            "argv",
        }
        device = stats["devices"][0]
        assert (device["name"], device["type"], device["index"]) == ("cpu", "cpu", None)
        assert set(device) == {
            "name",
            "type",
            "index",
            "vram_total",
            "vram_free",
            "torch_vram_total",
            "torch_vram_free",
        }


@async_test
async def test_foreign_origin_on_loopback_is_refused(base_dir: Path) -> None:
    async with running_emulator(EmulatorConfig(base_dir)) as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/api/prompt", headers={"Origin": "http://evil.example"})).status_code == 403
        assert (await http.get("/api/prompt", headers={"Origin": base})).status_code == 200
