"""Validating pipelines (domain/pipelines/validate.py): every refusal names its field, step and
port; item counts under fan-out; a run's input values; properties over random graphs."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmstation.domain.pipelines import (
    Pipeline,
    PipelineError,
    PipelineInput,
    Step,
    check_run_inputs,
    item_counts,
    pipeline_from_dict,
    topological_order,
    validate_pipeline,
)
from swarmstation.domain.tools import ToolSpec, tool_from_dict
from tests.domain.pipeline_helpers import pipeline, tools

LIMITS = {"max_steps": 8, "max_items": 6}


def check(p: Pipeline, specs: dict[str, ToolSpec] | None = None, **kw: Any) -> tuple[str, ...]:
    return validate_pipeline(p, specs if specs is not None else tools(), **{**LIMITS, **kw})


def refused(p: Pipeline, **kw: Any) -> PipelineError:
    with pytest.raises(PipelineError) as info:
        check(p, **kw)
    err = info.value
    assert err.errors[0].field == err.field
    assert str(err) == f"{err.field}: {err.reason}"
    assert err.code == "invalid_pipeline" and err.status_hint == 422
    return err


CHAIN: dict[str, Any] = {
    "enhance": {"tool": "enhance", "inputs": {"idea": {"input": "idea"}}},
    "gen": {"tool": "txt2img", "inputs": {"prompt": {"from": "enhance", "output": "prompt"}, "seed": 7}},
    "big": {"tool": "upscale", "inputs": {"image": {"from": "gen", "output": "image"}}},
}
IDEA = {"idea": {"type": "string"}}


def with_step(sid: str, step: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    steps = json.loads(json.dumps(base if base is not None else CHAIN))
    steps[sid] = step
    return steps


def test_a_valid_chain_answers_a_topological_order() -> None:
    # Written out of order: the order follows the data.
    steps = {"big": CHAIN["big"], "gen": CHAIN["gen"], "enhance": CHAIN["enhance"]}
    assert check(pipeline(steps, IDEA)) == ("enhance", "gen", "big")
    assert item_counts(pipeline(steps, IDEA), tools()) == {"enhance": 1, "gen": 1, "big": 1}


def test_a_type_mismatch_names_the_step_the_port_and_both_types() -> None:
    steps = with_step(
        "big", {"tool": "upscale", "inputs": {"image": {"from": "enhance", "output": "prompt"}}}
    )
    err = refused(pipeline(steps, IDEA))
    assert err.field == "steps.big.inputs.image"
    assert (err.step, err.port) == ("big", "image")
    assert (
        err.reason == "step 'big' input 'image' (image) cannot take output 'prompt' of step 'enhance' (text)"
    )


@pytest.mark.parametrize(
    ("source_step", "port", "target", "target_port", "words"),
    [
        ("gen", "image", "enhance", "idea", "(string) cannot take output 'image' of step 's' (image)"),
        ("counter", "n", "txt2img", "seed", "(seed) cannot take output 'n' of step 's' (integer)"),
        (
            "batch",
            "images",
            "upscale",
            "image",
            "(image) cannot take output 'images' of step 's' (image list)",
        ),
    ],
)
def test_only_explicit_conversions_connect(
    source_step: str, port: str, target: str, target_port: str, words: str
) -> None:
    sources = {
        "gen": {"tool": "txt2img", "inputs": {"prompt": "x"}},
        "counter": {"tool": "counter", "inputs": {"n": 3}},
        "batch": {"tool": "batch", "inputs": {"prompt": "x"}},
    }
    inputs: dict[str, Any] = {target_port: {"from": "s", "output": port}}
    if target == "txt2img":
        inputs["prompt"] = "x"
    steps = {"s": sources[source_step], "t": {"tool": target, "inputs": inputs}}
    err = refused(pipeline(steps))
    assert err.field == f"steps.t.inputs.{target_port}"
    assert words in err.reason


def test_text_feeds_string_and_a_many_port_feeds_a_many_input() -> None:
    steps = {
        "cap": {"tool": "caption", "inputs": {"image": "upload:1"}},
        "gen": {"tool": "txt2img", "inputs": {"prompt": {"from": "cap", "output": "text"}}},
        "b": {"tool": "batch", "inputs": {"prompt": {"from": "cap", "output": "text"}}},
        "sheet": {"tool": "sheet", "inputs": {"images": {"from": "b", "output": "images"}}},
    }
    assert check(pipeline(steps)) == ("cap", "gen", "b", "sheet")


def test_a_cycle_is_refused_naming_the_steps_on_it() -> None:
    steps = {
        "start": {"tool": "txt2img", "inputs": {"prompt": "x"}},
        "a": {"tool": "img2img", "inputs": {"image": {"from": "b", "output": "image"}, "prompt": "x"}},
        "b": {"tool": "upscale", "inputs": {"image": {"from": "a", "output": "image"}}},
    }
    err = refused(pipeline(steps))
    assert err.field == "steps"
    assert str(err) == "steps: a cycle: a → b → a"
    three = {
        "a": {"tool": "upscale", "inputs": {"image": {"from": "c", "output": "image"}}},
        "b": {"tool": "upscale", "inputs": {"image": {"from": "a", "output": "image"}}},
        "c": {"tool": "upscale", "inputs": {"image": {"from": "b", "output": "image"}}},
    }
    assert refused(pipeline(three)).reason == "a cycle: a → b → c → a"
    selfish = {"a": {"tool": "upscale", "inputs": {"image": {"from": "a", "output": "image"}}}}
    err = refused(pipeline(selfish))
    assert (err.field, err.reason, err.step) == ("steps", "a cycle: a → a", "a")


def test_a_cycle_through_a_mismatched_port_is_named_as_a_cycle() -> None:
    steps = with_step("enhance", {"tool": "enhance", "inputs": {"idea": {"from": "big", "output": "image"}}})
    err = refused(pipeline(steps, IDEA))
    assert str(err) == "steps: a cycle: enhance → gen → big → enhance"


def test_tools_must_exist_and_be_available() -> None:
    err = refused(pipeline(with_step("big", {"tool": "upscale-8x", "inputs": {}}), IDEA))
    assert (err.field, err.step) == ("steps.big.tool", "big")
    assert err.reason == "step 'big': unknown tool 'upscale-8x'"
    err = refused(pipeline(CHAIN, IDEA), unavailable={"enhance": "no LLM endpoint is configured"})
    assert err.field == "steps.enhance.tool"
    assert err.reason == "step 'enhance': tool 'enhance' is unavailable: no LLM endpoint is configured"


@pytest.mark.parametrize(
    ("inputs", "field", "reason"),
    [
        (
            {"prompt": "x", "sampler": "euler"},
            "steps.g.inputs.sampler",
            "tool 'txt2img' has no input 'sampler'",
        ),
        (
            {"seed": 1},
            "steps.g.inputs.prompt",
            "step 'g' input 'prompt' is required: connect it or give a value",
        ),
        ({"prompt": "x", "steps": 0}, "steps.g.inputs.steps", "step 'g' input 'steps': 0 is out of range"),
        ({"prompt": "x", "steps": "ten"}, "steps.g.inputs.steps", "expected an integer, got string"),
        ({"prompt": 5}, "steps.g.inputs.prompt", "expected a string, got integer"),
        ({"prompt": ["a"]}, "steps.g.inputs.prompt", "expected a single value, got a list"),
        ({"prompt": "x", "seed": 2**64}, "steps.g.inputs.seed", "is out of range"),
        (
            {"prompt": {"input": "nope"}},
            "steps.g.inputs.prompt",
            "pipeline input 'nope', which does not exist",
        ),
        (
            {"prompt": {"input": "n"}},
            "steps.g.inputs.prompt",
            "(string) cannot take pipeline input 'n' (integer)",
        ),
        (
            {"prompt": {"from": "ghost", "output": "text"}},
            "steps.g.inputs.prompt",
            "step 'ghost', which does not",
        ),
        (
            {"prompt": {"from": "cap", "output": "words"}},
            "steps.g.inputs.prompt",
            "has no such output (its outputs: text)",
        ),
    ],
)
def test_step_input_errors_name_the_step_and_port(inputs: dict[str, Any], field: str, reason: str) -> None:
    steps = {
        "cap": {"tool": "caption", "inputs": {"image": "upload:1"}},
        "g": {"tool": "txt2img", "inputs": inputs},
    }
    err = refused(pipeline(steps, {"n": {"type": "integer"}}))
    assert err.field == field
    assert err.step == "g" and err.port == field.rsplit(".", 1)[1]
    assert reason in err.reason


def test_a_random_seed_literal_and_a_defaulted_required_input_are_accepted() -> None:
    steps = {
        "g": {"tool": "txt2img", "inputs": {"prompt": "x", "seed": -1}},
        "e": {"tool": "enhance", "inputs": {"idea": "y"}},  # style is required but has a default
    }
    assert check(pipeline(steps)) == ("g", "e")


def test_an_optional_pipeline_input_without_default_cannot_feed_a_required_input() -> None:
    steps = {"g": {"tool": "txt2img", "inputs": {"prompt": {"input": "p"}}}}
    err = refused(pipeline(steps, {"p": {"type": "string", "required": False}}))
    assert err.field == "steps.g.inputs.prompt"
    assert "pipeline input 'p' is optional with no default" in err.reason
    assert check(pipeline(steps, {"p": {"type": "string", "required": False, "default": "a cat"}})) == ("g",)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("https://example.com/cat.png", 'an image is a reference "upload:<id>"'),
        ("output:", 'an image is a reference "upload:<id>"'),
        (3, "got integer"),
    ],
)
def test_an_image_literal_must_be_a_reference(value: Any, words: str) -> None:
    err = refused(pipeline({"up": {"tool": "upscale", "inputs": {"image": value}}}))
    assert err.field == "steps.up.inputs.image" and words in err.reason
    assert check(pipeline({"up": {"tool": "upscale", "inputs": {"image": "output:abc"}}})) == ("up",)


def test_a_many_input_takes_a_list_of_one_to_max_items_references() -> None:
    ok = pipeline({"s": {"tool": "sheet", "inputs": {"images": ["upload:1", "output:2"]}}})
    assert check(ok) == ("s",)
    for value, words in [
        ("upload:1", "expected a list of image references"),
        ([], "expected 1 to 8 images, got 0"),
        ([f"upload:{i}" for i in range(9)], "expected 1 to 8 images, got 9"),
        (["upload:1", "nope"], "an image is a reference"),
    ]:
        err = refused(pipeline({"s": {"tool": "sheet", "inputs": {"images": value}}}))
        assert err.field == "steps.s.inputs.images" and words in err.reason


def test_too_many_steps() -> None:
    steps = {f"s{i}": {"tool": "txt2img", "inputs": {"prompt": "x"}} for i in range(9)}
    err = refused(pipeline(steps))
    assert (err.field, err.reason) == ("steps", "9 steps, the limit is 8")


def test_fan_out_counts_propagate_through_maps_and_stop_at_gathers() -> None:
    steps = {
        "gen": {"tool": "txt2img", "inputs": {"prompt": "x"}, "variations": {"count": 4}},
        "up": {"tool": "upscale", "inputs": {"image": {"from": "gen", "output": "image"}}},
        "cap": {"tool": "caption", "inputs": {"image": {"from": "up", "output": "image"}}},
        "sheet": {"tool": "sheet", "inputs": {"images": {"from": "up", "output": "image"}}},
        "after": {"tool": "upscale", "inputs": {"image": {"from": "sheet", "output": "image"}}},
        "both": {
            "tool": "img2img",
            "inputs": {
                "image": {"from": "up", "output": "image"},
                "prompt": {"from": "cap", "output": "text"},
            },
        },
    }
    p = pipeline(steps)
    assert check(p)
    assert item_counts(p, tools()) == {"gen": 4, "up": 4, "cap": 4, "sheet": 1, "after": 1, "both": 4}


def test_too_many_jobs_in_a_step() -> None:
    steps = {"gen": {"tool": "txt2img", "inputs": {"prompt": "x"}, "variations": {"count": 7}}}
    err = refused(pipeline(steps))
    assert (err.field, err.step) == ("steps.gen.variations", "gen")
    assert err.reason == "step 'gen' would run 7 jobs, the limit is 6 per step"
    # A gather bounded by the input's max_items: 8 images into a sheet is fine, the limit is per step.
    assert check(pipeline(steps), max_items=7)


def test_two_fanned_out_sources_of_different_sizes_cannot_feed_one_step() -> None:
    steps = {
        "a": {"tool": "txt2img", "inputs": {"prompt": "x"}, "variations": {"count": 2}},
        "c": {"tool": "caption", "inputs": {"image": {"from": "a", "output": "image"}}},
        "d": {
            "tool": "img2img",
            "inputs": {
                "image": {"from": "a", "output": "image"},
                "prompt": {"from": "cap3", "output": "text"},
            },
        },
        "cap3": {
            "tool": "caption",
            "inputs": {},
            "variations": {"input": "image", "values": ["upload:1", "upload:2", "upload:3"]},
        },
    }
    err = refused(pipeline(steps))
    assert (err.field, err.step, err.port) == ("steps.d.inputs.prompt", "d", "prompt")
    assert err.reason == (
        "step 'd' input 'prompt' takes the 3 items of step 'cap3', but input 'image' takes the 2 items "
        "of step 'a': fanned-out inputs must have the same number of items"
    )


def test_variations_errors() -> None:
    fanned = {
        "gen": {"tool": "txt2img", "inputs": {"prompt": "x"}, "variations": {"count": 2}},
        "up": {
            "tool": "img2img",
            "inputs": {"image": {"from": "gen", "output": "image"}, "prompt": "y"},
            "variations": {"count": 2},
        },
    }
    err = refused(pipeline(fanned))
    assert (err.field, err.port) == ("steps.up.variations", "image")
    assert "already fanned out by input 'image' (the 2 items of step 'gen')" in err.reason

    err = refused(pipeline({"n": {"tool": "noseed", "inputs": {"prompt": "x"}, "variations": {"count": 2}}}))
    assert err.field == "steps.n.variations"
    assert "tool 'noseed' has no seed input to vary" in err.reason

    bad = {"g": {"tool": "txt2img", "inputs": {"prompt": "x"}, "variations": {"input": "cfg", "values": [1]}}}
    err = refused(pipeline(bad))
    assert (err.field, err.port) == ("steps.g.variations.input", "cfg")
    assert "tool 'txt2img' has no input 'cfg'" in err.reason

    both = {
        "g": {
            "tool": "txt2img",
            "inputs": {"prompt": "x"},
            "variations": {"input": "prompt", "values": ["a"]},
        }
    }
    err = refused(pipeline(both))
    assert err.reason == "step 'g' input 'prompt' is given in both inputs and variations"

    value = {
        "g": {
            "tool": "txt2img",
            "inputs": {"prompt": "x"},
            "variations": {"input": "steps", "values": [5, 500]},
        }
    }
    err = refused(pipeline(value))
    assert err.field == "steps.g.variations.values.1"
    assert "step 'g' input 'steps', variation 1: 500 is out of range" in err.reason

    # The varied input satisfies a required input.
    varied = {"g": {"tool": "txt2img", "inputs": {}, "variations": {"input": "prompt", "values": ["a", "b"]}}}
    assert check(pipeline(varied)) == ("g",)

    edge = {
        "g": {"tool": "txt2img", "inputs": {"prompt": "x", "seed": 2**64 - 2}, "variations": {"count": 3}}
    }
    err = refused(pipeline(edge))
    assert err.field == "steps.g.inputs.seed" and "go past the seed's range" in err.reason


def test_pipeline_inputs_and_outputs_are_checked() -> None:
    p = Pipeline(
        inputs={"v": PipelineInput("v", "video")},  # type: ignore[arg-type]
        steps={"g": Step("g", "upscale", {})},
    )
    err = refused(p)
    assert err.field == "inputs.v.type" and "not an input type" in err.reason
    p = pipeline(
        {"g": {"tool": "txt2img", "inputs": {"prompt": "x"}}}, {"n": {"type": "integer", "default": "x"}}
    )
    err = refused(p)
    assert (err.field, err.port) == ("inputs.n.default", "n")
    err = refused(pipeline({"g": {"tool": "txt2img", "inputs": {"prompt": "x"}}}, outputs=["g", "h"]))
    assert (err.field, err.reason) == ("outputs.1", "'h' is not a step of the pipeline")


def test_check_run_inputs_fills_defaults_and_names_the_input() -> None:
    p = pipeline(
        {"g": {"tool": "txt2img", "inputs": {"prompt": {"input": "idea"}, "seed": {"input": "seed"}}}},
        {
            "idea": {"type": "string"},
            "seed": {"type": "seed", "required": False, "default": -1},
            "ref": {"type": "image", "required": False},
            "steps": {"type": "integer", "required": False, "default": 20},
        },
    )
    assert check_run_inputs(p, {"idea": "a cat"}) == {"idea": "a cat", "seed": -1, "steps": 20}
    assert check_run_inputs(p, {"idea": "a", "seed": 5, "ref": "upload:x", "steps": 3}) == {
        "idea": "a",
        "seed": 5,
        "ref": "upload:x",
        "steps": 3,
    }
    for values, field, words in [
        ({}, "inputs.idea", "is required"),
        (
            {"idea": "a", "mood": "x"},
            "inputs.mood",
            "unknown input (the pipeline's inputs: idea, seed, ref, steps)",
        ),
        ({"idea": 3}, "inputs.idea", "expected a string, got integer"),
        ({"idea": "a", "seed": 1.5}, "inputs.seed", "expected an integer"),
        ({"idea": "a", "ref": "/etc/passwd"}, "inputs.ref", "an image is a reference"),
        ({"idea": "a", "steps": True}, "inputs.steps", "expected an integer, got boolean"),
    ]:
        with pytest.raises(PipelineError) as info:
            check_run_inputs(p, values)
        assert info.value.field == field and words in info.value.reason
        assert info.value.port == field.split(".")[1]
    with pytest.raises(PipelineError) as info:
        check_run_inputs(p, [])  # type: ignore[arg-type]
    assert info.value.field == "inputs"


def test_the_issue_pipeline_on_the_real_catalog_and_local_tools() -> None:
    from swarmstation.localtools.registry import local_tools

    catalog = Path(__file__).parents[2] / "swarmstation" / "catalog"
    specs = {t.slug: t for t in (tool_from_dict(json.loads(f.read_text())) for f in catalog.glob("*.json"))}
    specs.update({slug: t.spec for slug, t in local_tools().items()})
    p = pipeline_from_dict(
        {
            "inputs": {"idea": {"type": "string"}},
            "steps": {
                "enhance": {"tool": "prompt-enhance", "inputs": {"idea": {"input": "idea"}}},
                "gen": {
                    "tool": "sdxl-txt2img",
                    "inputs": {"prompt": {"from": "enhance", "output": "prompt"}},
                },
                "big": {"tool": "upscale-4x", "inputs": {"image": {"from": "gen", "output": "image"}}},
            },
        }
    )
    assert validate_pipeline(p, specs, max_steps=10, max_items=16) == ("enhance", "gen", "big")
    bad = pipeline_from_dict(
        {
            "inputs": {"idea": {"type": "string"}},
            "steps": {
                "enhance": {"tool": "prompt-enhance", "inputs": {"idea": {"input": "idea"}}},
                "big": {"tool": "upscale-4x", "inputs": {"image": {"from": "enhance", "output": "prompt"}}},
            },
        }
    )
    with pytest.raises(PipelineError) as info:
        validate_pipeline(bad, specs, max_steps=10, max_items=16)
    assert str(info.value) == (
        "steps.big.inputs.image: step 'big' input 'image' (image) cannot take output 'prompt' of step "
        "'enhance' (text)"
    )


# --------------------------------------------------------------------------- properties


@st.composite
def graphs(draw: st.DrawFn) -> dict[str, Any]:
    """Random graphs of one-input steps (upscale) with arbitrary edges, so some have cycles."""
    n = draw(st.integers(1, 7))
    steps: dict[str, Any] = {}
    for i in range(n):
        j = draw(st.none() | st.integers(0, n - 1))
        if j is None:
            steps[f"s{i}"] = {"tool": "upscale", "inputs": {"image": "upload:1"}}
        else:
            steps[f"s{i}"] = {"tool": "upscale", "inputs": {"image": {"from": f"s{j}", "output": "image"}}}
    return steps


@settings(max_examples=150, deadline=None)
@given(graphs())
def test_random_graphs_are_ordered_or_refused_with_a_real_cycle(steps: dict[str, Any]) -> None:
    p = pipeline(steps)
    dep = {
        sid: s["inputs"]["image"]["from"]
        for sid, s in steps.items()
        if isinstance(s["inputs"]["image"], dict)
    }
    try:
        order = check(p)
    except PipelineError as err:
        assert err.field == "steps" and err.reason.startswith("a cycle: ")
        cycle = err.reason.removeprefix("a cycle: ").split(" → ")
        assert cycle[0] == cycle[-1]
        # Each step on it feeds the next one.
        for a, b in pairwise(cycle):
            assert dep[b] == a
        return
    assert sorted(order) == sorted(steps)
    for sid, d in dep.items():
        assert order.index(d) < order.index(sid)
    assert topological_order(p) == order
