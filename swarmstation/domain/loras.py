"""LoRA resolution: a prompt, the LoRAs a user may use and a tool's base model -> what to apply.

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
token boundaries, where a token is a run of word characters (``\\w+``) or one other non-space
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
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

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

_ACCESS_TIER: dict[str, int] = {"own": 0, "shared": 1, "public": 2}
_VISIBILITIES = frozenset({"public", "private", "unlisted"})
_MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pt2", ".bin", ".pth", ".pkl", ".sft")


class PromptTooLong(ValueError):
    """The prompt is longer than ``max_prompt_chars`` (a 4xx for the caller, not a server fault)."""

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
        if self.access not in _ACCESS_TIER:
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


# --------------------------------------------------------------------------- tokens and keys

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_PAIR_RE = re.compile(r"(\s*)(\w+|[^\w\s])")
# The same on ASCII text, spelled out (faster): \s in a str pattern also matches \x1c-\x1f.
_ASCII_PAIR_RE = re.compile(r"([\t-\r\x1c-\x20]*)([A-Za-z0-9_]+|[^A-Za-z0-9_\t-\r\x1c-\x20])")
_OPEN_TAG_RE = re.compile(r"<(?:lora|lyco):", re.IGNORECASE | re.ASCII)
_ANGLE_RE = re.compile(r"[<>]")
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TRIGGER_WEIGHT_RE = re.compile(r":([+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+))(?!\.?[0-9]|\w)")


def phrase_key(text: str) -> str:
    """The lookup key of a trigger phrase or name: tokens case-folded, whitespace runs as one space.

    ``phrase_key("  Disney   Style ") == "disney style"``; ``phrase_key("K-Pop") == "k-pop"``;
    ``phrase_key("a , b") == "a , b"``. Two texts match as triggers exactly when their keys are equal.
    """
    parts: list[str] = []
    prev_end = -1
    for m in _TOKEN_RE.finditer(text):
        if parts and m.start() > prev_end:
            parts.append(" ")
        parts.append(m.group().casefold())
        prev_end = m.end()
    return "".join(parts)


def _name_key(name: str) -> str:
    return " ".join(name.casefold().split())


def _strip_extension(name: str) -> str:
    lowered = name.casefold()
    for ext in _MODEL_EXTENSIONS:
        if lowered.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name


def _file_stem(file_name: str) -> str:
    return _strip_extension(file_name.rsplit("/", 1)[-1])


def _priority(lora: LoraInfo) -> tuple[int, int, str]:
    return (_ACCESS_TIER[lora.access], -lora.created_at_rank, lora.slug)


def _clamp(value: float) -> float:
    return min(WEIGHT_MAX, max(WEIGHT_MIN, value))


def _fmt_weight(value: float) -> str:
    return f"{value:g}"


def _short(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters for a warning (prompts may be 10,000 characters)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- matcher

#: family -> LoRAs of that family, best first (see :func:`_priority`).
_ByFamily = Mapping[str, tuple[LoraInfo, ...]]
_EMPTY: tuple[LoraInfo, ...] = ()


def _group(loras: Iterable[LoraInfo], families: Mapping[str, str]) -> dict[str, tuple[LoraInfo, ...]]:
    """LoRAs by family (``families``: slug -> family), best first; ``other`` left out."""
    groups: dict[str, list[LoraInfo]] = {}
    for lora in loras:
        family = families[lora.slug]
        if family != "other":
            groups.setdefault(family, []).append(lora)
    return {
        family: (group[0],) if len(group) == 1 else tuple(sorted(group, key=_priority))
        for family, group in groups.items()
    }


@dataclass(frozen=True)
class _Layer:
    """One trigger map: phrase index, name index, slugs."""

    #: phrase key -> (LoRAs by family or None when only a prefix, whether it is a proper prefix).
    index: Mapping[str, tuple[_ByFamily | None, bool]]
    #: name key -> [(rank: 0 slug, 1 alias, 2 file stem; LoRA), ...] (unsorted; read-only after build)
    names: Mapping[str, Sequence[tuple[int, LoraInfo]]]
    #: slug -> family
    families: Mapping[str, str]
    slugs: frozenset[str]


def _build_layer(loras: Iterable[LoraInfo]) -> _Layer:
    by_slug: dict[str, LoraInfo] = {}
    for lora in loras:
        by_slug.setdefault(lora.slug, lora)  # first one wins on a duplicate slug
    family_of: dict[str, str] = {}
    families = {
        lora.slug: family_of.get(lora.base_model)
        or family_of.setdefault(lora.base_model, base_model_family(lora.base_model))
        for lora in by_slug.values()
    }

    phrases: dict[str, dict[str, LoraInfo]] = {}
    prefixes: set[str] = set()
    names: dict[str, list[tuple[int, LoraInfo]]] = {}
    finditer = _TOKEN_RE.finditer
    for lora in by_slug.values():
        for trigger in lora.triggers:
            key = ""
            prev_end = -1
            for m in finditer(trigger):
                if key:
                    prefixes.add(key)
                    if m.start() > prev_end:
                        key += " "
                key += m.group().casefold()
                prev_end = m.end()
            if key:
                phrases.setdefault(key, {})[lora.slug] = lora
        slug_key = _name_key(lora.slug)
        names.setdefault(slug_key, []).append((0, lora))
        for alias in lora.aliases:
            key = _name_key(alias)
            if key:
                names.setdefault(key, []).append((1, lora))
        key = _name_key(_file_stem(lora.file_name))
        if key and key != slug_key:
            names.setdefault(key, []).append((2, lora))

    index: dict[str, tuple[_ByFamily | None, bool]] = {}
    for key, group in phrases.items():
        if len(group) == 1:  # the common case, kept cheap
            ((slug, lora),) = group.items()
            family = families[slug]
            index[key] = ({family: (lora,)} if family != "other" else None, key in prefixes)
        else:
            index[key] = (_group(group.values(), families) or None, key in prefixes)
    for key in prefixes:
        if key not in index:
            index[key] = (None, True)
    return _Layer(index=index, names=names, families=families, slugs=frozenset(by_slug))


@dataclass(frozen=True)
class _Candidates:
    """The LoRAs a trigger or name selects for one family, best first, and how the choice went."""

    chosen: LoraInfo
    rivals: int  # other compatible LoRAs in the chosen access tier


def _choose(loras: tuple[LoraInfo, ...]) -> _Candidates:
    chosen = loras[0]
    tier = _ACCESS_TIER[chosen.access]
    rivals = sum(1 for other in loras[1:] if _ACCESS_TIER[other.access] == tier)
    return _Candidates(chosen, rivals)


class TriggerMatcher:
    """An index of the LoRAs one user may use: trigger phrases and tag names.

    Build it once per version of the trigger map (10,000 LoRAs with 30,000 triggers take about
    0.3 s on a small machine); :func:`resolve` only reads it, so one matcher serves any number of
    concurrent resolutions. For per-user maps, build the public map once and :meth:`overlay` the
    user's own and shared LoRAs on it (cheap: only the overlay is indexed).

    Duplicate slugs: within one build the first wins; in an overlay the overlay's entry replaces
    the base's (so an owner's public LoRA can be re-added with ``access="own"``).
    """

    __slots__ = ("_layers", "_shadows")

    def __init__(self, loras: Iterable[LoraInfo] = ()) -> None:
        layer = _build_layer(loras)
        self._layers: tuple[_Layer, ...] = (layer,)
        self._shadows: tuple[frozenset[str], ...] = (frozenset(),)

    @classmethod
    def _from_layers(cls, layers: tuple[_Layer, ...]) -> TriggerMatcher:
        matcher = cls.__new__(cls)
        matcher._layers = layers
        shadows: list[frozenset[str]] = []
        later: frozenset[str] = frozenset()
        for layer in reversed(layers):
            shadows.append(later)
            later = later | layer.slugs
        matcher._shadows = tuple(reversed(shadows))
        return matcher

    def overlay(self, loras: Iterable[LoraInfo]) -> TriggerMatcher:
        """A new matcher: this one plus ``loras``, which replace entries of the same slug."""
        return TriggerMatcher._from_layers((*self._layers, _build_layer(loras)))

    @property
    def slugs(self) -> frozenset[str]:
        """Every slug this matcher knows."""
        out: frozenset[str] = frozenset()
        for layer in self._layers:
            out |= layer.slugs
        return out

    # -- lookups (internal to this module)

    def _merge(self, parts: list[tuple[int, tuple[LoraInfo, ...]]]) -> tuple[LoraInfo, ...]:
        """Merge per-layer candidate lists, dropping entries shadowed by a later layer."""
        if len(parts) == 1 and not self._shadows[parts[0][0]]:
            return parts[0][1]
        merged = [
            lora for layer_no, loras in parts for lora in loras if lora.slug not in self._shadows[layer_no]
        ]
        return tuple(sorted(merged, key=_priority))

    def _lookup_name(self, name: str, family: str) -> tuple[_Candidates | None, tuple[LoraInfo, ...]]:
        """(the compatible choice or None, every LoRA the name reaches regardless of family)."""
        bare = _strip_extension(name)
        keys = [_name_key(name)] if bare == name else [_name_key(name), _name_key(bare)]
        every: dict[str, LoraInfo] = {}
        for key in keys:
            best: dict[str, tuple[int, LoraInfo]] = {}  # slug -> (best rank, LoRA), compatible only
            for layer_no, layer in enumerate(self._layers):
                shadowed = self._shadows[layer_no]
                for rank, lora in layer.names.get(key, ()):
                    if lora.slug in shadowed:
                        continue
                    every.setdefault(lora.slug, lora)
                    if family != "other" and layer.families[lora.slug] == family:
                        known = best.get(lora.slug)
                        if known is None or rank < known[0]:
                            best[lora.slug] = (rank, lora)
            if best:
                top = min(rank for rank, _ in best.values())
                return _choose(tuple(sorted((lo for r, lo in best.values() if r == top), key=_priority))), ()
        return None, tuple(sorted(every.values(), key=_priority))

    def _scan(self, text: str, family: str) -> list[tuple[int, int, _Candidates]]:
        """Leftmost-longest, non-overlapping trigger matches: (start, end, candidates)."""
        pairs, keys = _tokenise(text)
        n = len(keys)
        found: list[tuple[int, int, tuple[LoraInfo, ...]]] = []  # (first token, last token, LoRAs)
        single = len(self._layers) == 1
        index = self._layers[0].index
        i = 0
        while i < n:
            best_j = -1
            best: tuple[LoraInfo, ...] = _EMPTY
            if single:
                hit = index.get(keys[i])
                if hit is None:
                    i += 1
                    continue
                key = keys[i]
                j = i
                while True:
                    grouped, is_prefix = hit
                    if grouped is not None:
                        fam = grouped.get(family)
                        if fam:
                            best_j, best = j, fam
                    if not is_prefix or j + 1 >= n:
                        break
                    j += 1
                    key += (" " + keys[j]) if pairs[j][0] else keys[j]
                    hit = index.get(key)
                    if hit is None:
                        break
            else:
                best_j, best = self._scan_layers(pairs, keys, i, family)
            if best_j < 0:
                i += 1
                continue
            found.append((i, best_j, best))
            i = best_j + 1
        # Offsets only for the matches: a running sum over the (whitespace, token) pairs.
        out: list[tuple[int, int, _Candidates]] = []
        cursor, offset = 0, 0  # offset = where pairs[cursor] begins in text
        for first, last, loras in found:
            offset += sum(map(len, map("".join, pairs[cursor:first])))
            start = offset + len(pairs[first][0])
            offset += sum(map(len, map("".join, pairs[first : last + 1])))
            cursor = last + 1
            out.append((start, offset, _choose(loras)))
        return out

    def _scan_layers(
        self, pairs: list[tuple[str, str]], keys: list[str], i: int, family: str
    ) -> tuple[int, tuple[LoraInfo, ...]]:
        n = len(keys)
        found: dict[int, list[tuple[int, tuple[LoraInfo, ...]]]] = {}
        for layer_no, layer in enumerate(self._layers):
            key = keys[i]
            hit = layer.index.get(key)
            j = i
            while hit is not None:
                grouped, is_prefix = hit
                if grouped is not None:
                    fam = grouped.get(family)
                    if fam:
                        found.setdefault(j, []).append((layer_no, fam))
                if not is_prefix or j + 1 >= n:
                    break
                j += 1
                key += (" " + keys[j]) if pairs[j][0] else keys[j]
                hit = layer.index.get(key)
        for j in sorted(found, reverse=True):
            loras = self._merge(found[j])
            if loras:
                return j, loras
        return -1, _EMPTY


def _tokenise(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Tokens of ``text`` for matching (see :func:`phrase_key`).

    Returns ``(pairs, keys)``: ``pairs[i]`` is ``(whitespace before token i, token i)``, as written
    or lowercased (same lengths), so that the pairs' lengths add up to offsets in ``text``;
    ``keys[i]`` is token ``i`` case-folded.
    """
    if text.isascii():  # fast path: _ASCII_PAIR_RE tokenises ASCII as _PAIR_RE does; lower() keeps lengths
        pairs = _ASCII_PAIR_RE.findall(text.lower())
        return pairs, [tok for _, tok in pairs]
    pairs = _PAIR_RE.findall(text)
    return pairs, [tok.casefold() for _, tok in pairs]


