from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmstation.domain.tools import (
    BASE_MODELS,
    DEFAULT_STRING_MAX_LENGTH,
    INPUT_TYPES,
    SEED_MAX,
    BoundJob,
    InputBinding,
    InputSpec,
    OutputSpec,
    ToolDefinitionError,
    ToolInputError,
    ToolSpec,
    bind_inputs,
    input_schema,
    tool_from_dict,
    tool_to_dict,
    validate_tool,
)
from swarmstation.domain.workflow import ModelRef


def graph() -> dict[str, Any]:
    return {
        "4": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "template prompt", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "template negative", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "10": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 0,
                "steps": 20,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "swarmstation", "images": ["8", 0]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
    }


def b(target: str) -> tuple[InputBinding, ...]:
    node_id, _, input_name = target.partition(".")
    return (InputBinding(node_id, input_name),)


def inputs() -> tuple[InputSpec, ...]:
    return (
        InputSpec("prompt", "string", b("6.text"), required=True, description="What to draw"),
        InputSpec("negative_prompt", "string", b("7.text"), default=""),
        InputSpec("seed", "seed", b("3.seed")),
        InputSpec("width", "integer", b("5.width"), minimum=64, maximum=2048, default=512),
        InputSpec("height", "integer", b("5.height"), minimum=64, maximum=2048, default=512),
        InputSpec("steps", "integer", b("3.steps"), minimum=1, maximum=150, default=20),
        InputSpec("cfg", "number", b("3.cfg"), minimum=0, maximum=30, default=7.0),
        InputSpec("sampler", "string", b("3.sampler_name"), choices=("euler", "dpmpp_2m"), default="euler"),
        InputSpec("image", "image", b("10.image")),
        InputSpec("batch", "integer", b("5.batch_size"), minimum=1, maximum=4),
    )


def tool(**changes: Any) -> ToolSpec:
    spec = ToolSpec(
        slug="test-tool",
        name="Test tool",
        description="A tool for tests",
        category="text-to-image",
        base_model="SD1.5",
        workflow=graph(),
        inputs=inputs(),
        outputs=(OutputSpec("image", "image", node_id="9"),),
    )
    return dataclasses.replace(spec, **changes)


def with_input(input_name: str, /, **changes: Any) -> ToolSpec:
    spec = tool()
    return dataclasses.replace(
        spec,
        inputs=tuple(dataclasses.replace(i, **changes) if i.name == input_name else i for i in spec.inputs),
    )


def definition_error(spec: ToolSpec) -> ToolDefinitionError:
    with pytest.raises(ToolDefinitionError) as info:
        validate_tool(spec)
    assert str(info.value) == f"{info.value.field}: {info.value.reason}"
    return info.value


def input_error(spec: ToolSpec, raw: Any) -> ToolInputError:
    with pytest.raises(ToolInputError) as info:
        bind_inputs(spec, raw, random_seed=1)
    return info.value


# ------------------------------------------------------------------ validate_tool


def test_valid_tool_passes() -> None:
    validate_tool(tool())


def test_constants() -> None:
    assert set(INPUT_TYPES) == {"string", "integer", "number", "boolean", "image", "seed"}
    assert {"SD1.5", "SDXL", "FLUX", "other"} <= set(BASE_MODELS)
    assert SEED_MAX == 0xFFFFFFFFFFFFFFFF


@pytest.mark.parametrize("slug", ["a", "A-tool", "-tool", "my_tool", "tool!", "x" * 64, "tool\n", "", "tööl"])
def test_bad_slug(slug: str) -> None:
    err = definition_error(tool(slug=slug))
    assert err.field == "slug"
    assert "a-z, 0-9 and '-'" in err.reason


@pytest.mark.parametrize("slug", ["ab", "sd15-txt2img", "4x-upscale", "x" * 63])
def test_good_slug(slug: str) -> None:
    validate_tool(tool(slug=slug))


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"name": "  "}, "name", "must not be empty"),
        ({"name": "n" * 201}, "name", "longer than 200"),
        ({"base_model": "SD9"}, "base_model", "'SD9' is not one of"),
        ({"category": "Text To Image"}, "category", "lower-case slug"),
        ({"pool": ""}, "pool", "lower-case name"),
        ({"output_classes": frozenset({""})}, "output_classes", "non-empty class names"),
    ],
)
def test_bad_metadata(changes: dict[str, Any], field: str, fragment: str) -> None:
    err = definition_error(tool(**changes))
    assert err.field == field
    assert fragment in err.reason


