"""The offline planner: the fox story, iteration on the prior plan, attachments, questions,
out-of-scope requests, stated parameters, and every plan a valid pipeline."""

from __future__ import annotations

from typing import Any

import pytest

from swarmstation.agent_eval.evaluate import default_set_path, load_set
from swarmstation.domain.agent import decide
from swarmstation.domain.agent.planner import stated_params
from swarmstation.domain.agent.types import (
    Abstain,
    CatalogTool,
    Context,
    Decision,
    MediaRef,
    PriorPlan,
    Proposal,
    Question,
)
from swarmstation.domain.pipelines import pipeline_from_dict, validate_pipeline
from tests.domain.agent.conftest import specs

FOX = "a watercolor fox in the snow, then make it 4x bigger"
PHOTO = MediaRef("upload:u1photo", "attachment")


def plan(decision: Decision) -> Proposal:
    assert isinstance(decision, Proposal), decision
    return decision


def valid(p: Proposal) -> None:
    """The plan's pipeline passes the pipeline engine's own validation."""
    validate_pipeline(pipeline_from_dict(p.pipeline), specs(), max_steps=10, max_items=16)


def steps(p: Proposal) -> dict[str, Any]:
    out: dict[str, Any] = p.pipeline["steps"]
    return out


def prior(p: Proposal) -> PriorPlan:
    return PriorPlan(pipeline=p.pipeline, chain=p.chain)


def test_the_fox_story(catalog: list[CatalogTool]) -> None:
    first = plan(decide(FOX, Context(catalog, seed=7)))
    assert first.chain == ("sdxl-txt2img", "upscale-4x")
    assert first.params == {"scale": 4} and first.intent == "chain"
    gen, big = steps(first).values()
    assert gen["inputs"] == {"prompt": "a watercolor fox in the snow", "seed": 7}
    assert big["inputs"]["image"] == {"from": "gen", "output": "image"}
    valid(first)

    vibrant = plan(decide("more vibrant", Context(catalog, prior=prior(first), seed=8)))
    assert vibrant.intent == "iterate" and vibrant.chain == first.chain
    gen2 = steps(vibrant)["gen"]["inputs"]
    assert gen2["prompt"].startswith("a watercolor fox in the snow") and "vibrant" in gen2["prompt"]
    assert gen2["seed"] == 7  # the same picture, more vibrant: the seed is kept
    assert steps(first)["gen"]["inputs"]["prompt"] == "a watercolor fox in the snow"  # prior untouched
    valid(vibrant)

    song = decide("make a song about it", Context(catalog, prior=prior(vibrant), seed=9))
    assert isinstance(song, Abstain)
    assert "sdxl-txt2img" in song.suggestions and "upscale-4x" in song.suggestions


def test_iterations_edit_the_prior_plan(catalog: list[CatalogTool]) -> None:
    base = plan(decide("a man wearing a red hat walking in the rain", Context(catalog, seed=1)))
    no_hat = plan(decide("without the hat", Context(catalog, prior=prior(base), seed=2)))
    inputs = steps(no_hat)["gen"]["inputs"]
    assert "hat" not in inputs["prompt"] and "rain" in inputs["prompt"]
    assert inputs["negative_prompt"] == "hat"

    again = plan(decide("another one", Context(catalog, prior=prior(no_hat), seed=424242)))
    assert steps(again)["gen"]["inputs"]["seed"] == 424242 and again.params == {"seed": 424242}

    more = plan(decide("more steps", Context(catalog, prior=prior(again), seed=3)))
    assert steps(more)["gen"]["inputs"]["steps"] > 25  # SDXL's default
    cfg = plan(decide("cfg 4", Context(catalog, prior=prior(more), seed=3)))
    assert steps(cfg)["gen"]["inputs"]["cfg"] == 4.0

    flux = plan(decide("use flux instead", Context(catalog, prior=prior(cfg), seed=4)))
    assert flux.chain == ("flux-txt2img",) and flux.params == {"model": "flux"}
    flux_inputs = steps(flux)["gen"]["inputs"]
    assert flux_inputs["prompt"] == inputs["prompt"] and "cfg" not in flux_inputs  # flux has no cfg
    valid(flux)

    # "then upscale it": appended on the last step while nothing ran yet...
    bigger = plan(decide("then upscale it", Context(catalog, prior=prior(flux), seed=5)))
    assert bigger.chain == ("flux-txt2img", "upscale-4x")
    assert steps(bigger)["big"]["inputs"]["image"] == {"from": "gen", "output": "image"}
    valid(bigger)
    # ...and on the output itself once the plan ran (nothing is drawn or paid for twice)
    out = MediaRef("output:job1-0", "output")
    ran = plan(decide("upscale it", Context(catalog, media=(out,), prior=prior(flux), seed=6)))
    assert ran.chain == ("upscale-4x",) and steps(ran)["big"]["inputs"]["image"] == out.ref

    # a new request is a new plan, not an edit
    fresh = plan(decide("a dog on a beach at sunset, 16:9", Context(catalog, prior=prior(flux), seed=7)))
    assert fresh.chain == ("sdxl-txt2img",) and "hat" not in steps(fresh)["gen"]["inputs"]["prompt"]


