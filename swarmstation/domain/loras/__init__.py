r"""LoRA resolution: a prompt, the LoRAs a user may use and a tool's base model -> what to apply.

This module is pure: no I/O, no clock, no randomness; everything is a frozen value and nothing
passed in is mutated. The caller (the registry) turns its rows into :class:`LoraInfo` values,
builds one :class:`TriggerMatcher` per version of the trigger map, and calls :func:`resolve` per
job. :mod:`swarmstation.domain.lora_graph` then writes the result into the ComfyUI workflow.

Prompt syntax
=============

**Tags.** ``<lora:NAME>``, ``<lora:NAME:W>``, ``<lora:NAME:TE:UNET>`` and the named forms
``<lora:NAME:te=X:unet=Y>`` (``lyco`` is accepted as a synonym of ``lora``; both are matched
case-insensitively; whitespace around each part is ignored). ``NAME`` is matched, case-insensitively
and with runs of whitespace collapsed, against the LoRA's slug, then its aliases, then the stem of its
file name (``foo`` for ``foo.safetensors``). Every complete tag is removed from the encoder text,
whether it is honoured or not (ComfyUI does not parse tags; they would only add noise to the
conditioning).

**Weight convention (A1111 "extra networks").** One number sets both strengths. With two numbers
the **first is the text-encoder (CLIP) strength and the second the UNet/model strength**, exactly
as AUTOMATIC1111 reads them (``te`` = positional 1, ``unet`` = positional 2 defaulting to ``te``),
so prompts copied from Civitai keep their meaning. ``te=`` and ``unet=`` override the positional
values; ``unet`` defaults to ``te``. A third number (or ``dyn=``) is A1111's ``dyn_dim``: accepted
and ignored with a warning. A tag without a number uses the LoRA's ``default_weight`` (A1111 would
use 1.0; the LoRA's own recommended weight is the better default). On the ComfyUI side the strengths
map to ``LoraLoader.strength_clip`` (TE) and ``LoraLoader.strength_model`` (UNet). Note that the
ComfyUI custom nodes that parse tags put the model weight first; to say it unambiguously write
``<lora:x:unet=0.8:te=0.4>``.

**Triggers.** Each LoRA has trigger words and multi-word phrases. They match case-insensitively on
token boundaries, where a token is a run of word characters (``\w+``) or one other non-space
character: ``noir`` matches in ``"neo-noir,"`` and ``"(noir)"`` but not in ``"noirish"``; a phrase
matches when its tokens appear in order, any run of whitespace matching the whitespace between its
words and no whitespace allowed where the phrase has none (``k-pop`` does not match ``"k - pop"``).
Matching runs left to right, the longest phrase that has a usable (compatible) LoRA wins at each
position, and matches never overlap. The text is never changed: trigger words stay as written.

**Trigger weights.** ``trigger:0.6`` (also ``:.6``, ``:-0.5``, ``:1``): a number written directly
after a colon directly after the trigger, not followed by another digit, ``.digit`` or word
character, sets that trigger's weight for both strengths. Nothing else changes a weight: a sentence
period, comma or ``!`` after a trigger is ordinary punctuation. The ``:0.6`` stays in the text.

**Weights.** Every weight is a finite number in ``WEIGHT_MIN..WEIGHT_MAX`` (-10..10); a value
outside is **clamped** to the range with a warning (ComfyUI itself allows -100..100, but beyond 10 a
LoRA only destroys the image; a clamp keeps the user's intent of "strong" or "inverted"). A
``default_weight`` outside the range is clamped silently. Weight 0 (both strengths 0 for two-number
tags) disables the LoRA for this prompt: it is not applied, and because it was mentioned first, no
later tag or trigger of the same LoRA applies it either.

Selection rules
===============
- Only LoRAs compatible with the tool's base model apply (:func:`compatible`): a tag naming an
  incompatible LoRA is removed with a warning; a trigger whose LoRAs are all incompatible is
  ignored silently (it is just a word for this tool).
- One name or trigger, several LoRAs: the user's own LoRA, then one shared with the user, then a
  public one; within a tier the newest (largest ``created_at_rank``), then the smallest slug. A
  warning says so when the chosen tier held more than one compatible LoRA. A tag's exact slug match
  beats an alias match, which beats a file-stem match.
- Each LoRA at most once: the first *tag* naming it decides its weight (a tag beats a trigger,
  wherever the trigger is); without a tag, the first trigger mention decides. Later duplicate tags
  are removed with a warning; later trigger mentions are simply text.
- At most ``max_loras``: tags are served first (in prompt order), then triggers (in prompt order);
  the rest are dropped with a warning.
- :attr:`Resolution.loras` is in order of first appearance in the encoder text (the position where
  a tag was, or where a trigger starts); the first mention of a LoRA, tag or trigger, gives its place.

Encoder text
============
The text for the encoder is the prompt with every complete tag (``<lora:...>`` / ``<lyco:...>``
without ``<`` or ``>`` inside) removed and *nothing else changed*. If removing tags forms a new tag
(``"<lora:" + "<lora:x>" + "y>"``), that one is removed too, with a warning, and never honoured;
this repeats until no tag is left (computed in one linear pass, so a 10,000-character prompt of
nested tags costs milliseconds). Each maximal stretch of removed text becomes one space when it
sits between two non-space characters, so that the words on each side stay apart
(``"cat<lora:x>dog"`` gives ``"cat dog"``, ``"a<lora:x><lora:y>b"`` gives ``"a b"``), and leaves no
trace otherwise (``"a <lora:x> b"`` gives ``"a  b"``). An unclosed ``<lora:`` stays in the text
with a warning. Other extra-network kinds (``<hypernet:...>``) are ordinary text.

Idempotence
===========
Let ``r = resolve(p, m, **opts)`` and ``r2 = resolve(r.prompt, m, **opts)`` with the same matcher
and options. Then:

1. ``r2.prompt == r.prompt``: the encoder text is a fixed point; hence ``resolve(r2.prompt) == r2``
   (the whole :class:`Resolution`, warnings included).
2. If ``p`` contains no complete tag, ``r.prompt == p`` and therefore ``r2 == r``.
3. In general ``r2.loras`` are exactly the trigger LoRAs of ``r`` —
   ``r2.loras == tuple(a for a in r.loras if a.source == "trigger")`` — provided ``r`` dropped
   nothing for ``max_loras`` and no tag in ``p`` named a LoRA that a trigger in the text also
   selects. (In those two cases a tag held a LoRA's place or weight, and without the tag the
   trigger takes it.)

Bad input never raises: unknown names, malformed tags, non-numeric or out-of-range weights become
warnings (identical ones once; at most :data:`MAX_WARNINGS`, then one line saying how many more,
except that the ``max_loras`` warning is always kept). Only a prompt longer than
``max_prompt_chars`` raises :class:`PromptTooLong`.

The package: ``model`` (the types and base-model families), ``triggers`` (trigger matching),
``tags`` (tag syntax) and ``resolution`` (``resolve``); this module names the public API.
"""

from __future__ import annotations

from swarmstation.domain.loras.model import (
    BASE_MODEL_FAMILIES,
    MAX_WARNINGS,
    WEIGHT_MAX,
    WEIGHT_MIN,
    Access,
    AppliedLora,
    LoraInfo,
    PromptTooLong,
    Resolution,
    Visibility,
    base_model_family,
    compatible,
)
from swarmstation.domain.loras.resolution import resolve
from swarmstation.domain.loras.tags import strip_lora_tags
from swarmstation.domain.loras.triggers import TriggerMatcher, phrase_key

__all__ = [
    "BASE_MODEL_FAMILIES",
    "MAX_WARNINGS",
    "WEIGHT_MAX",
    "WEIGHT_MIN",
    "Access",
    "AppliedLora",
    "LoraInfo",
    "PromptTooLong",
    "Resolution",
    "TriggerMatcher",
    "Visibility",
    "base_model_family",
    "compatible",
    "phrase_key",
    "resolve",
    "strip_lora_tags",
]