def test_invalid_workflow_problems_in_reason() -> None:
    wf = graph()
    wf["3"]["inputs"]["model"] = ["99", 0]
    err = definition_error(tool(workflow=wf))
    assert err.field == "workflow"
    assert err.reason == "node '3': input 'model' links to missing node '99'"


def test_workflow_must_have_output_unless_declared() -> None:
    wf = graph()
    wf["9"]["class_type"] = "FancySave"
    wf["11"]["class_type"] = "FancySave"
    err = definition_error(tool(workflow=wf))
    assert "no output node" in err.reason
    validate_tool(tool(workflow=wf, output_classes=frozenset({"FancySave"})))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../sd.safetensors", "node '4': model name '../sd.safetensors' contains a '..' segment"),
        ("/abs/sd.safetensors", "node '4': model name '/abs/sd.safetensors' is an absolute path"),
        ("./sd.safetensors", "node '4': model name './sd.safetensors' should be written 'sd.safetensors'"),
    ],
)
def test_bad_model_name_in_workflow(name: str, reason: str) -> None:
    wf = graph()
    wf["4"]["inputs"]["ckpt_name"] = name
    err = definition_error(tool(workflow=wf))
    assert (err.field, err.reason) == ("workflow", reason)


def test_binding_to_missing_node() -> None:
    err = definition_error(with_input("steps", bindings=b("99.steps")))
    assert err.field == "inputs.steps.bindings[0]"
    assert err.reason == "node '99' does not exist in the workflow"


def test_binding_to_missing_input() -> None:
    err = definition_error(with_input("steps", bindings=b("3.step")))
    assert err.field == "inputs.steps.bindings[0]"
    assert err.reason == "node '3' (KSampler) has no input 'step'"


def test_binding_to_linked_input() -> None:
    err = definition_error(with_input("prompt", bindings=b("6.clip")))
    assert err.field == "inputs.prompt.bindings[0]"
    assert "is linked from node '4'" in err.reason


def test_two_inputs_binding_the_same_target() -> None:
    err = definition_error(with_input("height", bindings=b("5.width")))
    assert err.field == "inputs.height.bindings[0]"
    assert err.reason == "input 'width' of node '5' is already bound by input 'width'"


def test_input_without_bindings() -> None:
    err = definition_error(with_input("steps", bindings=()))
    assert err.field == "inputs.steps.bindings"


def test_duplicate_input_name() -> None:
    spec = tool()
    spec = dataclasses.replace(spec, inputs=(*spec.inputs, InputSpec("steps", "integer", b("5.batch_size"))))
    err = definition_error(spec)
    assert (err.field, err.reason) == ("inputs.steps.name", "input 'steps' is defined twice")


@pytest.mark.parametrize("name", ["", "1st", "has space", "dash-name", "x" * 65])
def test_bad_input_name(name: str) -> None:
    err = definition_error(with_input("steps", name=name))
    assert err.field.endswith(".name")
    assert "identifier" in err.reason


