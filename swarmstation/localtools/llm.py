"""The LLM text tools: `prompt-enhance` (a short idea → one detailed image prompt written for a
base model family) and `caption` (an image → a description, by a vision-capable model), through
the configured OpenAI-compatible endpoint (integrations/llm.py).

They are local tools (localtools/base.py): kind "llm", no workflow, run on the control plane's
side ("control" pool), priced per 1000 tokens. Without an endpoint configured they are listed as
unavailable, not broken. What the model answers is cleaned (no quotes, no "Prompt:" label, no
code fence, one line) and bounded, because it feeds the next step of a pipeline.
"""

from __future__ import annotations

import base64
import io
import math
import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from PIL import Image, UnidentifiedImageError

from swarmstation.domain.tools import BASE_MODELS, InputSpec, ToolSpec
from swarmstation.integrations.llm import IMAGE_TOKEN_ESTIMATE, NOT_CONFIGURED, ChatAnswer, LLMClient
from swarmstation.localtools.base import LocalContext, LocalImage, LocalResult, LocalTool, LocalToolError

if TYPE_CHECKING:
    from swarmstation.config import Settings

__all__ = [
    "FAMILY_GUIDES",
    "LLM_TOOLS",
    "Caption",
    "PromptEnhance",
    "clean_answer",
    "enhance_messages",
]

MAX_IDEA_CHARS = 2000
MAX_STYLE_CHARS = 200
MAX_PROMPT_CHARS = 1500
MAX_CAPTION_CHARS = 4000
#: The longest side of an image sent to the vision model: models scale down to about this anyway,
#: and a 16-megapixel upscale as a data URL would be tens of megabytes.
CAPTION_MAX_SIDE = 1024
#: Image types sent as they are (when small enough); anything else is re-encoded as PNG or JPEG.
SENDABLE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF"}
MAX_SENT_IMAGE_BYTES = 4 * 1024 * 1024
#: Tokens of the chat framing around the messages (roles, separators) in a token bound.
FRAMING_TOKENS = 32

#: How each base model family wants its prompt written: the part of the system prompt that
#: differs. Pony, Illustrious and NoobAI read booru tags; FLUX and SD3 read sentences (T5).
FAMILY_GUIDES: dict[str, str] = {
    "SD1.5": (
        "Write comma-separated tags and short phrases, most important first, starting with quality "
        "tags (masterpiece, best quality, highly detailed); subject, appearance, setting, lighting, "
        "camera or medium, style. Stay under 70 words: SD 1.5 reads only 75 tokens."
    ),
    "SDXL": (
        "Write one or two natural-language sentences describing the subject, setting, composition, "
        "lighting and colours, then a few comma-separated quality and style tags (e.g. highly "
        "detailed, sharp focus, cinematic lighting). 40 to 90 words."
    ),
    "Pony": (
        "Begin with exactly 'score_9, score_8_up, score_7_up, ' then a source tag (source_anime, "
        "source_cartoon or source_furry, or none for realism) and a rating tag (rating_safe), then "
        "comma-separated danbooru-style tags for the subject, appearance, pose, setting and "
        "lighting. Tags only, no sentences."
    ),
    "Illustrious": (
        "Write comma-separated danbooru-style tags: start with 'masterpiece, best quality, very "
        "aesthetic, absurdres, ', then the character count (1girl, 1boy, no humans), the subject, "
        "appearance, clothing, pose, setting, lighting and art style. Tags only, no sentences."
    ),
    "NoobAI": (
        "Write comma-separated danbooru-style tags: start with 'masterpiece, best quality, newest, "
        "absurdres, highres, ', then the character count, the subject, appearance, pose, setting, "
        "lighting and artist-style tags. Tags only, no sentences."
    ),
    "FLUX": (
        "Write flowing natural-language sentences, as a photographer or painter would describe the "
        "picture: subject, action, setting, composition, lighting, colours, mood and medium. No "
        "tags, no weights like (word:1.2), no quality boilerplate. 50 to 150 words."
    ),
    "SD3": (
        "Write clear natural-language sentences describing the subject, its position in the frame, "
        "the setting, lighting, colours and style; put any text that must appear in the image in "
        "double quotes. No weights like (word:1.2). 40 to 120 words."
    ),
    "other": (
        "Write one detailed image prompt in natural language: subject, setting, composition, "
        "lighting, colours and style. 40 to 100 words."
    ),
}
#: Prefixes a family's prompt must start with (the model is asked; this makes sure).
FAMILY_PREFIXES = {"Pony": "score_9, score_8_up, score_7_up, "}

ENHANCE_SYSTEM = (
    "You write prompts for the {family} image generation model family. Turn the user's short idea "
    "into ONE detailed prompt that keeps everything the idea asks for and invents only plausible "
    "detail. {guide} Answer with the prompt alone: no title, no label, no quotes, no explanation, "
    "no negative prompt."
)