# --------------------------------------------------------------------------- tag stripping


@dataclass(frozen=True)
class _Tag:
    raw: str
    pos: int  # position in the encoder text where the tag was


def _strip_all(prompt: str) -> tuple[str, list[_Tag], list[str]]:
    """Remove tags as if removing every innermost tag again and again until none is left.

    Returns ``(encoder text, the tags written in the prompt with their positions in the encoder
    text, the tags that only formed when other tags were removed)``. Each maximal stretch of removed
    text becomes one space when it sits between two non-space characters, nothing otherwise.

    One linear pass over the ``<`` and ``>`` characters with a stack of open ``<lora:`` tags: a
    ``>`` closes the innermost open tag; a ``<`` that opens no tag is never removed, so no tag
    opened before it can close.
    """
    if "<" not in prompt:
        return prompt, [], []
    out: list[str] = []  # chunks of the encoder text; never an empty one
    length = 0
    cut = False  # removed text ends where out ends
    stack: list[list[int]] = []  # [chunk index, text length, prompt offset, 1 if a tag was removed inside]
    tags: list[_Tag] = []
    formed: list[str] = []
    last = 0  # prompt[last:] is not yet in out

    def emit(chunk: str) -> None:
        nonlocal length, cut
        if cut:
            cut = False
            if out and not out[-1][-1].isspace() and not chunk[0].isspace():
                out.append(" ")  # keep the words on each side apart
                length += 1
        out.append(chunk)
        length += len(chunk)

    for m in _ANGLE_RE.finditer(prompt):
        i = m.start()
        if prompt[i] == "<":
            if i > last:
                emit(prompt[last:i])
                last = i
            if _OPEN_TAG_RE.match(prompt, i):
                stack.append([len(out), length, i, 0])
            else:
                stack.clear()
            continue
        if not stack:
            continue  # a plain ">"
        chunk, start_len, offset, removed_inside = stack.pop()
        if removed_inside:
            formed.append("".join(out[chunk:]) + prompt[last : i + 1])
        else:
            tags.append(_Tag(prompt[offset : i + 1], start_len))
        k = len(tags) - 1
        while k >= 0 and tags[k].pos > start_len:  # a tag written inside this one sat where it was
            tags[k] = _Tag(tags[k].raw, start_len)
            k -= 1
        del out[chunk:]
        length = start_len
        cut = True
        last = i + 1
        if stack:
            stack[-1][3] = 1
    if last < len(prompt):
        emit(prompt[last:])
    return "".join(out), tags, formed


