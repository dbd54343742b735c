"""The pipeline wire form (domain/pipelines/spec.py): reading, writing, round trips and the shape
errors, each naming its field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmstation.domain.errors import InvalidInput
from swarmstation.domain.pipelines import (
    FromInput,
    FromStep,
    LiteralValue,
    Pipeline,
    PipelineError,
    PipelineInput,
    Step,
    Variations,
    output_steps,
    pipeline_from_dict,
    pipeline_to_dict,
)

CONTRACT_EXAMPLE: dict[str, Any] = {
    "inputs": {
        "idea": {"type": "string", "required": True, "default": None, "label": "Idea", "description": ""}
    },
    "steps": {
        "gen": {
            "tool": "sdxl-txt2img",
            "inputs": {"prompt": {"input": "idea"}, "seed": 7},
            "variations": {"count": 4},
        },
        "big": {"tool": "upscale-4x", "inputs": {"image": {"from": "gen", "output": "image"}}},
    },
    "outputs": ["big"],
}


def test_the_contract_example_reads_as_typed_sources_and_round_trips_exactly() -> None:
    p = pipeline_from_dict(copy.deepcopy(CONTRACT_EXAMPLE))
    assert p == Pipeline(
        inputs={"idea": PipelineInput("idea", "string", required=True, default=None, label="Idea")},
        steps={
            "gen": Step(
                "gen",
                "sdxl-txt2img",
                {"prompt": FromInput("idea"), "seed": LiteralValue(7)},
                Variations(count=4),
            ),
            "big": Step("big", "upscale-4x", {"image": FromStep("gen", "image")}),
        },
        outputs=("big",),
    )
    assert pipeline_to_dict(p) == CONTRACT_EXAMPLE


def test_the_short_form_of_the_issue_fills_defaults() -> None:
    p = pipeline_from_dict(
        {
            "inputs": {"idea": {"type": "string"}},
            "steps": {
                "gen": {"tool": "sdxl-txt2img", "inputs": {"prompt": {"input": "idea"}, "seed": 7}},
                "big": {"tool": "upscale-4x", "inputs": {"image": {"from": "gen", "output": "image"}}},
            },
        }
    )
    assert p.inputs["idea"] == PipelineInput("idea", "string")
    assert p.outputs == ()
    assert output_steps(p) == ("big",)
    assert "outputs" not in pipeline_to_dict(p)
    assert pipeline_from_dict(pipeline_to_dict(p)) == p


def test_list_literals_and_value_variations_are_immutable_inside_and_lists_outside() -> None:
    data = {
        "steps": {
            "sheet": {"tool": "contact-sheet", "inputs": {"images": ["upload:a", "upload:b"]}},
            "gen": {"tool": "t", "inputs": {}, "variations": {"input": "steps", "values": [10, 20]}},
        }
    }
    p = pipeline_from_dict(data)
    assert p.steps["sheet"].inputs["images"] == LiteralValue(("upload:a", "upload:b"))
    assert p.steps["gen"].variations == Variations(count=2, input="steps", values=(10, 20))
    out = pipeline_to_dict(p)
    assert out["steps"]["sheet"]["inputs"]["images"] == ["upload:a", "upload:b"]
    assert out["steps"]["gen"]["variations"] == {"input": "steps", "values": [10, 20]}


def test_output_steps_default_to_the_steps_nothing_consumes() -> None:
    p = pipeline_from_dict(
        {
            "steps": {
                "a": {"tool": "t"},
                "b": {"tool": "u", "inputs": {"image": {"from": "a", "output": "image"}}},
                "c": {"tool": "u", "inputs": {"image": {"from": "a", "output": "image"}}},
                "lone": {"tool": "t", "inputs": None},
            }
        }
    )
    assert output_steps(p) == ("b", "c", "lone")


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ([], "", "a pipeline is an object"),
        ({"steps": {}}, "steps", "non-empty"),
        ({"steps": []}, "steps", "non-empty"),
        ({"steps": {"a": {"tool": "t"}}, "extra": 1}, "extra", "unknown field"),
        ({"steps": {"a b": {"tool": "t"}}}, "steps.a b", "not a valid step id"),
        ({"steps": {"9a": {"tool": "t"}}}, "steps.9a", "not a valid step id"),
        ({"steps": {"a": "t"}}, "steps.a", "expected an object"),
        ({"steps": {"a": {"tool": ""}}}, "steps.a.tool", "must name a tool"),
        ({"steps": {"a": {}}}, "steps.a.tool", "must name a tool"),
        ({"steps": {"a": {"tool": "t", "when": 1}}}, "steps.a.when", "unknown field"),
        ({"steps": {"a": {"tool": "t", "inputs": [1]}}}, "steps.a.inputs", "expected an object"),
        ({"steps": {"a": {"tool": "t", "inputs": {"x": {"from": "b"}}}}}, "steps.a.inputs.x", '"output"'),
        ({"steps": {"a": {"tool": "t", "inputs": {"x": {"input": 3}}}}}, "steps.a.inputs.x", '"input"'),
        (
            {"steps": {"a": {"tool": "t", "inputs": {"x": {"from": "", "output": "o"}}}}},
            "steps.a.inputs.x",
            '"from"',
        ),
        ({"steps": {"a": {"tool": "t", "inputs": {"x": {"k": 1}}}}}, "steps.a.inputs.x", "must be one of"),
        ({"steps": {"a": {"tool": "t", "variations": 3}}}, "steps.a.variations", '{"count": N}'),
        ({"steps": {"a": {"tool": "t", "variations": {}}}}, "steps.a.variations", '{"count": N}'),
        (
            {"steps": {"a": {"tool": "t", "variations": {"count": 0}}}},
            "steps.a.variations.count",
            "at least 1",
        ),
        (
            {"steps": {"a": {"tool": "t", "variations": {"count": True}}}},
            "steps.a.variations.count",
            "integer",
        ),
        ({"steps": {"a": {"tool": "t", "variations": {"seeds": 2}}}}, "steps.a.variations.seeds", "unknown"),
        (
            {"steps": {"a": {"tool": "t", "variations": {"input": "x"}}}},
            "steps.a.variations.values",
            "non-empty",
        ),
        (
            {"steps": {"a": {"tool": "t", "variations": {"input": "x", "values": [1], "count": 2}}}},
            "steps.a.variations.count",
            "2 but there are 1",
        ),
        ({"inputs": [], "steps": {"a": {"tool": "t"}}}, "inputs", "expected an object"),
        ({"inputs": {"-x": {"type": "string"}}, "steps": {"a": {"tool": "t"}}}, "inputs.-x", "not a valid"),
        ({"inputs": {"x": "string"}, "steps": {"a": {"tool": "t"}}}, "inputs.x", "expected an object"),
        (
            {"inputs": {"x": {"type": "video"}}, "steps": {"a": {"tool": "t"}}},
            "inputs.x.type",
            "not an input type",
        ),
        ({"inputs": {"x": {}}, "steps": {"a": {"tool": "t"}}}, "inputs.x.type", "not an input type"),
        (
            {"inputs": {"x": {"type": "string", "required": 1}}, "steps": {"a": {"tool": "t"}}},
            "inputs.x.required",
            "boolean",
        ),
        (
            {"inputs": {"x": {"type": "string", "label": 3}}, "steps": {"a": {"tool": "t"}}},
            "inputs.x.label",
            "string",
        ),
        (
            {"inputs": {"x": {"type": "string", "min": 3}}, "steps": {"a": {"tool": "t"}}},
            "inputs.x.min",
            "unknown",
        ),
        ({"steps": {"a": {"tool": "t"}}, "outputs": "a"}, "outputs", "list of step ids"),
        ({"steps": {"a": {"tool": "t"}}, "outputs": ["a", "a"]}, "outputs", "twice"),
    ],
)
def test_shape_errors_name_their_field(data: Any, field: str, words: str) -> None:
    with pytest.raises(PipelineError) as info:
        pipeline_from_dict(data)
    err = info.value
    assert err.field == field
    assert err.errors[0].field == field
    assert words in err.reason
    assert err.code == "invalid_pipeline"
    assert isinstance(err, InvalidInput) and err.status_hint == 422
    assert "Traceback" not in str(err) and "<" not in err.reason


def test_an_input_error_names_the_step_and_port() -> None:
    with pytest.raises(PipelineError) as info:
        pipeline_from_dict({"steps": {"big": {"tool": "t", "inputs": {"image": {"from": "gen"}}}}})
    assert (info.value.step, info.value.port) == ("big", "image")
    assert str(info.value).startswith("steps.big.inputs.image: ")


# --------------------------------------------------------------------------- round trips

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,10}", fullmatch=True)
json_scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8)
literals = json_scalars | st.lists(st.text(max_size=5), min_size=1, max_size=3)
sources = (
    literals.filter(lambda v: v is not None)
    | st.builds(lambda n: {"input": n}, names)
    | st.builds(lambda s, o: {"from": s, "output": o}, names, names)
)
variations = (
    st.none()
    | st.builds(lambda n: {"count": n}, st.integers(1, 20))
    | st.builds(
        lambda n, vs: {"input": n, "values": vs}, names, st.lists(json_scalars, min_size=1, max_size=4)
    )
)


@st.composite
def wire_pipelines(draw: st.DrawFn) -> dict[str, Any]:
    inputs = {
        name: {
            "type": draw(st.sampled_from(["string", "integer", "number", "boolean", "image", "seed"])),
            "required": draw(st.booleans()),
            "default": draw(json_scalars),
            "label": draw(st.text(max_size=5)),
            "description": draw(st.text(max_size=5)),
        }
        for name in draw(st.lists(names, max_size=3, unique=True))
    }
    steps: dict[str, Any] = {}
    for sid in draw(st.lists(names, min_size=1, max_size=4, unique=True)):
        step: dict[str, Any] = {
            "tool": draw(st.from_regex(r"[a-z0-9][a-z0-9-]{1,8}", fullmatch=True)),
            "inputs": draw(st.dictionaries(names, sources, max_size=3)),
        }
        v = draw(variations)
        if v is not None:
            step["variations"] = v
        steps[sid] = step
    data: dict[str, Any] = {"inputs": inputs, "steps": steps}
    if draw(st.booleans()):
        data["outputs"] = draw(st.lists(st.sampled_from(sorted(steps)), unique=True, min_size=1))
    return data


@settings(max_examples=80, deadline=None)
@given(wire_pipelines())
def test_the_wire_form_round_trips(data: dict[str, Any]) -> None:
    p = pipeline_from_dict(data)
    assert pipeline_to_dict(p) == data
    assert pipeline_from_dict(pipeline_to_dict(p)) == p