@pytest.mark.parametrize(
    ("name", "changes", "field", "fragment"),
    [
        ("steps", {"type": "float"}, "inputs.steps.type", "is not one of"),
        ("steps", {"default": 500}, "inputs.steps.default", "500 is out of range (the maximum is 150)"),
        ("steps", {"default": True}, "inputs.steps.default", "expected an integer, got boolean"),
        ("steps", {"default": "20"}, "inputs.steps.default", "expected an integer, got string"),
        ("steps", {"minimum": 10, "maximum": 5, "default": None}, "inputs.steps.minimum", "greater than"),
        ("steps", {"max_length": 5}, "inputs.steps.max_length", "does not apply"),
        ("prompt", {"minimum": 1}, "inputs.prompt.minimum", "does not apply"),
        ("prompt", {"max_length": 0}, "inputs.prompt.max_length", "positive integer"),
        ("prompt", {"default": "x"}, "inputs.prompt.default", "a required input cannot have a default"),
        (
            "negative_prompt",
            {"max_length": 3, "default": "toolong"},
            "inputs.negative_prompt.default",
            "too long",
        ),
        ("sampler", {"choices": ()}, "inputs.sampler.choices", "non-empty"),
        ("sampler", {"choices": ("euler", 3)}, "inputs.sampler.choices[1]", "expected a string"),
        ("sampler", {"choices": ("euler", "euler")}, "inputs.sampler.choices[1]", "listed twice"),
        ("sampler", {"default": "heun"}, "inputs.sampler.default", "is not one of the choices"),
        ("seed", {"choices": (1, 2)}, "inputs.seed.choices", "do not apply"),
        ("seed", {"default": 2**64}, "inputs.seed.default", "out of range"),
        ("seed", {"minimum": -5}, "inputs.seed.maximum", None),
        ("seed", {"minimum": 2**64}, "inputs.seed.maximum", "no valid seed"),
        ("cfg", {"maximum": float("inf")}, "inputs.cfg.maximum", "finite"),
        ("image", {"default": ""}, "inputs.image.default", "must not be empty"),
    ],
)
def test_bad_input_spec(name: str, changes: dict[str, Any], field: str, fragment: str | None) -> None:
    spec = with_input(name, **changes)
    if fragment is None:  # a seed minimum below 0 is simply clamped to 0
        validate_tool(spec)
        return
    err = definition_error(spec)
    assert err.field == field
    assert fragment in err.reason


# ------------------------------------------------------------------ bind_inputs


def test_bind_happy_path() -> None:
    spec = tool()
    job = bind_inputs(
        spec,
        {
            "prompt": "a red fox",
            "seed": 1234,
            "width": 768,
            "cfg": 5,
            "image": "uploads/ab/cd.png",
            "sampler": "dpmpp_2m",
        },
        random_seed=99,
    )
    assert isinstance(job, BoundJob)
    wf = job.workflow
    assert wf["6"]["inputs"]["text"] == "a red fox"
    assert wf["7"]["inputs"]["text"] == ""  # default
    assert wf["3"]["inputs"]["seed"] == 1234
    assert wf["5"]["inputs"]["width"] == 768
    assert wf["5"]["inputs"]["height"] == 512
    assert wf["3"]["inputs"]["cfg"] == 5.0
    assert type(wf["3"]["inputs"]["cfg"]) is float
    assert wf["3"]["inputs"]["sampler_name"] == "dpmpp_2m"
    assert wf["10"]["inputs"]["image"] == "uploads/ab/cd.png"
    assert wf["5"]["inputs"]["batch_size"] == 1  # no default: template literal kept
    assert job.inputs == {
        "prompt": "a red fox",
        "negative_prompt": "",
        "seed": 1234,
        "width": 768,
        "height": 512,
        "steps": 20,
        "cfg": 5.0,
        "sampler": "dpmpp_2m",
        "image": "uploads/ab/cd.png",
        "batch": 1,
    }
    assert job.input_images == {"image": "uploads/ab/cd.png"}
    assert job.required_models == (ModelRef("checkpoints", "v1-5-pruned-emaonly.safetensors"),)


def test_bind_never_mutates_template() -> None:
    spec = tool()
    before = copy.deepcopy(dict(spec.workflow))
    job = bind_inputs(spec, {"prompt": "x", "width": 1024, "steps": 3}, random_seed=5)
    assert spec.workflow == before
    job.workflow["3"]["inputs"]["model"][1] = 9  # the result shares nothing with the template
    assert spec.workflow == before


def test_bind_writes_to_every_binding() -> None:
    spec = with_input("width", bindings=(InputBinding("5", "width"), InputBinding("5", "height")))
    spec = dataclasses.replace(spec, inputs=tuple(i for i in spec.inputs if i.name != "height"))
    validate_tool(spec)
    job = bind_inputs(spec, {"prompt": "x", "width": 640}, random_seed=0)
    assert job.workflow["5"]["inputs"]["width"] == 640
    assert job.workflow["5"]["inputs"]["height"] == 640


def test_unknown_input() -> None:
    err = input_error(tool(), {"prompt": "x", "stpes": 3})
    assert err.field == "stpes"
    assert err.reason.startswith("unknown input")
    assert str(err) == f"stpes: {err.reason}"


