"""Typed tools (issue 14): output ports, tool kinds, local tools and ``many`` image inputs."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmstation.catalog import bundled_tools
from swarmstation.domain.tools import (
    DEFAULT_MAX_ITEMS,
    INPUT_TYPES,
    LOCAL_POOL,
    PORT_TYPES,
    RESERVED_PORT_TYPES,
    InputSpec,
    OutputSpec,
    ToolDefinitionError,
    ToolInputError,
    ToolSpec,
    bind_inputs,
    comfy_outputs,
    compatible,
    input_schema,
    node_port_types,
    tool_from_dict,
    tool_to_dict,
    validate_tool,
)
from tests.domain.test_tools import graph, tool


def definition_error(spec: ToolSpec) -> ToolDefinitionError:
    with pytest.raises(ToolDefinitionError) as info:
        validate_tool(spec)
    return info.value


def local_tool(**changes: Any) -> ToolSpec:
    spec = ToolSpec(
        slug="contact-sheet",
        name="Contact sheet",
        description="A grid of images",
        category="image-utility",
        base_model="other",
        workflow={},
        inputs=(
            InputSpec("images", "image", (), required=True, many=True, max_items=4),
            InputSpec("columns", "integer", (), minimum=1, maximum=8, default=2),
            InputSpec("title", "string", ()),
        ),
        pool=LOCAL_POOL,
        accepts_loras=False,
        kind="image",
        outputs=(OutputSpec("image", "image", description="The sheet"),),
    )
    return dataclasses.replace(spec, **changes)


# ------------------------------------------------------------------ port types and compatible


def test_port_type_constants() -> None:
    assert PORT_TYPES == (
        "image", "text", "integer", "number", "boolean", "seed", "video", "audio", "mask", "latent",
    )  # fmt: skip
    assert RESERVED_PORT_TYPES == ("video", "audio", "mask", "latent")
    assert set(RESERVED_PORT_TYPES) <= set(PORT_TYPES)


@pytest.mark.parametrize("port", PORT_TYPES)
@pytest.mark.parametrize("inp", INPUT_TYPES)
def test_compatible_only_same_type_or_text_into_string(port: Any, inp: Any) -> None:
    expected = port == inp or (port == "text" and inp == "string")
    assert compatible(port, inp) is expected


def test_compatible_explicit_cases() -> None:
    assert compatible("image", "image")
    assert compatible("text", "string")
    assert not compatible("image", "string")
    assert not compatible("integer", "seed")
    assert not compatible("seed", "integer")
    assert not compatible("integer", "number")
    assert not compatible("text", "image")
    assert not compatible("video", "image")


# ------------------------------------------------------------------ comfy_outputs


def test_comfy_outputs_one_image_node_is_named_image() -> None:
    wf = graph()
    del wf["11"]  # the PreviewImage
    assert comfy_outputs(wf) == (OutputSpec("image", "image", node_id="9"),)


def test_comfy_outputs_several_nodes_named_by_node_id_in_node_order() -> None:
    wf = graph()  # SaveImage 9 and PreviewImage 11
    wf["20"] = {"class_type": "ShowText|pysssss", "inputs": {"text": "x"}}
    wf["a.b"] = {"class_type": "SaveAudio", "inputs": {"audio": ["3", 0]}}
    ports = comfy_outputs(wf)
    assert ports == (
        OutputSpec("image_9", "image", node_id="9"),
        OutputSpec("image_11", "image", node_id="11"),
        OutputSpec("text", "text", node_id="20"),
        OutputSpec("audio", "audio", node_id="a.b"),
    )


def test_comfy_outputs_custom_output_classes_are_images() -> None:
    wf = graph()
    wf["9"]["class_type"] = "FancySave"
    del wf["11"]
    assert comfy_outputs(wf) == ()
    assert comfy_outputs(wf, frozenset({"FancySave"})) == (OutputSpec("image", "image", node_id="9"),)


def test_comfy_outputs_skips_malformed_nodes() -> None:
    assert comfy_outputs({"1": "not a node", "2": {"inputs": {}}, "3": {"class_type": 5}}) == ()


def test_node_port_types() -> None:
    assert node_port_types("SaveImage") == ("image",)
    assert node_port_types("PreviewImage") == ("image",)
    assert node_port_types("SaveVideo") == ("video",)
    assert node_port_types("ShowText|pysssss") == ("text",)
    assert node_port_types("KSampler") == ()
    assert node_port_types("FancySave", frozenset({"FancySave"})) == PORT_TYPES


# ------------------------------------------------------------------ validate_tool: ComfyUI outputs


def test_comfyui_tool_needs_outputs() -> None:
    err = definition_error(tool(outputs=()))
    assert err.field == "outputs" and "at least one output" in err.reason


def test_both_output_nodes_may_be_ports() -> None:
    validate_tool(
        tool(
            outputs=(OutputSpec("image", "image", node_id="9"), OutputSpec("preview", "image", node_id="11"))
        )
    )


@pytest.mark.parametrize(
    ("out", "field", "fragment"),
    [
        (OutputSpec("image", "image", node_id="99"), "outputs[0].node_id", "'99' does not exist"),
        (OutputSpec("image", "image", node_id="3"), "outputs[0].node_id", "(KSampler) is not an output node"),
        (OutputSpec("image", "image"), "outputs[0].node_id", "names its output node"),
        (OutputSpec("image", "image", node_id=""), "outputs[0].node_id", "names its output node"),
        (
            OutputSpec("caption", "text", node_id="9"),
            "outputs[0].type",
            "(SaveImage) produces image, not text",
        ),
        (OutputSpec("clip", "video", node_id="9"), "outputs[0].type", "produces image, not video"),
        (OutputSpec("1st", "image", node_id="9"), "outputs[0].name", "must be an identifier"),
        (OutputSpec("has-dash", "image", node_id="9"), "outputs[0].name", "must be an identifier"),
        (OutputSpec("image", "picture", node_id="9"), "outputs[0].type", "'picture' is not one of"),  # type: ignore[arg-type]
        (OutputSpec("image", "image", node_id="9", many="yes"), "outputs[0].many", "true or false"),  # type: ignore[arg-type]
    ],
)
def test_bad_comfyui_output(out: OutputSpec, field: str, fragment: str) -> None:
    err = definition_error(tool(outputs=(out,)))
    assert err.field == field
    assert fragment in err.reason
    assert str(err) == f"{field}: {err.reason}"


def test_output_name_and_node_used_twice() -> None:
    err = definition_error(
        tool(outputs=(OutputSpec("image", "image", node_id="9"), OutputSpec("image", "image", node_id="11")))
    )
    assert (err.field, err.reason) == ("outputs[1].name", "output 'image' is defined twice")
    err = definition_error(
        tool(outputs=(OutputSpec("image", "image", node_id="9"), OutputSpec("again", "image", node_id="9")))
    )
    assert err.field == "outputs[1].node_id" and "already fills output 'image'" in err.reason


def test_reserved_types_accepted_as_declarations() -> None:
    wf = graph()
    wf["30"] = {"class_type": "SaveVideo", "inputs": {"video": ["8", 0]}}
    wf["31"] = {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0]}}
    wf["32"] = {"class_type": "FancyMask", "inputs": {"mask": ["8", 0]}}
    validate_tool(
        tool(
            workflow=wf,
            output_classes=frozenset({"FancyMask"}),
            outputs=(
                OutputSpec("image", "image", node_id="9"),
                OutputSpec("clip", "video", node_id="30"),
                OutputSpec("latent", "latent", node_id="31"),
                OutputSpec("mask", "mask", node_id="32"),
            ),
        )
    )


def test_text_node_is_an_output_node() -> None:
    wf = graph()
    wf["40"] = {"class_type": "ShowText|pysssss", "inputs": {"text": "hello"}}
    validate_tool(
        tool(
            workflow=wf,
            outputs=(OutputSpec("image", "image", node_id="9"), OutputSpec("text", "text", node_id="40")),
        )
    )


def test_many_refused_on_comfyui_inputs() -> None:
    spec = tool()
    spec = dataclasses.replace(
        spec, inputs=tuple(dataclasses.replace(i, many=True) if i.name == "image" else i for i in spec.inputs)
    )
    err = definition_error(spec)
    assert err.field == "inputs.image.many" and "one image each" in err.reason


# ------------------------------------------------------------------ validate_tool: local tools


def test_valid_local_tool() -> None:
    validate_tool(local_tool())
    validate_tool(local_tool(kind="llm", outputs=(OutputSpec("text", "text"),)))


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"kind": "shell"}, "kind", "'shell' is not one of: comfyui, llm, image"),
        ({"workflow": graph()}, "workflow", "has no workflow"),
        ({"pool": "default"}, "pool", "runs in the 'control' pool"),
        ({"accepts_loras": True}, "accepts_loras", "takes no LoRAs"),
        ({"output_classes": frozenset({"X"})}, "output_classes", "only to ComfyUI tools"),
        ({"outputs": ()}, "outputs", "at least one output"),
        ({"outputs": (OutputSpec("image", "image", node_id="9"),)}, "outputs[0].node_id", "name no node"),
        (
            {"inputs": (InputSpec("image", "image", tool().inputs[0].bindings),)},
            "inputs.image.bindings",
            "bind to no workflow",
        ),
        ({"inputs": (InputSpec("n", "integer", (), many=True),)}, "inputs.n.many", "only image inputs"),
        ({"inputs": (InputSpec("i", "image", (), max_items=3),)}, "inputs.i.max_items", "many: true"),
        (
            {"inputs": (InputSpec("i", "image", (), many=True, max_items=0),)},
            "inputs.i.max_items",
            "positive",
        ),
        (
            {"inputs": (InputSpec("i", "image", (), many=True, default=[]),)},
            "inputs.i.default",
            "at least one image reference",
        ),
    ],
)
def test_bad_local_tool(changes: dict[str, Any], field: str, fragment: str) -> None:
    err = definition_error(local_tool(**changes))
    assert err.field == field
    assert fragment in err.reason


def test_comfyui_tool_without_workflow_outputs_is_refused_as_comfyui() -> None:
    err = definition_error(local_tool(kind="comfyui"))
    assert err.field == "workflow"


# ------------------------------------------------------------------ bind_inputs for local tools


def test_bind_local_tool() -> None:
    bound = bind_inputs(local_tool(), {"images": ["upload:a", "output:b"], "title": "Sheet"}, random_seed=1)
    assert bound.workflow == {}
    assert bound.required_models == ()
    assert bound.inputs == {"images": ["upload:a", "output:b"], "columns": 2, "title": "Sheet"}
    assert bound.input_images == {"images": ["upload:a", "output:b"]}
    assert bound.input_images["images"] is not bound.inputs["images"]


def test_bind_local_tool_optional_absent_is_none() -> None:
    bound = bind_inputs(local_tool(), {"images": ["upload:a"]}, random_seed=1)
    assert bound.inputs["title"] is None


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("upload:a", "expected a list of image references, got string"),
        ([], "at least one image reference"),
        (["upload:a"] * 5, "too many images (5, the limit is 4)"),
        (["upload:a", ""], "item 1: an image reference must not be empty"),
        (["upload:a", 3], "item 1: expected a string, got integer"),
        ({"a": 1}, "got object"),
    ],
)
def test_bind_many_refusals(value: object, fragment: str) -> None:
    with pytest.raises(ToolInputError) as info:
        bind_inputs(local_tool(), {"images": value}, random_seed=1)
    assert info.value.field == "images"
    assert fragment in info.value.reason
    assert info.value.errors[0].field == "inputs.images"


def test_many_default_limit() -> None:
    spec = local_tool(inputs=(InputSpec("images", "image", (), required=True, many=True),))
    bind_inputs(spec, {"images": ["upload:x"] * DEFAULT_MAX_ITEMS}, random_seed=1)
    with pytest.raises(ToolInputError):
        bind_inputs(spec, {"images": ["upload:x"] * (DEFAULT_MAX_ITEMS + 1)}, random_seed=1)


@given(st.lists(st.text(min_size=1, max_size=20).filter(lambda t: t.isprintable()), min_size=1, max_size=4))
def test_property_many_lists_bind_as_given(refs: list[str]) -> None:
    bound = bind_inputs(local_tool(), {"images": refs}, random_seed=1)
    assert bound.input_images["images"] == refs
    assert bound.inputs["images"] == refs


# ------------------------------------------------------------------ schema


def test_input_schema_many_is_an_array() -> None:
    prop = input_schema(local_tool())["properties"]["images"]
    assert prop["type"] == "array"
    assert prop["minItems"] == 1 and prop["maxItems"] == 4
    assert prop["items"]["type"] == "string" and prop["items"]["minLength"] == 1
    assert prop["x-input-type"] == "image" and prop["x-many"] is True
    single = input_schema(tool())["properties"]["image"]
    assert single["type"] == "string" and "x-many" not in single


# ------------------------------------------------------------------ JSON form


def test_round_trip_with_outputs_and_kind() -> None:
    spec = tool(outputs=(OutputSpec("image", "image", node_id="9", many=True, description="Batch"),))
    data = tool_to_dict(spec)
    assert data["kind"] == "comfyui"
    assert data["outputs"] == [
        {"name": "image", "type": "image", "node_id": "9", "many": True, "description": "Batch"}
    ]
    assert tool_from_dict(json.loads(json.dumps(data))) == spec


def test_round_trip_local_tool() -> None:
    spec = local_tool()
    data = tool_to_dict(spec)
    assert data["kind"] == "image" and data["workflow"] == {} and data["pool"] == "control"
    assert data["inputs"][0]["many"] is True and data["inputs"][0]["max_items"] == 4
    assert data["inputs"][0]["bindings"] == []
    assert "many" not in data["inputs"][1]
    assert data["outputs"] == [{"name": "image", "type": "image", "description": "The sheet"}]
    assert tool_from_dict(json.loads(json.dumps(data))) == spec


def test_comfyui_without_outputs_derives_them() -> None:
    data = tool_to_dict(tool())
    del data["outputs"], data["kind"]
    spec = tool_from_dict(data)
    assert spec.kind == "comfyui"
    assert spec.outputs == comfy_outputs(graph())
    validate_tool(spec)


def test_local_tool_json_defaults() -> None:
    spec = tool_from_dict(
        {
            "slug": "caption",
            "name": "Caption",
            "category": "text",
            "base_model": "other",
            "kind": "llm",
            "inputs": [{"name": "image", "type": "image", "required": True}],
            "outputs": [{"name": "text", "type": "text"}],
        }
    )
    assert (spec.workflow, spec.pool, spec.accepts_loras) == ({}, "control", False)
    assert spec.inputs[0].bindings == ()
    validate_tool(spec)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": "shell"}, "kind"),
        ({"outputs": {"image": "image"}}, "outputs"),
        ({"outputs": ["image"]}, "outputs[0]"),
        ({"outputs": [{"name": "image"}]}, "outputs[0].type"),
        ({"outputs": [{"type": "image"}]}, "outputs[0].name"),
        ({"outputs": [{"name": "image", "type": "picture"}]}, "outputs[0].type"),
        ({"outputs": [{"name": "image", "type": "image", "node": "9"}]}, "outputs[0].node"),
        ({"outputs": [{"name": "image", "type": "image", "node_id": 9}]}, "outputs[0].node_id"),
        ({"outputs": [{"name": "image", "type": "image", "many": 1}]}, "outputs[0].many"),
        ({"outputs": [{"name": "image", "type": "image", "description": None}]}, "outputs[0].description"),
        ({"outputs": [{"name": 1, "type": "image"}]}, "outputs[0].name"),
    ],
)
def test_from_dict_bad_outputs(changes: dict[str, Any], field: str) -> None:
    data = {**tool_to_dict(tool()), **changes}
    with pytest.raises(ToolDefinitionError) as info:
        tool_from_dict(data)
    assert info.value.field == field


def test_from_dict_local_kind_requires_outputs_and_comfyui_a_workflow() -> None:
    data = tool_to_dict(local_tool())
    del data["outputs"]
    with pytest.raises(ToolDefinitionError) as info:
        tool_from_dict(data)
    assert info.value.field == "outputs"
    data = tool_to_dict(tool())
    del data["workflow"]
    with pytest.raises(ToolDefinitionError) as info:
        tool_from_dict(data)
    assert info.value.field == "workflow"
    data = tool_to_dict(tool())
    del data["inputs"][0]["bindings"]
    with pytest.raises(ToolDefinitionError) as info:
        tool_from_dict(data)
    assert info.value.field == "inputs[0].bindings"


@pytest.mark.parametrize(("key", "value"), [("many", "yes"), ("max_items", 2.5)])
def test_from_dict_bad_many_fields(key: str, value: object) -> None:
    data = tool_to_dict(local_tool())
    data["inputs"][0][key] = value
    with pytest.raises(ToolDefinitionError) as info:
        tool_from_dict(data)
    assert info.value.field == f"inputs[0].{key}"


# ------------------------------------------------------------------ the bundled catalog


def test_catalog_declares_an_image_output_on_each_tool() -> None:
    for spec in bundled_tools():
        assert spec.kind == "comfyui"
        assert [o.name for o in spec.outputs] == ["image"]
        out = spec.outputs[0]
        assert out.type == "image"
        assert out.node_id is not None and spec.workflow[out.node_id]["class_type"] == "SaveImage"
    sdxl = {s.slug: s for s in bundled_tools()}["sdxl-txt2img"]
    assert tool_to_dict(sdxl)["outputs"][0] == {
        "name": "image", "type": "image", "node_id": "9", "description": "The generated image",
    }  # fmt: skip
