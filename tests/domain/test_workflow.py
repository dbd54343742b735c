from __future__ import annotations

import copy
from typing import Any

import pytest

from swarmstation.domain.workflow import (
    MODEL_INPUTS,
    OUTPUT_NODE_CLASSES,
    ModelRef,
    WorkflowError,
    is_link,
    normalise_model_name,
    required_models,
    set_input,
    validate_graph,
)
from tests.helpers import txt2img


def problems_of(graph: object, **kwargs: Any) -> list[str]:
    with pytest.raises(WorkflowError) as info:
        validate_graph(graph, **kwargs)
    assert str(info.value)
    return info.value.problems


# ------------------------------------------------------------------ validate_graph


def test_valid_graph_passes() -> None:
    validate_graph(txt2img())


def test_protocol_example_graph_passes() -> None:
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 32, "batch_size": 2, "color": 1}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t/run"}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    validate_graph(graph)


@pytest.mark.parametrize("graph", [None, [], "x", 3, ("a",)])
def test_non_dict_rejected(graph: object) -> None:
    assert problems_of(graph) == [f"the workflow must be a JSON object of nodes, not {type(graph).__name__}"]


def test_empty_rejected() -> None:
    assert problems_of({}) == ["the workflow has no nodes"]


def test_link_to_missing_node() -> None:
    graph = txt2img()
    graph["3"]["inputs"]["model"] = ["99", 0]
    assert problems_of(graph) == ["node '3': input 'model' links to missing node '99'"]


def test_link_with_int_node_id() -> None:
    graph = txt2img()
    graph["3"]["inputs"]["model"] = [4, 0]
    assert problems_of(graph) == ["node '3': input 'model' links to node id 4, which must be a string"]


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (-1, "node '8': input 'vae' has negative output index -1"),
        ("2", "node '8': input 'vae' has output index '2', which must be an integer"),
        (True, "node '8': input 'vae' has output index True, which must be an integer"),
        (2.0, "node '8': input 'vae' has output index 2.0, which must be an integer"),
    ],
)
def test_bad_output_index(index: object, message: str) -> None:
    graph = txt2img()
    graph["8"]["inputs"]["vae"] = ["4", index]
    assert problems_of(graph) == [message]


def test_bare_literal_list_rejected_but_wrapped_list_allowed() -> None:
    graph = txt2img()
    graph["5"]["inputs"]["extra"] = [1, 2, 3]
    (problem,) = problems_of(graph)
    assert problem.startswith("node '5': input 'extra' is a list of length 3")
    graph["5"]["inputs"]["extra"] = {"__value__": [1, 2, 3]}
    validate_graph(graph)
    graph["5"]["inputs"]["extra"] = {"__value__": 5}
    assert problems_of(graph) == [
        "node '5': input 'extra': a wrapped literal must be exactly {\"__value__\": [...]}"
    ]


def test_non_json_literal_rejected() -> None:
    graph = txt2img()
    graph["3"]["inputs"]["cfg"] = float("nan")
    assert problems_of(graph) == [
        "node '3': input 'cfg' has a value of type float that is not a JSON literal"
    ]


def test_cycle_detected() -> None:
    graph = txt2img()
    graph["6"]["inputs"]["clip"] = ["3", 0]  # 3 -> 6 -> 3
    assert problems_of(graph) == ["the workflow has a cycle: '3' -> '6' -> '3'"]


def test_self_loop_detected() -> None:
    graph = txt2img()
    graph["8"]["inputs"]["samples"] = ["8", 0]
    assert problems_of(graph) == ["the workflow has a cycle: '8' -> '8'"]