def test_body_not_an_object() -> None:
    err = input_error(tool(), ["prompt"])
    assert err.field == ""
    assert "must be a JSON object" in str(err)


@pytest.mark.parametrize("raw", [{}, {"prompt": None}, {"width": 512}])
def test_missing_required(raw: dict[str, Any]) -> None:
    err = input_error(tool(), raw)
    assert (err.field, err.reason) == ("prompt", "is required")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("width", True, "expected an integer, got boolean"),
        ("width", False, "expected an integer, got boolean"),
        ("width", "512", "expected an integer, got string"),
        ("width", 512.5, "expected an integer, got 512.5"),
        ("width", [512], "expected an integer, got array"),
        ("cfg", True, "expected a number, got boolean"),
        ("cfg", "7", "expected a number, got string"),
        ("cfg", float("nan"), "expected a finite number, got nan"),
        ("prompt", 5, "expected a string, got integer"),
        ("prompt", {"text": "x"}, "expected a string, got object"),
        ("seed", True, "expected an integer, got boolean"),
        ("seed", "42", "expected an integer, got string"),
        ("image", 5, "expected a string, got integer"),
        ("image", "", "an image reference must not be empty"),
    ],
)
def test_wrong_type(field: str, value: object, reason: str) -> None:
    raw: dict[str, Any] = {"prompt": "x", field: value}
    err = input_error(tool(), raw)
    assert (err.field, err.reason) == (field, reason)


def test_integral_float_accepted_for_integer() -> None:
    job = bind_inputs(tool(), {"prompt": "x", "width": 640.0}, random_seed=0)
    assert job.workflow["5"]["inputs"]["width"] == 640
    assert type(job.workflow["5"]["inputs"]["width"]) is int


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("width", 63, "63 is out of range (the minimum is 64)"),
        ("width", 2049, "2049 is out of range (the maximum is 2048)"),
        ("steps", 0, "0 is out of range (the minimum is 1)"),
        ("cfg", -0.5, "-0.5 is out of range (the minimum is 0)"),
        ("cfg", 30.01, "30.01 is out of range (the maximum is 30)"),
        ("seed", -2, "-2 is out of range (a seed is 0..18446744073709551615, or -1 for random)"),
        (
            "seed",
            2**64,
            "18446744073709551616 is out of range (a seed is 0..18446744073709551615, or -1 for random)",
        ),
    ],
)
def test_out_of_range(field: str, value: object, reason: str) -> None:
    err = input_error(tool(), {"prompt": "x", field: value})
    assert (err.field, err.reason) == (field, reason)


def test_range_edges_accepted() -> None:
    job = bind_inputs(
        tool(), {"prompt": "x", "width": 64, "height": 2048, "cfg": 30, "seed": SEED_MAX}, random_seed=0
    )
    assert job.inputs["seed"] == SEED_MAX
    assert job.workflow["5"]["inputs"]["height"] == 2048


def test_prompt_too_long() -> None:
    ok = "a" * DEFAULT_STRING_MAX_LENGTH
    assert bind_inputs(tool(), {"prompt": ok}, random_seed=0).inputs["prompt"] == ok
    err = input_error(tool(), {"prompt": ok + "a"})
    assert (err.field, err.reason) == ("prompt", "too long (10001 characters, the limit is 10000)")


def test_explicit_max_length() -> None:
    spec = with_input("negative_prompt", max_length=5)
    bind_inputs(spec, {"prompt": "x", "negative_prompt": "12345"}, random_seed=0)
    err = input_error(spec, {"prompt": "x", "negative_prompt": "123456"})
    assert err.reason == "too long (6 characters, the limit is 5)"


def test_image_reference_too_long() -> None:
    err = input_error(tool(), {"prompt": "x", "image": "k" * 1025})
    assert (err.field, err.reason) == ("image", "too long (1025 characters, the limit is 1024)")


def test_not_in_choices() -> None:
    err = input_error(tool(), {"prompt": "x", "sampler": "heun"})
    assert (err.field, err.reason) == ("sampler", "'heun' is not one of the choices: 'euler', 'dpmpp_2m'")


