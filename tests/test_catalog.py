from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import pytest

from swarmstation.catalog import bundled_tools
from swarmstation.domain.tools import (
    ToolSpec,
    bind_inputs,
    input_schema,
    tool_from_dict,
    tool_to_dict,
    validate_tool,
)
from swarmstation.domain.workflow import ModelRef, is_link, required_models

EXPECTED_MODELS = {
    "sd15-txt2img": (ModelRef("checkpoints", "v1-5-pruned-emaonly.safetensors"),),
    "sdxl-txt2img": (ModelRef("checkpoints", "sd_xl_base_1.0.safetensors"),),
    "flux-txt2img": (
        ModelRef("diffusion_models", "flux1-schnell.safetensors"),
        ModelRef("text_encoders", "clip_l.safetensors"),
        ModelRef("text_encoders", "t5xxl_fp8_e4m3fn.safetensors"),
        ModelRef("vae", "ae.safetensors"),
    ),
    "sd15-img2img": (ModelRef("checkpoints", "v1-5-pruned-emaonly.safetensors"),),
    "upscale-4x": (ModelRef("upscale_models", "4x-UltraSharp.pth"),),
}

# What each loader/consumer class outputs, per ComfyUI's RETURN_TYPES, and which inputs it takes.
RETURN_TYPES = {
    "CheckpointLoaderSimple": ("MODEL", "CLIP", "VAE"),
    "UNETLoader": ("MODEL",),
    "DualCLIPLoader": ("CLIP",),
    "VAELoader": ("VAE",),
    "CLIPTextEncode": ("CONDITIONING",),
    "EmptyLatentImage": ("LATENT",),
    "EmptySD3LatentImage": ("LATENT",),
    "KSampler": ("LATENT",),
    "VAEDecode": ("IMAGE",),
    "VAEEncode": ("LATENT",),
    "LoadImage": ("IMAGE", "MASK"),
    "UpscaleModelLoader": ("UPSCALE_MODEL",),
    "ImageUpscaleWithModel": ("IMAGE",),
    "SaveImage": (),
}
INPUT_TYPES: dict[str, dict[str, str | None]] = {  # None: a literal widget value
    "CheckpointLoaderSimple": {"ckpt_name": None},
    "UNETLoader": {"unet_name": None, "weight_dtype": None},
    "DualCLIPLoader": {"clip_name1": None, "clip_name2": None, "type": None},
    "VAELoader": {"vae_name": None},
    "CLIPTextEncode": {"text": None, "clip": "CLIP"},
    "EmptyLatentImage": {"width": None, "height": None, "batch_size": None},
    "EmptySD3LatentImage": {"width": None, "height": None, "batch_size": None},
    "KSampler": {
        "model": "MODEL",
        "seed": None,
        "steps": None,
        "cfg": None,
        "sampler_name": None,
        "scheduler": None,
        "positive": "CONDITIONING",
        "negative": "CONDITIONING",
        "latent_image": "LATENT",
        "denoise": None,
    },
    "VAEDecode": {"samples": "LATENT", "vae": "VAE"},
    "VAEEncode": {"pixels": "IMAGE", "vae": "VAE"},
    "LoadImage": {"image": None},
    "UpscaleModelLoader": {"model_name": None},
    "ImageUpscaleWithModel": {"upscale_model": "UPSCALE_MODEL", "image": "IMAGE"},
    "SaveImage": {"images": "IMAGE", "filename_prefix": None},
}


def catalog_files() -> dict[str, dict[str, Any]]:
    root = resources.files("swarmstation.catalog")
    return {
        entry.name: json.loads(entry.read_text(encoding="utf-8"))
        for entry in root.iterdir()
        if entry.name.endswith(".json")
    }


def tools_by_slug() -> dict[str, ToolSpec]:
    return {spec.slug: spec for spec in bundled_tools()}


def test_bundled_tools_are_the_expected_set() -> None:
    tools = bundled_tools()
    assert [t.slug for t in tools] == sorted(EXPECTED_MODELS)
    assert {f"{slug}.json" for slug in EXPECTED_MODELS} == set(catalog_files())


@pytest.mark.parametrize("filename", sorted(catalog_files()))
def test_each_file_is_valid_and_canonical(filename: str) -> None:
    data = catalog_files()[filename]
    spec = tool_from_dict(data)
    validate_tool(spec)
    assert filename == f"{spec.slug}.json"
    assert tool_to_dict(spec) == data  # the file is in tool_to_dict form
    input_schema(spec)