def test_long_chain_has_no_recursion_problem() -> None:
    graph: dict[str, Any] = {"0": {"class_type": "EmptyImage", "inputs": {}}}
    for i in range(1, 5000):
        graph[str(i)] = {"class_type": "ImageInvert", "inputs": {"image": [str(i - 1), 0]}}
    graph["out"] = {"class_type": "SaveImage", "inputs": {"images": ["4999", 0]}}
    validate_graph(graph)
    graph["0"]["inputs"]["image"] = ["4999", 0]
    (problem,) = problems_of(graph)
    assert problem.startswith("the workflow has a cycle: '0' -> '4999' -> '4998'")


def test_no_output_node() -> None:
    graph = txt2img()
    del graph["9"]
    (problem,) = problems_of(graph)
    assert problem.startswith("the workflow has no output node (one of: ")
    assert "SaveImage" in problem


def test_extra_output_classes() -> None:
    graph = txt2img()
    graph["9"]["class_type"] = "MyCustomSaver"
    (problem,) = problems_of(graph)
    assert problem.startswith("the workflow has no output node (one of: ")
    validate_graph(graph, extra_output_classes=frozenset({"MyCustomSaver"}))


def test_output_node_classes_contents() -> None:
    assert {"SaveImage", "PreviewImage", "VHS_VideoCombine", "SaveAudio", "SaveLatent"} <= OUTPUT_NODE_CLASSES
    assert "KSampler" not in OUTPUT_NODE_CLASSES


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda g: g.__setitem__(7, g.pop("7")), "node id 7 must be a non-empty string"),
        (
            lambda g: g.__setitem__("", {"class_type": "X", "inputs": {}}),
            "node id '' must be a non-empty string",
        ),
        (lambda g: g.__setitem__("7", ["CLIPTextEncode"]), "node '7' must be an object, not list"),
        (lambda g: g["7"].pop("class_type"), "node '7' has no class_type"),
        (lambda g: g["7"].__setitem__("class_type", 5), "node '7' has no class_type"),
        (lambda g: g["7"].pop("inputs"), "node '7' has no inputs object"),
        (lambda g: g["7"].__setitem__("inputs", []), "node '7' has no inputs object"),
        (lambda g: g["7"].__setitem__("_meta", "t"), "node '7': _meta must be an object"),
        (lambda g: g["7"]["inputs"].__setitem__(1, "x"), "node '7': input name 1 must be a non-empty string"),
    ],
)
def test_malformed_nodes(mutate: Any, message: str) -> None:
    graph = txt2img()
    mutate(graph)
    problems = problems_of(graph)
    assert message in problems


def test_all_problems_reported() -> None:
    graph = txt2img()
    graph["3"]["inputs"]["model"] = ["99", 0]
    graph["8"]["inputs"]["vae"] = ["4", -2]
    del graph["9"]
    problems = problems_of(graph)
    assert len(problems) == 3
    assert "node '3': input 'model' links to missing node '99'" in problems


def test_is_link() -> None:
    assert is_link(["1", 0])
    assert not is_link(["1", -1])
    assert not is_link([1, 0])
    assert not is_link(["1", True])
    assert not is_link(("1", 0))
    assert not is_link(["1", 0, 0])


# ------------------------------------------------------------------ models


def test_required_models_sorted_deduplicated_literal_only() -> None:
    graph = txt2img()
    graph["20"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["4", 0],
            "clip": ["4", 1],
            "lora_name": "style.safetensors",
            "strength_model": 1.0,
            "strength_clip": 1.0,
        },
    }
    graph["21"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["20", 0], "lora_name": "a.safetensors"},
    }
    graph["22"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["21", 0], "lora_name": "a.safetensors"},
    }
    graph["23"] = {"class_type": "VAELoader", "inputs": {"vae_name": ["24", 0]}}  # linked: skipped
    graph["24"] = {"class_type": "PrimitiveString", "inputs": {"value": "vae.safetensors"}}
    graph["25"] = {
        "class_type": "DualCLIPLoader",
        "inputs": {"clip_name1": "t5.safetensors", "clip_name2": "clip_l.safetensors", "type": "flux"},
    }
    assert required_models(graph) == (
        ModelRef("checkpoints", "sd15.safetensors"),
        ModelRef("loras", "a.safetensors"),
        ModelRef("loras", "style.safetensors"),
        ModelRef("text_encoders", "clip_l.safetensors"),
        ModelRef("text_encoders", "t5.safetensors"),
    )


