"""localtools/llm.py: the prompt-enhance and caption tools, run against the fake OpenAI endpoint
(tests/fake_openai.py) through the real SDK: what each sends (the family's system prompt, the
image as a data URL part, the models), what comes back (cleaned, bounded, with its tokens), and
what happens without an endpoint or when the endpoint fails."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from swarmstation.config import Settings
from swarmstation.domain import tools as domain_tools
from swarmstation.domain.tools import BASE_MODELS, bind_inputs, validate_tool
from swarmstation.localtools.base import LocalContext, LocalImage, LocalToolError
from swarmstation.localtools.llm import (
    CAPTION_MAX_SIDE,
    FAMILY_GUIDES,
    LLM_TOOLS,
    MAX_IDEA_CHARS,
    MAX_PROMPT_CHARS,
    MAX_STYLE_CHARS,
    Caption,
    PromptEnhance,
    clean_answer,
)
from tests.fake_openai import FakeOpenAI

NOT_CONFIGURED = "no LLM endpoint is configured: set SWARMSTATION_LLM_BASE_URL"


def llm_settings(tmp_path: Path, fake: FakeOpenAI, **overrides: Any) -> Settings:
    return Settings(
        data_dir=tmp_path,
        llm_base_url=fake.base_url,
        llm_api_key=fake.api_key,
        llm_model="text-1",
        **overrides,
    )


def context(settings: Settings, *, deadline: float = 30, max_pixels: int = 16_000_000) -> LocalContext:
    return LocalContext(settings=settings, deadline_seconds=deadline, max_pixels=max_pixels)


def png(width: int, height: int, mode: str = "RGB") -> LocalImage:
    out = io.BytesIO()
    Image.new(mode, (width, height), "#3366cc").save(out, format="PNG")
    return LocalImage(out.getvalue(), "image/png")


def enhance(settings: Settings, **inputs: Any) -> Any:
    return PromptEnhance().run(context(settings), {"base_model": "SDXL", **inputs}, {})


# the specs

# contract §1 (ToolSpec.kind and outputs, OutputSpec, bindings-free inputs for non-ComfyUI tools)
# is the tools helper's; until it is in domain.tools the specs cannot be built. Drop this marker
# once it is there.
needs_typed_tools = pytest.mark.skipif(
    not hasattr(domain_tools, "OutputSpec"), reason="domain.tools has no OutputSpec / ToolSpec.kind yet"
)


@needs_typed_tools
def test_the_specs_are_llm_tools_on_the_control_pool() -> None:
    specs = {tool.spec.slug: tool.spec for tool in LLM_TOOLS}
    assert set(specs) == {"prompt-enhance", "caption"}
    for spec in specs.values():
        validate_tool(spec)
        assert spec.kind == "llm" and spec.pool == "control" and spec.workflow == {}
        assert not spec.accepts_loras and spec.category == "text" and spec.base_model == "other"
        assert all(i.bindings == () for i in spec.inputs)
    enhance_spec, caption_spec = specs["prompt-enhance"], specs["caption"]
    assert [(o.name, o.type) for o in enhance_spec.outputs] == [("prompt", "text")]
    assert [(o.name, o.type) for o in caption_spec.outputs] == [("text", "text")]
    inputs = {i.name: i for i in enhance_spec.inputs}
    assert inputs["idea"].required and inputs["idea"].type == "string"
    assert inputs["base_model"].choices == BASE_MODELS and inputs["base_model"].default == "SDXL"
    assert not inputs["style"].required
    detail = {i.name: i for i in caption_spec.inputs}["detail"]
    assert detail.choices == ("short", "detailed") and detail.default == "short"


@needs_typed_tools
def test_bind_inputs_checks_an_llm_tools_values() -> None:
    spec = PromptEnhance().spec
    bound = bind_inputs(spec, {"idea": "a fox"}, random_seed=1)
    assert bound.workflow == {} and bound.required_models == ()
    assert bound.inputs["idea"] == "a fox" and bound.inputs["base_model"] == "SDXL"
    with pytest.raises(ValueError, match="base_model"):
        bind_inputs(spec, {"idea": "a fox", "base_model": "Midjourney"}, random_seed=1)
    with pytest.raises(ValueError, match="idea"):
        bind_inputs(spec, {}, random_seed=1)
    captioned = bind_inputs(Caption().spec, {"image": "upload:abc"}, random_seed=1)
    assert captioned.input_images == {"image": "upload:abc"}


# availability and token bounds


def test_unavailable_without_an_endpoint(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    bare = Settings(data_dir=tmp_path)
    for tool in LLM_TOOLS:
        assert tool.unavailable(bare) == NOT_CONFIGURED
        assert tool.unavailable(llm_settings(tmp_path, fake_openai)) is None
    with pytest.raises(LocalToolError) as caught:
        enhance(bare, idea="a fox")
    assert str(caught.value) == NOT_CONFIGURED and not caught.value.retryable
    assert fake_openai.requests == []


def test_the_token_bound_covers_the_longest_run(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    settings = llm_settings(tmp_path, fake_openai, llm_max_tokens=300)
    bound = PromptEnhance().max_tokens(settings)
    assert (
        bound > 300 and PromptEnhance().max_tokens(llm_settings(tmp_path, fake_openai)) == bound - 300 + 512
    )
    for family in FAMILY_GUIDES:  # the longest idea and style, for each family's system prompt
        fake_openai.answer("ok")
        result = enhance(settings, idea="w" * MAX_IDEA_CHARS, style="s" * MAX_STYLE_CHARS, base_model=family)
        assert result.usage["prompt_tokens"] + settings.llm_max_tokens <= bound
        assert fake_openai.last.body["max_tokens"] == 300
    caption_bound = Caption().max_tokens(settings)
    assert caption_bound >= 1000 + 300  # the image allowance and the completion cap


# prompt enhance


@pytest.mark.parametrize("family", BASE_MODELS)
def test_prompt_enhance_writes_for_the_base_model_family(
    tmp_path: Path, fake_openai: FakeOpenAI, family: str
) -> None:
    settings = llm_settings(tmp_path, fake_openai)
    result = enhance(settings, idea="  a lighthouse in a storm ", base_model=family, style="oil painting")
    request = fake_openai.last
    system = request.text_of("system")
    assert FAMILY_GUIDES[family] in system
    for other, guide in FAMILY_GUIDES.items():
        if other != family:
            assert guide not in system
    assert request.text_of("user") == "Idea: a lighthouse in a storm\nStyle: oil painting"
    assert request.body["model"] == "text-1" and request.body["stream"] is True
    prompt = result.values["prompt"]
    assert "A detailed picture of Idea: a lighthouse in a storm Style: oil painting" in prompt
    if family == "Pony":  # the score tags lead, whether the model wrote them or not
        assert prompt.startswith("score_9, score_8_up, score_7_up, ")
    else:
        assert prompt.startswith("A detailed picture")
    assert result.usage["prompt_tokens"] > 0 and result.usage["completion_tokens"] > 0
    assert result.files == []


def test_a_pony_prompt_that_has_its_score_tags_keeps_them_once(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.answer("score_9, score_8_up, score_7_up, rating_safe, 1girl, lighthouse")
    result = enhance(llm_settings(tmp_path, fake_openai), idea="a lighthouse", base_model="Pony")
    assert result.values["prompt"] == "score_9, score_8_up, score_7_up, rating_safe, 1girl, lighthouse"


def test_no_style_sends_only_the_idea(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    enhance(llm_settings(tmp_path, fake_openai), idea="a fox", style=None)
    assert fake_openai.last.text_of("user") == "Idea: a fox"


def test_the_answer_is_cleaned_and_bounded(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    settings = llm_settings(tmp_path, fake_openai)
    fake_openai.answer('Prompt: "A fox in the snow,\n\n  soft light"')
    assert enhance(settings, idea="a fox").values["prompt"] == "A fox in the snow, soft light"
    fake_openai.answer("word " * 1000)
    long = enhance(settings, idea="a fox").values["prompt"]
    assert len(long) <= MAX_PROMPT_CHARS and long.endswith("word")
    fake_openai.answer('  ""  ')
    with pytest.raises(LocalToolError, match="empty answer") as caught:
        enhance(settings, idea="a fox")
    assert caught.value.retryable


@pytest.mark.parametrize(
    ("answer", "clean"),
    [
        ("A fox.", "A fox."),
        ('"A fox."', "A fox."),
        ("\u201cA fox.\u201d", "A fox."),
        ("Here is your prompt: a fox", "a fox"),
        ("Enhanced prompt:\n a fox", "a fox"),
        ("```text\na fox, snow\n```", "a fox, snow"),
        ("Caption: 'a fox'", "a fox"),
        ("a fox\nin\tsnow", "a fox in snow"),
        ("a prompt: with a colon later", "a prompt: with a colon later"),
    ],
)
def test_clean_answer(answer: str, clean: str) -> None:
    assert clean_answer(answer, limit=100) == clean


def test_clean_answer_cuts_at_a_word() -> None:
    assert clean_answer("alpha beta gamma delta", limit=13) == "alpha beta"
    assert clean_answer("x" * 50, limit=10) == "x" * 10


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (429, True), (400, False)])
def test_endpoint_failures_fail_the_run(
    tmp_path: Path, fake_openai: FakeOpenAI, status: int, retryable: bool
) -> None:
    fake_openai.fail(status)
    with pytest.raises(LocalToolError) as caught:
        enhance(llm_settings(tmp_path, fake_openai), idea="a fox")
    assert caught.value.retryable is retryable and f"HTTP {status}" in str(caught.value)


def test_a_wrong_key_fails_without_showing_it(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    settings = Settings(
        data_dir=tmp_path, llm_base_url=fake_openai.base_url, llm_api_key="sk-Never-Show-Wrong"
    )
    with pytest.raises(LocalToolError) as caught:
        enhance(settings, idea="a fox")
    assert not caught.value.retryable and "Never-Show" not in str(caught.value)


def test_the_deadline_bounds_the_call(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.slow(3.0)
    ctx = context(llm_settings(tmp_path, fake_openai), deadline=0.5)
    with pytest.raises(LocalToolError, match=r"within 0\.5 seconds") as caught:
        PromptEnhance().run(ctx, {"idea": "a fox", "base_model": "SDXL"}, {})
    assert caught.value.retryable


# caption


def test_caption_sends_the_image_to_the_vision_model(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    settings = llm_settings(tmp_path, fake_openai, llm_vision_model="vision-1")
    image = png(64, 48)
    result = Caption().run(context(settings), {"image": "upload:x", "detail": "short"}, {"image": [image]})
    request = fake_openai.last
    [sent] = request.images
    assert sent.content_type == "image/png" and sent.data == image.data  # small: sent as it is
    assert request.body["model"] == "vision-1"
    assert "one sentence" in request.text_of("system")
    assert result.values == {"text": f"An image (image/png of {len(image.data)} bytes)."}
    assert result.usage["prompt_tokens"] > 0 and result.usage["completion_tokens"] > 0
    # without a vision model, the text model captions
    Caption().run(context(llm_settings(tmp_path, fake_openai)), {"image": "upload:x"}, {"image": [image]})
    assert fake_openai.last.body["model"] == "text-1"
    assert "one sentence" in fake_openai.last.text_of("system")  # short is the default


def test_a_detailed_caption_asks_for_a_paragraph(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.answer("Caption: A blue square, flat colour, no texture.")
    result = Caption().run(
        context(llm_settings(tmp_path, fake_openai)),
        {"image": "upload:x", "detail": "detailed"},
        {"image": [png(8, 8)]},
    )
    assert "one paragraph" in fake_openai.last.text_of("system")
    assert result.values["text"] == "A blue square, flat colour, no texture."


def test_a_large_image_is_scaled_down_before_it_is_sent(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    settings = llm_settings(tmp_path, fake_openai)
    for mode, content_type in (("RGB", "image/jpeg"), ("RGBA", "image/png")):
        Caption().run(context(settings), {"image": "upload:x"}, {"image": [png(3000, 1500, mode)]})
        [sent] = fake_openai.last.images
        assert sent.content_type == content_type and sent.data is not None
        with Image.open(io.BytesIO(sent.data)) as received:
            assert received.size == (CAPTION_MAX_SIDE, CAPTION_MAX_SIDE // 2)
            assert received.get_format_mimetype() == content_type


def test_caption_refuses_what_is_not_an_image_or_too_large(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    settings = llm_settings(tmp_path, fake_openai)
    with pytest.raises(LocalToolError, match="not an image") as caught:
        Caption().run(
            context(settings), {"image": "upload:x"}, {"image": [LocalImage(b"hello", "image/png")]}
        )
    assert not caught.value.retryable
    with pytest.raises(LocalToolError, match="1000x1000 is more than the 100000 pixels"):
        Caption().run(
            context(settings, max_pixels=100_000), {"image": "upload:x"}, {"image": [png(1000, 1000)]}
        )
    with pytest.raises(LocalToolError, match="one image"):
        Caption().run(context(settings), {"image": "upload:x"}, {"image": []})
    assert fake_openai.requests == []


def test_a_caption_failure_is_retryable_when_the_endpoint_failed(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.fail(503)
    with pytest.raises(LocalToolError, match="HTTP 503") as caught:
        Caption().run(context(llm_settings(tmp_path, fake_openai)), {"image": "u"}, {"image": [png(8, 8)]})
    assert caught.value.retryable
    assert base64.b64decode(fake_openai.last.images[0].url.split(",", 1)[1]) == png(8, 8).data