def test_iterations_in_other_languages_and_a_dislike(catalog: list[CatalogTool]) -> None:
    dog = plan(decide("ein Hund im Schnee", Context(catalog, seed=1)))
    no_snow = plan(decide("ohne Schnee", Context(catalog, prior=prior(dog), seed=2)))
    assert steps(no_snow)["gen"]["inputs"]["prompt"] == "ein hund"
    french = plan(decide("sans la planche", Context(catalog, prior=prior(dog), seed=2)))
    assert french.chain == ("sdxl-txt2img",)  # "planche" is not a contact sheet here
    meh = plan(decide("I don't like it", Context(catalog, prior=prior(dog), seed=5)))
    assert steps(meh)["gen"]["inputs"] == {**steps(dog)["gen"]["inputs"], "seed": 5}


def test_a_colour_change_replaces_the_colour(catalog: list[CatalogTool]) -> None:
    car = plan(decide("a red sports car on a mountain road", Context(catalog, seed=1)))
    blue = plan(decide("make the car blue", Context(catalog, prior=prior(car), seed=2)))
    assert steps(blue)["gen"]["inputs"]["prompt"] == "a blue sports car on a mountain road"


def test_the_second_one_of_several_outputs(catalog: list[CatalogTool]) -> None:
    base = plan(decide("three pictures of a teapot", Context(catalog, seed=1)))
    assert steps(base)["gen"]["variations"] == {"count": 3}
    outs = tuple(MediaRef(f"output:j{i}", "output") for i in range(3))
    second = plan(decide("upscale the second one", Context(catalog, media=outs, prior=prior(base))))
    assert steps(second)["big"]["inputs"]["image"] == "output:j1"


@pytest.mark.parametrize(
    ("text", "chain"),
    [
        ("make it look like a watercolor painting", ("sd15-img2img",)),
        ("describe this photo", ("caption",)),
        ("descibe this", ("caption",)),  # typo
        ("upscale this and then describe it", ("upscale-4x", "caption")),
        ("convert to jpeg", ("image-convert",)),
        ("pad it to 16:9", ("image-pad",)),
    ],
)
def test_an_attached_image(text: str, chain: tuple[str, ...], catalog: list[CatalogTool]) -> None:
    p = plan(decide(text, Context(catalog, media=(PHOTO,), seed=3)))
    assert p.chain == chain
    first = next(iter(steps(p).values()))
    assert first["inputs"]["image"] == PHOTO.ref  # the attachment as a literal ref
    valid(p)


def test_text_only_operations_are_bridged_by_a_generator(catalog: list[CatalogTool]) -> None:
    p = plan(decide("generate an image of a sailboat and describe it", Context(catalog)))
    assert p.chain == ("sdxl-txt2img", "caption")
    assert steps(p)["caption"]["inputs"]["image"] == {"from": "gen", "output": "image"}
    enhanced = plan(decide("improve the prompt 'a lonely robot' and then generate it", Context(catalog)))
    assert enhanced.chain == ("prompt-enhance", "sdxl-txt2img")
    assert steps(enhanced)["gen"]["inputs"]["prompt"] == {"from": "enhance", "output": "prompt"}
    assert steps(enhanced)["enhance"]["inputs"]["base_model"] == "SDXL"
    valid(enhanced)
    only = plan(decide("improve my prompt: a knight in a dark forest", Context(catalog)))
    assert only.chain == ("prompt-enhance",)
    assert steps(only)["enhance"]["inputs"]["idea"] == "a knight in a dark forest"