def test_required_models_tolerates_malformed_nodes() -> None:
    graph: dict[str, Any] = {
        "1": "junk",
        "2": {"class_type": ["x"], "inputs": {}},
        "3": {"class_type": "VAELoader"},
        "4": {"class_type": "VAELoader", "inputs": {"vae_name": ""}},
        "5": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x.pth"}},
    }
    assert required_models(graph) == (ModelRef("upscale_models", "4x.pth"),)


def test_model_inputs_table() -> None:
    assert MODEL_INPUTS["CheckpointLoaderSimple"] == (("ckpt_name", "checkpoints"),)
    assert MODEL_INPUTS["DualCLIPLoader"] == (
        ("clip_name1", "text_encoders"),
        ("clip_name2", "text_encoders"),
    )
    assert MODEL_INPUTS["UNETLoader"] == (("unet_name", "diffusion_models"),)
    assert MODEL_INPUTS["ControlNetLoader"] == (("control_net_name", "controlnet"),)
    assert len(MODEL_INPUTS["TripleCLIPLoader"]) == 3


def test_model_ref_ordering() -> None:
    assert sorted([ModelRef("vae", "a"), ModelRef("checkpoints", "z"), ModelRef("checkpoints", "b")]) == [
        ModelRef("checkpoints", "b"),
        ModelRef("checkpoints", "z"),
        ModelRef("vae", "a"),
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.safetensors", "a.safetensors"),
        ("sdxl/a.safetensors", "sdxl/a.safetensors"),
        ("./a.safetensors", "a.safetensors"),
        ("sdxl/./x//a.safetensors", "sdxl/x/a.safetensors"),
        ("my model (v2).safetensors", "my model (v2).safetensors"),
        ("..a.safetensors", "..a.safetensors"),
    ],
)
def test_normalise_model_name_ok(name: str, expected: str) -> None:
    assert normalise_model_name(name) == expected


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("C:/models/a.safetensors", "absolute"),
        ("../a.safetensors", "'..'"),
        ("loras/../../a.safetensors", "'..'"),
        ("sdxl\\a.safetensors", "backslash"),
        ("a\x00.safetensors", "control character"),
        ("sdxl/", "ends with '/'"),
        (".", "names no file"),
        ("./.", "names no file"),
    ],
)
def test_normalise_model_name_rejects(name: str, fragment: str) -> None:
    with pytest.raises(WorkflowError) as info:
        normalise_model_name(name)
    assert fragment in str(info.value)


def test_normalise_model_name_rejects_non_string() -> None:
    with pytest.raises(WorkflowError):
        normalise_model_name(5)  # type: ignore[arg-type]


# ------------------------------------------------------------------ set_input


def test_set_input_returns_new_graph_without_mutating() -> None:
    graph = txt2img()
    before = copy.deepcopy(graph)
    new = set_input(graph, "6", "text", "a dog")
    assert graph == before
    assert new["6"]["inputs"]["text"] == "a dog"
    expected = copy.deepcopy(before)
    expected["6"]["inputs"]["text"] = "a dog"
    assert new == expected
    # no shared mutable state with the original
    new["3"]["inputs"]["steps"] = 99
    new["6"]["inputs"]["clip"][1] = 7
    assert graph == before


def test_set_input_copies_value() -> None:
    value = {"__value__": [1, 2]}
    new = set_input(txt2img(), "5", "extra", value)
    value["__value__"].append(3)
    assert new["5"]["inputs"]["extra"] == {"__value__": [1, 2]}


def test_set_input_missing_node() -> None:
    with pytest.raises(WorkflowError, match="node '42' does not exist"):
        set_input(txt2img(), "42", "text", "x")