def test_boolean_input() -> None:
    spec = tool()
    wf = graph()
    wf["12"] = {"class_type": "SomeToggle", "inputs": {"enabled": False}}
    spec = dataclasses.replace(
        spec, workflow=wf, inputs=(*spec.inputs, InputSpec("enabled", "boolean", b("12.enabled")))
    )
    validate_tool(spec)
    assert bind_inputs(spec, {"prompt": "x", "enabled": True}, random_seed=0).workflow["12"]["inputs"][
        "enabled"
    ]
    err = input_error(spec, {"prompt": "x", "enabled": 1})
    assert (err.field, err.reason) == ("enabled", "expected a boolean, got integer")


@pytest.mark.parametrize("raw_seed", ["absent", None, -1, -1.0, ""])
def test_seed_random(raw_seed: object) -> None:
    raw: dict[str, Any] = {"prompt": "x"}
    if raw_seed != "absent":
        raw["seed"] = raw_seed
    for random_seed in (0, 7, 123456789, SEED_MAX):
        job = bind_inputs(tool(), raw, random_seed=random_seed)
        assert job.inputs["seed"] == random_seed
        assert job.workflow["3"]["inputs"]["seed"] == random_seed


@pytest.mark.parametrize("seed", [0, 1, 42, 2**63, SEED_MAX])
def test_seed_fixed(seed: int) -> None:
    job = bind_inputs(tool(), {"prompt": "x", "seed": seed}, random_seed=99)
    assert job.inputs["seed"] == seed
    assert job.workflow["3"]["inputs"]["seed"] == seed


def test_seed_fixed_default_used_when_absent() -> None:
    spec = with_input("seed", default=42)
    assert bind_inputs(spec, {"prompt": "x"}, random_seed=99).inputs["seed"] == 42
    assert bind_inputs(spec, {"prompt": "x", "seed": -1}, random_seed=99).inputs["seed"] == 99


def test_random_seed_reduced_into_range() -> None:
    assert bind_inputs(tool(), {"prompt": "x"}, random_seed=2**64 + 5).inputs["seed"] == 5
    assert bind_inputs(tool(), {"prompt": "x"}, random_seed=-1).inputs["seed"] == SEED_MAX
    spec = with_input("seed", minimum=10, maximum=19)
    for random_seed in range(100):
        seed = bind_inputs(spec, {"prompt": "x"}, random_seed=random_seed).inputs["seed"]
        assert seed == 10 + random_seed % 10
    with pytest.raises(TypeError):
        bind_inputs(tool(), {"prompt": "x"}, random_seed="1")  # type: ignore[arg-type]


def test_second_seed_input_gets_a_different_value() -> None:
    spec = tool()
    wf = graph()
    wf["12"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 0}}
    spec = dataclasses.replace(
        spec, workflow=wf, inputs=(*spec.inputs, InputSpec("seed2", "seed", b("12.noise_seed")))
    )
    validate_tool(spec)
    job = bind_inputs(spec, {"prompt": "x"}, random_seed=5)
    assert job.inputs["seed"] == 5
    assert job.inputs["seed2"] != 5
    assert 0 <= job.inputs["seed2"] <= SEED_MAX
    assert bind_inputs(spec, {"prompt": "x"}, random_seed=5).inputs == job.inputs  # deterministic


def test_bound_model_name_checked() -> None:
    spec = tool()
    spec = dataclasses.replace(
        spec, inputs=(*spec.inputs, InputSpec("checkpoint", "string", b("4.ckpt_name")))
    )
    validate_tool(spec)
    job = bind_inputs(spec, {"prompt": "x", "checkpoint": "sdxl/dream.safetensors"}, random_seed=0)
    assert job.required_models == (ModelRef("checkpoints", "sdxl/dream.safetensors"),)
    for bad in ("../../etc/passwd", "/abs.safetensors", "./x.safetensors"):
        err = input_error(spec, {"prompt": "x", "checkpoint": bad})
        assert err.field == "checkpoint"
        assert "not a valid model file name" in err.reason