CAPTION_SYSTEM = {
    "short": (
        "Describe the image in one sentence of at most 30 words: the main subject, what it does, "
        "and the setting. Answer with the sentence alone, no preamble."
    ),
    "detailed": (
        "Describe the image in one paragraph of at most 150 words: the subject and its details, "
        "the setting, composition, lighting, colours, medium and style, so that someone could "
        "recreate it. Answer with the paragraph alone, no preamble."
    ),
}
CAPTION_USER = "Describe this image."

_LABEL_RE = re.compile(
    r"^\s*(?:here(?:'s| is)[^:\n]{0,60}:|(?:enhanced |positive |final |image )?(?:prompt|caption|description)"
    r"\s*:)\s*",
    re.IGNORECASE,
)
_FENCE_RE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"  # straight, back and curly quotes


def clean_answer(text: str, *, limit: int) -> str:
    """The model's answer as one clean line: no code fence, no "Prompt:" / "Here is ...:" label,
    no surrounding quotes, whitespace collapsed, at most `limit` characters (cut at a word)."""
    text = _FENCE_RE.sub("", text.strip()).strip()
    text = _LABEL_RE.sub("", text, count=1).strip()
    # a quoted answer: strip matching quotes at both ends (several layers, e.g. `"..."`)
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    text = " ".join(text.split())
    if len(text) > limit:
        cut = text[:limit]
        space = cut.rfind(" ")
        text = (cut[:space] if space > limit // 2 else cut).rstrip(" ,;")
    return text


def enhance_messages(idea: str, base_model: str, style: str | None) -> list[dict[str, Any]]:
    """The chat of one prompt-enhance run: the family's system prompt, the idea (and style)."""
    family = base_model if base_model in FAMILY_GUIDES else "other"
    system = ENHANCE_SYSTEM.format(
        family=family if family != "other" else "general", guide=FAMILY_GUIDES[family]
    )
    user = f"Idea: {idea.strip()}"
    if style and style.strip():
        user += f"\nStyle: {style.strip()}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _usage(answer: ChatAnswer) -> dict[str, int]:
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens}


def _unavailable(settings: Settings) -> str | None:
    return None if settings.llm_base_url else NOT_CONFIGURED


def _ask(ctx: LocalContext, messages: list[dict[str, Any]], model: str) -> ChatAnswer:
    with LLMClient.from_settings(ctx.settings, timeout_seconds=ctx.deadline_seconds) as client:
        return client.chat(messages, model=model, max_tokens=ctx.settings.llm_max_tokens, stream=True)


def _llm_spec(slug: str, name: str, description: str, inputs: tuple[InputSpec, ...], output: str) -> ToolSpec:
    # domain.tools' OutputSpec and ToolSpec.kind/outputs (contract §1); imported here so that
    # this module imports even where they are not there yet
    from swarmstation.domain.tools import OutputSpec  # type: ignore[attr-defined,unused-ignore]

    return ToolSpec(  # type: ignore[call-arg,unused-ignore]
        slug=slug,
        name=name,
        description=description,
        category="text",
        base_model="other",
        workflow={},
        inputs=inputs,
        pool="control",
        accepts_loras=False,
        kind="llm",
        outputs=(OutputSpec(name=output, type="text", description=f"The {output} the model wrote"),),
    )


@cache
def prompt_enhance_spec() -> ToolSpec:
    return _llm_spec(
        "prompt-enhance",
        "Prompt enhance",
        "Turns a short idea into one detailed image prompt written for a base model family (tags for "
        "SD 1.5 and Pony, sentences for FLUX), with an LLM.",
        (
            InputSpec(
                "idea",
                "string",
                (),
                required=True,
                max_length=MAX_IDEA_CHARS,
                description="What the picture should show, in a few words",
            ),
            InputSpec(
                "base_model",
                "string",
                (),
                default="SDXL",
                choices=BASE_MODELS,
                description="The model family the prompt is for",
            ),
            InputSpec(
                "style",
                "string",
                (),
                max_length=MAX_STYLE_CHARS,
                description="A style to aim for (e.g. watercolour, film noir); optional",
            ),
        ),
        "prompt",
    )


@cache
def caption_spec() -> ToolSpec:
    return _llm_spec(
        "caption",
        "Caption",
        "Describes an image in words (one sentence, or a detailed paragraph), with a vision-capable LLM.",
        (
            InputSpec("image", "image", (), required=True, description="The image to describe"),
            InputSpec(
                "detail",
                "string",
                (),
                default="short",
                choices=("short", "detailed"),
                description="short: one sentence; detailed: a paragraph",
            ),
        ),
        "text",
    )


def _system_tokens(texts: list[str]) -> int:
    return math.ceil(max(len(t) for t in texts) / 4)