def test_stated_parameters_fill_the_inputs(catalog: list[CatalogTool]) -> None:
    p = plan(decide("4 images of a red car, 16:9, seed 42", Context(catalog, seed=1)))
    gen = steps(p)["gen"]
    assert p.params == {"count": 4, "aspect": "16:9", "seed": 42}
    assert gen["variations"] == {"count": 4} and gen["inputs"]["seed"] == 42
    assert gen["inputs"]["width"] / gen["inputs"]["height"] == pytest.approx(16 / 9, rel=0.05)
    sized = plan(decide("sd 1.5 castle, 768x512, 30 steps, cfg 5.5", Context(catalog)))
    assert sized.chain == ("sd15-txt2img",)
    assert {k: steps(sized)["gen"]["inputs"][k] for k in ("width", "height", "steps", "cfg")} == {
        "width": 768, "height": 512, "steps": 30, "cfg": 5.5,
    }  # fmt: skip
    # a clause's size belongs to its own step
    two = plan(decide("make a 16:9 banner of a desert, then pad it to 21:9", Context(catalog)))
    assert steps(two)["pad"]["inputs"]["aspect"] == "21:9" and steps(two)["gen"]["inputs"]["width"] > 1024
    assert stated_params("seed=12, jpeg quality 80, 3 columns") == {
        "seed": 12, "format": "jpeg", "quality": 80, "columns": 3,
    }  # fmt: skip


def test_a_missing_required_value_becomes_a_pipeline_input(catalog: list[CatalogTool]) -> None:
    p = plan(decide("crop this image", Context(catalog, media=(PHOTO,))))
    assert steps(p)["crop"]["inputs"]["width"] == {"input": "crop_width"}
    assert p.pipeline["inputs"]["crop_width"]["required"] is True
    valid(p)


@pytest.mark.parametrize(
    ("text", "kind", "tool"),
    [
        ("how much does it cost to upscale an image?", "price", "upscale-4x"),
        ("how much?", "price", None),
        ("what's my balance", "balance", None),
        ("combien de crédits il me reste ?", "balance", None),
        ("what does the caption tool do?", "tool", "caption"),
        ("what went wrong?", "run", None),
        ("why did my last run fail", "run", None),
        ("what can you do?", "capabilities", None),
    ],
)
def test_questions(text: str, kind: str, tool: str | None, catalog: list[CatalogTool]) -> None:
    assert decide(text, Context(catalog)) == Question(kind, tool)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "make a song about it",
        "make a video of a cat dancing",
        "write a poem about the sea",
        "book me a flight to lisbon",
        "what's the weather in paris tomorrow?",
        "remove the background from this photo",
    ],
)
def test_out_of_scope_is_declined_with_what_can_be_done(text: str, catalog: list[CatalogTool]) -> None:
    decision = decide(text, Context(catalog, media=(PHOTO,) if "photo" in text else ()))
    assert isinstance(decision, Abstain) and decision.suggestions


def test_pictures_of_things_that_sound_out_of_scope_are_drawn(catalog: list[CatalogTool]) -> None:
    assert plan(decide("a movie poster for a space western", Context(catalog))).chain == ("sdxl-txt2img",)
    assert plan(decide("children play in the park", Context(catalog))).chain == ("sdxl-txt2img",)


def test_an_unavailable_tool_is_said_not_proposed(catalog: list[CatalogTool]) -> None:
    no_llm = [CatalogTool(t.spec, t.spec.kind != "llm", t.examples) for t in catalog]
    decision = decide("describe this photo", Context(no_llm, media=(PHOTO,)))
    assert isinstance(decision, Abstain) and "caption" in decision.reason
    assert "caption" not in decision.suggestions


def test_pure_and_deterministic(catalog: list[CatalogTool]) -> None:
    ctx = Context(catalog, seed=11)
    assert decide(FOX, ctx) == decide(FOX, ctx)
    assert steps(plan(decide(FOX, Context(catalog, seed=12))))["gen"]["inputs"]["seed"] == 12


def test_every_plan_of_the_labelled_set_is_a_valid_pipeline(catalog: list[CatalogTool]) -> None:
    checked = 0
    for record in load_set(default_set_path()):
        turns = record["turns"] if record.get("type") == "dialogue" else [record]
        before: PriorPlan | None = None
        for turn in turns:
            media = tuple(MediaRef(m["ref"], m["source"]) for m in turn.get("media", []))
            context = Context(catalog, media=media, prior=before, seed=turn.get("seed", 0))
            decision = decide(turn["text"], context)
            if isinstance(decision, Proposal):
                valid(decision)
                before = prior(decision)
                checked += 1
    assert checked > 150