@pytest.mark.parametrize("slug", sorted(EXPECTED_MODELS))
def test_required_models(slug: str) -> None:
    spec = tools_by_slug()[slug]
    assert required_models(spec.workflow) == EXPECTED_MODELS[slug]


@pytest.mark.parametrize("slug", sorted(EXPECTED_MODELS))
def test_graph_matches_comfyui_node_signatures(slug: str) -> None:
    workflow = tools_by_slug()[slug].workflow
    for node_id, node in workflow.items():
        cls = node["class_type"]
        assert cls in INPUT_TYPES, f"{slug}: node {node_id} uses unexpected class {cls}"
        assert set(node["inputs"]) == set(INPUT_TYPES[cls]), f"{slug}: node {node_id} inputs"
        for name, expected in INPUT_TYPES[cls].items():
            value = node["inputs"][name]
            if expected is None:
                assert not is_link(value), f"{slug}: {node_id}.{name} should be a literal"
                continue
            assert is_link(value), f"{slug}: {node_id}.{name} should be a link"
            source = workflow[value[0]]["class_type"]
            assert RETURN_TYPES[source][value[1]] == expected, (
                f"{slug}: {node_id}.{name} gets the wrong output"
            )


def test_template_defaults() -> None:
    tools = tools_by_slug()
    sd15 = tools["sd15-txt2img"].workflow
    assert sd15["3"]["inputs"]["sampler_name"] == "euler"
    assert sd15["3"]["inputs"]["scheduler"] == "normal"
    sdxl = tools["sdxl-txt2img"].workflow
    assert (sdxl["3"]["inputs"]["sampler_name"], sdxl["3"]["inputs"]["scheduler"]) == ("dpmpp_2m", "karras")
    flux = tools["flux-txt2img"].workflow
    assert flux["11"]["inputs"]["type"] == "flux"
    assert flux["10"]["inputs"]["weight_dtype"] == "default"
    assert (flux["3"]["inputs"]["cfg"], flux["3"]["inputs"]["scheduler"]) == (1.0, "simple")
    for spec in tools.values():
        saves = [n for n in spec.workflow.values() if n["class_type"] == "SaveImage"]
        assert [n["inputs"]["filename_prefix"] for n in saves] == ["swarmstation"]
    assert {t.category for t in tools.values()} == {"text-to-image", "image-to-image", "upscale"}


@pytest.mark.parametrize(
    ("slug", "raw", "expected"),
    [
        ("sd15-txt2img", {"prompt": "p"}, {"width": 512, "height": 512, "steps": 20, "cfg": 7.0}),
        ("sdxl-txt2img", {"prompt": "p"}, {"width": 1024, "height": 1024, "steps": 25, "cfg": 6.5}),
        ("flux-txt2img", {"prompt": "p"}, {"width": 1024, "height": 1024, "steps": 4}),
        ("sd15-img2img", {"prompt": "p", "image": "in/a.png"}, {"denoise": 0.6, "image": "in/a.png"}),
        ("upscale-4x", {"image": "in/a.png"}, {"image": "in/a.png"}),
    ],
)
def test_bind_bundled(slug: str, raw: dict[str, Any], expected: dict[str, Any]) -> None:
    spec = tools_by_slug()[slug]
    before = copy.deepcopy(dict(spec.workflow))
    job = bind_inputs(spec, raw, random_seed=77)
    assert spec.workflow == before
    for name, value in expected.items():
        assert job.inputs[name] == value
    if "seed" in job.inputs:
        assert job.inputs["seed"] == 77
    assert job.required_models == EXPECTED_MODELS[slug]
    for name, ref in job.input_images.items():
        binding = next(i for i in spec.inputs if i.name == name).bindings[0]
        assert job.workflow[binding.node_id]["class_type"] == "LoadImage"
        assert job.workflow[binding.node_id]["inputs"]["image"] == ref


def test_image_tools_require_an_image() -> None:
    tools = tools_by_slug()
    for slug in ("sd15-img2img", "upscale-4x"):
        image = next(i for i in tools[slug].inputs if i.name == "image")
        assert image.type == "image"
        assert image.required