@dataclass(frozen=True)
class PromptEnhance:
    """`prompt-enhance`: idea (+ base model family, style) → `prompt` (text)."""

    @property
    def spec(self) -> ToolSpec:
        return prompt_enhance_spec()

    def unavailable(self, settings: Settings) -> str | None:
        return _unavailable(settings)

    def max_tokens(self, settings: Settings) -> int:
        """The longest system prompt, the longest idea and style (~4 characters a token), the
        framing and the completion cap: more than any run can use."""
        systems = [str(enhance_messages("", family, None)[0]["content"]) for family in FAMILY_GUIDES]
        user = math.ceil((MAX_IDEA_CHARS + MAX_STYLE_CHARS + 16) / 4)
        return _system_tokens(systems) + user + FRAMING_TOKENS + settings.llm_max_tokens

    def run(
        self, ctx: LocalContext, inputs: dict[str, Any], images: dict[str, list[LocalImage]]
    ) -> LocalResult:
        idea = str(inputs.get("idea") or "").strip()
        if not idea:
            raise LocalToolError("idea: must not be empty")
        base_model = str(inputs.get("base_model") or "SDXL")
        style = inputs.get("style")
        messages = enhance_messages(idea, base_model, str(style) if style else None)
        answer = _ask(ctx, messages, ctx.settings.llm_model)
        prompt = clean_answer(answer.text, limit=MAX_PROMPT_CHARS)
        prefix = FAMILY_PREFIXES.get(base_model)
        if prompt and prefix and not prompt.startswith(prefix.split(",")[0]):
            prompt = prefix + prompt
        if not prompt:
            raise LocalToolError("the LLM gave an empty answer", retryable=True)
        return LocalResult(values={"prompt": prompt}, usage=_usage(answer))


def image_data_url(image: LocalImage, *, max_pixels: int, max_side: int = CAPTION_MAX_SIDE) -> str:
    """The image as a data URL for an `image_url` content part: as it is when it is a common type,
    small and at most `max_side` on its longest side; otherwise scaled down and re-encoded (PNG
    when it has transparency, else JPEG). Raises LocalToolError for bytes that are not an image or
    one of more than `max_pixels` pixels (checked before decoding: no decompression bomb)."""
    try:
        with Image.open(io.BytesIO(image.data)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise LocalToolError(
                    f"image: {width}x{height} is more than the {max_pixels} pixels a local tool reads"
                )
            content_type = Image.MIME.get(img.format or "", image.content_type)
            if (
                content_type in SENDABLE_TYPES
                and max(width, height) <= max_side
                and len(image.data) <= MAX_SENT_IMAGE_BYTES
            ):
                data, sent_type = image.data, content_type
            else:
                img.thumbnail((max_side, max_side))
                alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
                converted = img.convert("RGBA" if alpha else "RGB")
                out = io.BytesIO()
                if alpha:
                    converted.save(out, format="PNG", optimize=True)
                    sent_type = "image/png"
                else:
                    converted.save(out, format="JPEG", quality=90)
                    sent_type = "image/jpeg"
                data = out.getvalue()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError):
        raise LocalToolError("image: not an image that can be read (PNG, JPEG, WebP, GIF)") from None
    return f"data:{sent_type};base64,{base64.b64encode(data).decode('ascii')}"


@dataclass(frozen=True)
class Caption:
    """`caption`: image (+ detail) → `text`, by `llm_vision_model` (default `llm_model`)."""

    @property
    def spec(self) -> ToolSpec:
        return caption_spec()

    def unavailable(self, settings: Settings) -> str | None:
        return _unavailable(settings)

    def max_tokens(self, settings: Settings) -> int:
        """The longer system prompt, the user text, the image allowance, the framing and the
        completion cap."""
        return (
            _system_tokens(list(CAPTION_SYSTEM.values()))
            + math.ceil(len(CAPTION_USER) / 4)
            + IMAGE_TOKEN_ESTIMATE
            + FRAMING_TOKENS
            + settings.llm_max_tokens
        )

    def run(
        self, ctx: LocalContext, inputs: dict[str, Any], images: dict[str, list[LocalImage]]
    ) -> LocalResult:
        given = images.get("image") or []
        if len(given) != 1:
            raise LocalToolError("image: one image is needed")
        detail = str(inputs.get("detail") or "short")
        system = CAPTION_SYSTEM.get(detail, CAPTION_SYSTEM["short"])
        url = image_data_url(given[0], max_pixels=ctx.max_pixels)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": system},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": CAPTION_USER},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            },
        ]
        model = ctx.settings.llm_vision_model or ctx.settings.llm_model
        answer = _ask(ctx, messages, model)
        text = clean_answer(answer.text, limit=MAX_CAPTION_CHARS)
        if not text:
            raise LocalToolError("the LLM gave an empty answer", retryable=True)
        return LocalResult(values={"text": text}, usage=_usage(answer))


LLM_TOOLS: list[LocalTool] = [PromptEnhance(), Caption()]
