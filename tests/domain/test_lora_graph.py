"""Writing LoRAs into workflows (swarmstation.domain.lora_graph), on every bundled template."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import pytest

from swarmstation.domain.lora_graph import (
    LoraGraphError,
    apply_loras,
    find_model_loader,
    find_positive_text,
    lora_models,
)
from swarmstation.domain.loras import AppliedLora, LoraInfo, TriggerMatcher, resolve
from swarmstation.domain.workflow import ModelRef, WorkflowError, is_link, required_models, validate_graph


def applied(
    slug: str, model: float = 0.8, clip: float | None = None, file_name: str | None = None
) -> AppliedLora:
    return AppliedLora(
        slug=slug,
        file_name=file_name if file_name is not None else f"{slug}.safetensors",
        weight=model,
        strength_model=model,
        strength_clip=model if clip is None else clip,
        source="tag",
        owner_id="owner",
        matched_text=f"<lora:{slug}>",
    )


def _templates() -> list[dict[str, Any]]:
    folder = resources.files("swarmstation.catalog")
    return [
        json.loads(entry.read_text(encoding="utf-8"))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".json")
    ]


TEMPLATES = {tool["slug"]: tool for tool in _templates()}
WITH_MODEL = sorted(
    slug for slug, tool in TEMPLATES.items() if find_model_loader(tool["workflow"]) is not None
)
WITHOUT_MODEL = sorted(set(TEMPLATES) - set(WITH_MODEL))


def _prompt_binding(tool: dict[str, Any]) -> tuple[str, str] | None:
    for inp in tool["inputs"]:
        if inp["name"] == "prompt":
            node_id, _, name = inp["bindings"][0].partition(".")
            return node_id, name
    return None


def _links(graph: dict[str, Any]) -> list[tuple[str, str, list[Any]]]:
    return [
        (node_id, name, value)
        for node_id, node in graph.items()
        for name, value in node["inputs"].items()
        if is_link(value)
    ]


def test_the_catalog_has_both_kinds() -> None:
    assert {"sd15-txt2img", "sdxl-txt2img", "sd15-img2img", "flux-txt2img"} <= set(WITH_MODEL)
    assert "upscale-4x" in WITHOUT_MODEL


@pytest.mark.parametrize("slug", WITH_MODEL)
def test_every_template_takes_a_chain_of_loras(slug: str) -> None:
    tool = TEMPLATES[slug]
    graph = tool["workflow"]
    before = copy.deepcopy(graph)
    loras = [applied("first", 0.8, 0.5), applied("second", -0.4)]
    binding = _prompt_binding(tool)
    assert binding is not None
    new = apply_loras(graph, loras, prompt_text="a lighthouse, disney style", text_binding=binding)

    assert graph == before  # the input is untouched
    validate_graph(new)  # no dangling links, no cycle, still an output node
    assert set(lora_models(loras)) <= set(required_models(new))
    assert set(required_models(graph)) <= set(required_models(new))
    assert new[binding[0]]["inputs"][binding[1]] == "a lighthouse, disney style"

    loader = find_model_loader(graph)
    assert loader is not None
    flux_style = graph[loader]["class_type"] == "UNETLoader"
    chain = [node_id for node_id in new if node_id not in graph]
    assert len(chain) == 2 and all(node_id.isdigit() for node_id in chain)
    first, second = (new[node_id] for node_id in chain)
    if flux_style:
        assert first["class_type"] == second["class_type"] == "LoraLoaderModelOnly"
        assert first["inputs"] == {
            "model": [loader, 0],
            "lora_name": "first.safetensors",
            "strength_model": 0.8,
        }
        assert second["inputs"]["model"] == [chain[0], 0]
        assert second["inputs"]["strength_model"] == -0.4
    else:
        assert first["class_type"] == second["class_type"] == "LoraLoader"
        assert first["inputs"] == {
            "model": [loader, 0],
            "clip": [loader, 1],
            "lora_name": "first.safetensors",
            "strength_model": 0.8,
            "strength_clip": 0.5,
        }
        assert second["inputs"]["model"] == [chain[0], 0]
        assert second["inputs"]["clip"] == [chain[0], 1]
        assert (second["inputs"]["strength_model"], second["inputs"]["strength_clip"]) == (-0.4, -0.4)
    assert first["_meta"]["title"] == "LoRA first"

    # every consumer of the loader's MODEL (and CLIP, for checkpoints) now reads the end of the chain
    rewired = {0} if flux_style else {0, 1}
    for node_id, name, value in _links(new):
        if node_id == chain[0]:
            continue
        assert not (value[0] == loader and value[1] in rewired), (node_id, name, value)
    for node_id, name, value in _links(graph):
        if value[0] == loader and value[1] in rewired:
            assert new[node_id]["inputs"][name] == [chain[-1], value[1]]
        else:
            assert new[node_id]["inputs"][name] == value  # VAE links, FLUX's CLIP loader: untouched


@pytest.mark.parametrize("slug", sorted(TEMPLATES))
def test_no_loras_twice_is_the_identity(slug: str) -> None:
    graph = TEMPLATES[slug]["workflow"]
    once = apply_loras(graph, [])
    assert once == graph and once is not graph
    assert apply_loras(once, []) == graph


@pytest.mark.parametrize("slug", WITHOUT_MODEL)
def test_a_graph_without_a_model_loader_refuses_loras(slug: str) -> None:
    graph = TEMPLATES[slug]["workflow"]
    with pytest.raises(LoraGraphError, match="no checkpoint or diffusion-model loader"):
        apply_loras(graph, [applied("x")])
    assert apply_loras(graph, []) == graph
    assert issubclass(LoraGraphError, WorkflowError)


def test_flux_clip_consumers_stay_on_the_clip_loader() -> None:
    graph = TEMPLATES["flux-txt2img"]["workflow"]
    new = apply_loras(graph, [applied("flux-style")])
    assert new["6"]["inputs"]["clip"] == ["11", 0]
    assert new["7"]["inputs"]["clip"] == ["11", 0]
    assert new["3"]["inputs"]["model"] == ["13", 0]
    assert new["13"]["class_type"] == "LoraLoaderModelOnly"


def test_new_ids_do_not_collide() -> None:
    graph = copy.deepcopy(TEMPLATES["sd15-txt2img"]["workflow"])
    graph["99"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    graph["100x"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    new = apply_loras(graph, [applied("a"), applied("b"), applied("c")])
    assert [k for k in new if k not in graph] == ["100", "101", "102"]
    validate_graph(new)


def test_the_positive_prompt_is_found_by_default() -> None:
    graph = TEMPLATES["sdxl-txt2img"]["workflow"]
    assert find_positive_text(graph) == ("6", "text")
    new = apply_loras(graph, [], prompt_text="plain text")
    assert new["6"]["inputs"]["text"] == "plain text"
    assert new["7"]["inputs"]["text"] == graph["7"]["inputs"]["text"]
    with pytest.raises(LoraGraphError, match="positive CLIPTextEncode"):
        apply_loras(TEMPLATES["upscale-4x"]["workflow"], [], prompt_text="x")


def test_bad_text_bindings() -> None:
    graph = TEMPLATES["sd15-txt2img"]["workflow"]
    with pytest.raises(LoraGraphError, match="does not exist"):
        apply_loras(graph, [], prompt_text="x", text_binding=("404", "text"))
    with pytest.raises(LoraGraphError, match="not a literal text"):
        apply_loras(graph, [], prompt_text="x", text_binding=("6", "clip"))


def test_several_model_loaders_need_a_choice() -> None:
    graph = copy.deepcopy(TEMPLATES["sdxl-txt2img"]["workflow"])
    graph["20"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "refiner.safetensors"}}
    graph["21"] = {
        "class_type": "KSampler",
        "inputs": {**graph["3"]["inputs"], "model": ["20", 0], "latent_image": ["3", 0]},
    }
    graph["22"] = {"class_type": "VAEDecode", "inputs": {"samples": ["21", 0], "vae": ["20", 2]}}
    graph["23"] = {"class_type": "SaveImage", "inputs": {"images": ["22", 0], "filename_prefix": "r"}}
    with pytest.raises(LoraGraphError, match="several model loaders"):
        apply_loras(graph, [applied("a")])
    new = apply_loras(graph, [applied("a")], model_node="4")
    validate_graph(new)
    assert new["3"]["inputs"]["model"] == ["24", 0]
    assert new["21"]["inputs"]["model"] == ["20", 0]
    with pytest.raises(LoraGraphError, match="not a checkpoint"):
        apply_loras(graph, [applied("a")], model_node="3")


@pytest.mark.parametrize("name", ["../evil.safetensors", "/abs.safetensors", "a//b.safetensors", "", "a\\b"])
def test_bad_lora_file_names_are_refused(name: str) -> None:
    with pytest.raises(LoraGraphError):
        apply_loras(TEMPLATES["sd15-txt2img"]["workflow"], [applied("a", file_name=name)])


def test_non_finite_strengths_are_refused() -> None:
    with pytest.raises(LoraGraphError, match="finite"):
        apply_loras(TEMPLATES["sd15-txt2img"]["workflow"], [applied("a", float("nan"))])


def test_lora_models() -> None:
    loras = [applied("b"), applied("a", file_name="sdxl/a.safetensors"), applied("b")]
    assert lora_models(loras) == (
        ModelRef("loras", "b.safetensors"),
        ModelRef("loras", "sdxl/a.safetensors"),
    )
    assert lora_models([]) == ()


def test_resolution_into_a_graph_end_to_end() -> None:
    matcher = TriggerMatcher(
        [
            LoraInfo(
                slug="disney",
                name="Disney",
                triggers=("disney style",),
                aliases=(),
                default_weight=0.7,
                base_model="SDXL",
                file_name="styles/disney.safetensors",
                owner_id="alice",
                visibility="public",
                access="public",
                created_at_rank=1,
            )
        ]
    )
    tool = TEMPLATES["sdxl-txt2img"]
    r = resolve("Portrait, Disney Style <lora:nope:1>", matcher, tool_base_model=tool["base_model"])
    new = apply_loras(tool["workflow"], r.loras, prompt_text=r.prompt, text_binding=_prompt_binding(tool))
    validate_graph(new)
    assert new["6"]["inputs"]["text"] == "Portrait, Disney Style "
    assert ModelRef("loras", "styles/disney.safetensors") in required_models(new)
    assert [n["inputs"]["strength_model"] for n in new.values() if n["class_type"] == "LoraLoader"] == [0.7]