@settings(max_examples=200, deadline=None)
@given(
    width=st.integers(64, 2048),
    height=st.integers(64, 2048),
    steps=st.integers(1, 150),
    cfg=st.floats(0, 30, allow_nan=False),
    seed=st.integers(0, SEED_MAX),
    prompt=st.text(max_size=300),
    random_seed=st.integers(0, SEED_MAX),
)
def test_property_bound_values_land_and_nothing_else_changes(
    width: int, height: int, steps: int, cfg: float, seed: int, prompt: str, random_seed: int
) -> None:
    spec = tool()
    template = copy.deepcopy(dict(spec.workflow))
    raw = {"prompt": prompt, "width": width, "height": height, "steps": steps, "cfg": cfg, "seed": seed}
    job = bind_inputs(spec, raw, random_seed=random_seed)
    targets = {
        ("6", "text"): prompt,
        ("5", "width"): width,
        ("5", "height"): height,
        ("3", "steps"): steps,
        ("3", "cfg"): cfg,
        ("3", "seed"): seed,
        ("7", "text"): "",
        ("3", "sampler_name"): "euler",
    }
    assert spec.workflow == template
    assert job.workflow.keys() == template.keys()
    for node_id, node in template.items():
        out = job.workflow[node_id]
        assert out["class_type"] == node["class_type"]
        assert out["inputs"].keys() == node["inputs"].keys()
        for name, value in node["inputs"].items():
            assert out["inputs"][name] == targets.get((node_id, name), value)
    assert {k: job.inputs[k] for k in raw} == raw


# ------------------------------------------------------------------ (de)serialisation


def test_round_trip() -> None:
    spec = tool(output_classes=frozenset({"B", "A"}), pool="gpu-24g")
    data = tool_to_dict(spec)
    assert data["output_classes"] == ["A", "B"]
    assert data["inputs"][0] == {
        "name": "prompt",
        "type": "string",
        "description": "What to draw",
        "required": True,
        "bindings": ["6.text"],
    }
    assert data["inputs"][7]["choices"] == ["euler", "dpmpp_2m"]
    text = json.dumps(data)
    again = tool_from_dict(json.loads(text))
    assert again == spec
    assert tool_to_dict(again) == data


def test_round_trip_dotted_node_id_uses_object_form() -> None:
    wf = graph()
    wf["6.1"] = wf.pop("6")
    wf["3"]["inputs"]["positive"] = ["6.1", 0]
    spec = with_input("prompt", bindings=(InputBinding("6.1", "text"),))
    spec = dataclasses.replace(spec, workflow=wf)
    validate_tool(spec)
    data = tool_to_dict(spec)
    assert data["inputs"][0]["bindings"] == [{"node_id": "6.1", "input_name": "text"}]
    assert tool_from_dict(json.loads(json.dumps(data))) == spec


def test_from_dict_defaults_and_copies() -> None:
    data: dict[str, Any] = {
        "slug": "x-tool",
        "name": "X",
        "category": "upscale",
        "base_model": "other",
        "workflow": graph(),
        "inputs": [{"name": "image", "type": "image", "bindings": ["10.image"]}],
    }
    spec = tool_from_dict(data)
    assert (spec.description, spec.pool, spec.output_classes) == ("", "default", frozenset())
    assert spec.inputs[0] == InputSpec("image", "image", (InputBinding("10", "image"),))
    data["workflow"]["10"]["inputs"]["image"] = "changed.png"
    assert spec.workflow["10"]["inputs"]["image"] == "example.png"
    validate_tool(spec)
    out = tool_to_dict(spec)
    out["workflow"]["10"]["inputs"]["image"] = "changed.png"
    assert spec.workflow["10"]["inputs"]["image"] == "example.png"


def _valid_dict() -> dict[str, Any]:
    return tool_to_dict(tool())