def strip_lora_tags(prompt: str) -> str:
    """The encoder text of ``prompt``: every ``<lora:...>`` / ``<lyco:...>`` tag removed (see module doc)."""
    return _strip_all(prompt)[0]


# --------------------------------------------------------------------------- tag parsing


@dataclass(frozen=True)
class _TagSpec:
    name: str
    te: float | None  # None: the LoRA's default weight
    unet: float | None
    problems: tuple[str, ...]  # non-fatal (clamps, ignored dyn)


class _BadTag(Exception):
    pass


def _parse_number(text: str, what: str, problems: list[str]) -> float:
    if not _NUMBER_RE.fullmatch(text):
        raise _BadTag(f"{what} {_short(text)!r} is not a number")
    value = float(text)  # the pattern admits no inf/nan; a huge number overflows to inf and is clamped
    if not WEIGHT_MIN <= value <= WEIGHT_MAX:
        clamped = _clamp(value)
        problems.append(
            f"{what} {_short(text)} is outside {_fmt_weight(WEIGHT_MIN)}..{_fmt_weight(WEIGHT_MAX)}; "
            f"using {_fmt_weight(clamped)}"
        )
        return clamped
    return value


def _parse_tag(body: str) -> _TagSpec:
    parts = [p.strip() for p in body.split(":")]
    name = parts[0]
    if not name:
        raise _BadTag("it names no LoRA")
    positional: list[str] = []
    named: dict[str, str] = {}
    for part in parts[1:]:
        if "=" in part:
            key, _, value = part.partition("=")
            key = key.strip().casefold()
            if key not in ("te", "unet", "dyn"):
                raise _BadTag(f"unknown argument {_short(key, 20)!r} (use te=, unet= or dyn=)")
            if key in named:
                raise _BadTag(f"{key}= is given twice")
            named[key] = value.strip()
        else:
            if named:
                raise _BadTag("a plain number after a named argument")
            positional.append(part)
    if len(positional) > 3:
        raise _BadTag("too many numbers (at most text-encoder, UNet and dyn_dim)")
    problems: list[str] = []
    te = _parse_number(positional[0], "weight", problems) if len(positional) >= 1 else None
    if "te" in named:
        te = _parse_number(named["te"], "te weight", problems)
    unet = _parse_number(positional[1], "UNet weight", problems) if len(positional) >= 2 else te
    if "unet" in named:
        unet = _parse_number(named["unet"], "unet weight", problems)
    if len(positional) >= 3 or "dyn" in named:
        problems.append("dyn_dim is not supported and was ignored")
    return _TagSpec(name=name, te=te, unet=unet, problems=tuple(problems))


