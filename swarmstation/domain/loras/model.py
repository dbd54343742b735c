"""What LoRA resolution works on and returns: the registry's view of a LoRA (``LoraInfo``), the
resolution (``Resolution``, ``AppliedLora``), base-model families, weight bounds, shared helpers."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from swarmstation.domain.errors import InvalidInput

Visibility = Literal["public", "private", "unlisted"]
Access = Literal["own", "shared", "public"]

#: The families :func:`base_model_family` returns. LoRAs only load on a model of their family;
#: ``"other"`` (unknown or unsupported) is compatible with nothing.
BASE_MODEL_FAMILIES: tuple[str, ...] = ("SD1.5", "SDXL", "FLUX", "SD3", "other")

#: At most this many warnings per resolution (then one saying how many more there were).
MAX_WARNINGS = 20

#: The accepted range of a LoRA weight (strength); values outside are clamped with a warning.
WEIGHT_MIN = -10.0
WEIGHT_MAX = 10.0

ACCESS_TIER: dict[str, int] = {"own": 0, "shared": 1, "public": 2}
_VISIBILITIES = frozenset({"public", "private", "unlisted"})
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pt2", ".bin", ".pth", ".pkl", ".sft")


class PromptTooLong(InvalidInput):
    """The prompt is longer than ``max_prompt_chars`` (a 4xx for the caller, not a server fault)."""

    code = "prompt_too_long"

    def __init__(self, length: int, limit: int) -> None:
        self.length = length
        self.limit = limit
        super().__init__(f"the prompt has {length} characters; at most {limit} are allowed")


@dataclass(frozen=True)
class LoraInfo:
    """A LoRA as the resolver sees it, from the point of view of one user.

    ``triggers`` holds trigger words and multi-word phrases as written; ``aliases`` are other names
    a tag may use. ``file_name`` is the name as ComfyUI sees it under ``models/loras``. ``access``
    says how *this* user may use it (the caller derives it from ownership and grants):
    ``"own"``, ``"shared"`` (a grant) or ``"public"``. ``created_at_rank`` orders LoRAs by age,
    larger = newer, so that this module needs no clock.

    Raises :class:`ValueError` for an empty slug, a non-finite ``default_weight`` or an unknown
    ``visibility`` / ``access``.
    """

    slug: str
    name: str
    triggers: tuple[str, ...]
    aliases: tuple[str, ...]
    default_weight: float
    base_model: str
    file_name: str
    owner_id: str
    visibility: Visibility
    access: Access
    created_at_rank: int

    def __post_init__(self) -> None:
        if not self.slug:
            raise ValueError("a LoRA needs a non-empty slug")
        if not math.isfinite(self.default_weight):
            raise ValueError(f"LoRA {self.slug!r}: default_weight must be finite")
        if self.visibility not in _VISIBILITIES:
            raise ValueError(f"LoRA {self.slug!r}: unknown visibility {self.visibility!r}")
        if self.access not in ACCESS_TIER:
            raise ValueError(f"LoRA {self.slug!r}: unknown access {self.access!r}")


@dataclass(frozen=True)
class AppliedLora:
    """One LoRA to apply to a job.

    ``strength_model`` and ``strength_clip`` are what ``LoraLoader`` receives (they differ only
    for a two-number or named tag; ``LoraLoaderModelOnly`` uses ``strength_model`` alone).
    ``weight`` is the single user-facing weight: the one number written (or the default), and for a
    tag with separate strengths the model (UNet) strength. ``source`` says whether a tag or a
    trigger selected it; ``matched_text`` is the tag or the trigger text as written.
    """

    slug: str
    file_name: str
    weight: float
    strength_model: float
    strength_clip: float
    source: Literal["tag", "trigger"]
    owner_id: str
    matched_text: str


@dataclass(frozen=True)
class Resolution:
    """The result of :func:`resolve`: encoder text, LoRAs in order of first appearance, warnings."""

    prompt: str
    loras: tuple[AppliedLora, ...]
    warnings: tuple[str, ...]


# --------------------------------------------------------------------------- base models


def base_model_family(base_model: str) -> str:
    """The family of a base-model name, one of :data:`BASE_MODEL_FAMILIES`.

    Accepts our tool names (``SD1.5``, ``SDXL``, ``Pony``, ``Illustrious``, ``NoobAI``, ``FLUX``,
    ``SD3``) and Civitai's ``baseModel`` strings (``SD 1.5 LCM``, ``SDXL 1.0``, ``Flux.1 D``,
    ``Flux.1 Kontext``, ``SD 3.5 Large``...), case-insensitively. Pony, Illustrious and NoobAI are
    SDXL-derived and belong to ``SDXL`` (``Pony V7`` is AuraFlow-based: ``other``). Flux.1 and
    Kontext are ``FLUX``; Flux.2, SD 2.x and every unknown name are ``other``.
    """
    compact = re.sub(r"[\s._\-]+", "", base_model.casefold())
    if compact.startswith("sdxl") or compact.startswith(("illustrious", "noobai")):
        return "SDXL"
    if compact.startswith("pony"):
        return "other" if compact.startswith("ponyv7") else "SDXL"
    if compact.startswith(("sd15", "sd14")) or compact in ("sd1", "sdv15", "stablediffusion15"):
        return "SD1.5"
    if compact.startswith("sd3"):
        return "SD3"
    if compact.startswith("kontext") or (compact.startswith("flux") and not compact.startswith("flux2")):
        return "FLUX"
    return "other"


def compatible(lora_base: str, tool_base: str) -> bool:
    """True when a LoRA made for ``lora_base`` can be used by a tool built on ``tool_base``.

    Same family and not ``"other"``: an SDXL tool takes SDXL, Pony, Illustrious and NoobAI LoRAs;
    an SD1.5 LoRA never loads on SDXL (the prior system allowed it; the weights do not fit).
    """
    family = base_model_family(lora_base)
    return family != "other" and family == base_model_family(tool_base)


def clamp_weight(value: float) -> float:
    return min(WEIGHT_MAX, max(WEIGHT_MIN, value))


def format_weight(value: float) -> str:
    return f"{value:g}"


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters for a warning (prompts may be 10,000 characters)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


EMPTY_LORAS: tuple[LoraInfo, ...] = ()