def _set(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = _valid_dict()
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


def _drop(key: str) -> dict[str, Any]:
    data = _valid_dict()
    del data[key]
    return data


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], ""),
        ("tool", ""),
        (_drop("slug"), "slug"),
        (_drop("workflow"), "workflow"),
        (_drop("inputs"), "inputs"),
        (_set(("slug",), 5), "slug"),
        (_set(("description",), None), "description"),
        (_set(("extra",), 1), "extra"),
        (_set(("workflow",), []), "workflow"),
        (_set(("inputs",), {}), "inputs"),
        (_set(("output_classes",), "SaveImage"), "output_classes"),
        (_set(("output_classes",), [1]), "output_classes"),
        (_set(("inputs", 0), "prompt"), "inputs[0]"),
        (_set(("inputs", 0, "name"), 5), "inputs[0].name"),
        (_set(("inputs", 0, "type"), "text"), "inputs[0].type"),
        (_set(("inputs", 0, "type"), ["string"]), "inputs[0].type"),
        (_set(("inputs", 0, "bindings"), "6.text"), "inputs[0].bindings"),
        (_set(("inputs", 0, "bindings"), ["6text"]), "inputs[0].bindings[0]"),
        (_set(("inputs", 0, "bindings"), [".text"]), "inputs[0].bindings[0]"),
        (_set(("inputs", 0, "bindings"), [6]), "inputs[0].bindings[0]"),
        (_set(("inputs", 0, "bindings"), [{"node_id": "6"}]), "inputs[0].bindings[0]"),
        (_set(("inputs", 0, "bindings"), [{"node_id": 6, "input_name": "text"}]), "inputs[0].bindings[0]"),
        (_set(("inputs", 0, "required"), "yes"), "inputs[0].required"),
        (_set(("inputs", 0, "description"), 1), "inputs[0].description"),
        (_set(("inputs", 0, "unknown"), 1), "inputs[0].unknown"),
        (_set(("inputs", 3, "minimum"), "64"), "inputs[3].minimum"),
        (_set(("inputs", 3, "maximum"), True), "inputs[3].maximum"),
        (_set(("inputs", 1, "max_length"), 5.0), "inputs[1].max_length"),
        (_set(("inputs", 7, "choices"), "euler"), "inputs[7].choices"),
    ],
)
def test_from_dict_wrong_shapes(data: Any, field: str) -> None:
    with pytest.raises(ToolDefinitionError) as info:
        tool_from_dict(data)
    assert info.value.field == field


def test_from_dict_missing_input_keys() -> None:
    for key in ("name", "type", "bindings"):
        data = _valid_dict()
        del data["inputs"][2][key]
        with pytest.raises(ToolDefinitionError) as info:
            tool_from_dict(data)
        assert (info.value.field, info.value.reason) == (f"inputs[2].{key}", "is required")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(
        [
            "slug",
            "name",
            "description",
            "category",
            "base_model",
            "pool",
            "output_classes",
            "inputs",
            "workflow",
        ]
    ),
    value=_json,
    input_key=st.sampled_from(
        [
            "name",
            "type",
            "bindings",
            "required",
            "default",
            "minimum",
            "maximum",
            "max_length",
            "choices",
            "description",
        ]
    ),
    input_value=_json,
)
def test_property_from_dict_only_raises_definition_errors(
    key: str, value: Any, input_key: str, input_value: Any
) -> None:
    for data in (_set((key,), value), _set(("inputs", 1, input_key), input_value)):
        try:
            spec = tool_from_dict(data)
        except ToolDefinitionError:
            continue
        try:
            validate_tool(spec)
        except ToolDefinitionError:
            continue
        bind_inputs(
            spec,
            {"prompt": "x"} if any(i.name == "prompt" and i.required for i in spec.inputs) else {},
            random_seed=1,
        )


# ------------------------------------------------------------------ input_schema


def test_input_schema() -> None:
    schema = input_schema(tool())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["prompt"]
    props = schema["properties"]
    assert list(props) == [i.name for i in inputs()]
    assert props["prompt"] == {
        "description": "What to draw",
        "type": "string",
        "maxLength": DEFAULT_STRING_MAX_LENGTH,
        "x-input-type": "string",
    }
    assert props["width"] == {
        "type": "integer",
        "minimum": 64,
        "maximum": 2048,
        "default": 512,
        "x-input-type": "integer",
    }
    assert props["cfg"]["type"] == "number"
    assert props["cfg"]["default"] == 7.0
    assert props["sampler"]["enum"] == ["euler", "dpmpp_2m"]
    assert props["image"]["minLength"] == 1
    assert props["image"]["x-input-type"] == "image"
    assert props["seed"]["default"] == -1
    assert props["seed"]["anyOf"][0] == {"type": "integer", "minimum": 0, "maximum": SEED_MAX}
    assert {"type": "null"} in props["seed"]["anyOf"]
    assert "default" not in props["batch"]
    json.dumps(schema)  # JSON-serialisable