# --------------------------------------------------------------------------- resolution


@dataclass
class _Claim:
    pos: int
    applied: AppliedLora | None  # None: disabled by weight 0
    from_tag: bool
    order: int  # within its kind (tag / trigger), in prompt order


def resolve(
    prompt: str,
    matcher: TriggerMatcher,
    *,
    tool_base_model: str,
    max_loras: int = 8,
    max_prompt_chars: int = 10_000,
) -> Resolution:
    """Resolve ``<lora:...>`` tags and trigger words in ``prompt`` (see the module docstring).

    ``matcher`` holds the LoRAs this user may use (anything else is "unknown or inaccessible");
    ``tool_base_model`` is the tool's base model (see :func:`compatible`); ``max_loras`` bounds
    the LoRAs per job (``ValueError`` when negative).

    Deterministic: the same arguments always give an equal :class:`Resolution`. Idempotent in the
    sense stated in the module docstring: ``resolve(r.prompt).prompt == r.prompt``, a tag-free
    prompt resolves to the same result again, and resolving ``r.prompt`` gives the trigger LoRAs of
    ``r`` unless a tag held their place. Raises :class:`PromptTooLong` when ``prompt`` has more
    than ``max_prompt_chars`` characters; never raises for any other text.
    """
    if len(prompt) > max_prompt_chars:
        raise PromptTooLong(len(prompt), max_prompt_chars)
    if max_loras < 0:
        raise ValueError("max_loras must be >= 0")
    family = base_model_family(tool_base_model)
    tool_desc = (
        f"this {_short(tool_base_model, 30)} tool"
        if tool_base_model.strip()
        else "a tool without a base model"
    )
    warnings: list[str] = []
    seen: set[str] = set()
    suppressed = 0

    def warn(message: str, *, always: bool = False) -> None:
        nonlocal suppressed
        if message in seen:
            return
        seen.add(message)
        if len(warnings) < MAX_WARNINGS or always:
            warnings.append(message)
        else:
            suppressed += 1

    text, tags, formed = _strip_all(prompt)
    claims: dict[str, _Claim] = {}
    tag_order = 0
    for tag in tags:
        try:
            spec = _parse_tag(tag.raw[6:-1])
        except _BadTag as exc:
            warn(f"removed malformed LoRA tag {_short(tag.raw)!r}: {exc}")
            continue
        cand, reachable = matcher._lookup_name(spec.name, family)
        if cand is None:
            if reachable:
                bases = ", ".join(sorted({lora.base_model for lora in reachable}))
                warn(
                    f"removed {_short(tag.raw)!r}: LoRA {reachable[0].slug!r} is for {bases}, "
                    f"not for {tool_desc}"
                )
            else:
                warn(f"removed {_short(tag.raw)!r}: unknown or inaccessible LoRA {_short(spec.name)!r}")
            continue
        lora = cand.chosen
        if cand.rivals:
            warn(
                f"{_short(spec.name)!r} names {cand.rivals + 1} {lora.access} LoRAs; "
                f"using {lora.slug!r}, the newest"
            )
        if lora.slug in claims:
            warn(
                f"removed duplicate tag {_short(tag.raw)!r}: "
                f"LoRA {lora.slug!r} is already set by an earlier tag"
            )
            continue
        for problem in spec.problems:
            warn(f"{_short(tag.raw)!r}: {problem}")
        default = _clamp(lora.default_weight)
        te = default if spec.te is None else spec.te
        unet = default if spec.unet is None else spec.unet
        applied = None
        if te != 0 or unet != 0:
            applied = AppliedLora(
                slug=lora.slug,
                file_name=lora.file_name,
                weight=unet,
                strength_model=unet,
                strength_clip=te,
                source="tag",
                owner_id=lora.owner_id,
                matched_text=tag.raw,
            )
        claims[lora.slug] = _Claim(tag.pos, applied, True, tag_order)
        tag_order += 1

    if formed:
        warn(
            f"removed {len(formed)} LoRA tag(s) formed by removing other tags, such as "
            f"{_short(formed[0])!r}; such tags are not honoured"
        )
    unclosed = _OPEN_TAG_RE.search(text)
    if unclosed is not None:
        snippet = text[unclosed.start() : unclosed.start() + 40]
        warn(f"kept {snippet!r} as text: an unclosed LoRA tag (a tag is <lora:name:weight>)")

    trigger_order = 0
    for start, end, cand in matcher._scan(text, family):
        lora = cand.chosen
        matched = text[start:end]
        claim = claims.get(lora.slug)
        if claim is not None:
            claim.pos = min(claim.pos, start)
            continue
        if cand.rivals:
            warn(
                f"trigger {_short(matched)!r} matches {cand.rivals + 1} {lora.access} LoRAs; "
                f"using {lora.slug!r}, the newest"
            )
        weight_match = _TRIGGER_WEIGHT_RE.match(text, end)
        if weight_match is not None:
            value = float(weight_match.group(1))
            weight = _clamp(value)
            if weight != value:
                warn(
                    f"weight {_short(weight_match.group(1), 20)} for {_short(matched)!r} is outside "
                    f"{_fmt_weight(WEIGHT_MIN)}..{_fmt_weight(WEIGHT_MAX)}; using {_fmt_weight(weight)}"
                )
        else:
            weight = _clamp(lora.default_weight)
        applied = None
        if weight != 0:
            applied = AppliedLora(
                slug=lora.slug,
                file_name=lora.file_name,
                weight=weight,
                strength_model=weight,
                strength_clip=weight,
                source="trigger",
                owner_id=lora.owner_id,
                matched_text=matched,
            )
        claims[lora.slug] = _Claim(start, applied, False, trigger_order)
        trigger_order += 1

    live = [claim for claim in claims.values() if claim.applied is not None]
    live.sort(key=lambda c: (not c.from_tag, c.order))
    kept, dropped = live[:max_loras], live[max_loras:]
    if dropped:
        names = ", ".join(repr(c.applied.slug) for c in dropped if c.applied is not None)
        warn(f"at most {max_loras} LoRAs per job; dropped {names}", always=True)
    kept.sort(key=lambda c: (c.pos, not c.from_tag, c.order))
    loras = tuple(c.applied for c in kept if c.applied is not None)
    if suppressed:
        warnings.append(f"{suppressed} more warning(s) not shown")
    return Resolution(prompt=text, loras=loras, warnings=tuple(warnings))
