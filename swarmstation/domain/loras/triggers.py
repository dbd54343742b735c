"""Trigger matching: phrase keys and the ``TriggerMatcher`` that finds a registry's trigger words
and phrases in a prompt (longest match, per base-model family, best-access LoRA first)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from swarmstation.domain.loras.model import (
    ACCESS_TIER,
    EMPTY_LORAS,
    MODEL_EXTENSIONS,
    LoraInfo,
    base_model_family,
)

# --------------------------------------------------------------------------- tokens and keys

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_PAIR_RE = re.compile(r"(\s*)(\w+|[^\w\s])")
# The same on ASCII text, spelled out (faster): \s in a str pattern also matches \x1c-\x1f.
_ASCII_PAIR_RE = re.compile(r"([\t-\r\x1c-\x20]*)([A-Za-z0-9_]+|[^A-Za-z0-9_\t-\r\x1c-\x20])")


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
    for ext in MODEL_EXTENSIONS:
        if lowered.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name


def _file_stem(file_name: str) -> str:
    return _strip_extension(file_name.rsplit("/", 1)[-1])


def _priority(lora: LoraInfo) -> tuple[int, int, str]:
    return (ACCESS_TIER[lora.access], -lora.created_at_rank, lora.slug)


# --------------------------------------------------------------------------- matcher

#: family -> LoRAs of that family, best first (see :func:`_priority`).
_ByFamily = Mapping[str, tuple[LoraInfo, ...]]


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
    tier = ACCESS_TIER[chosen.access]
    rivals = sum(1 for other in loras[1:] if ACCESS_TIER[other.access] == tier)
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
            best: tuple[LoraInfo, ...] = EMPTY_LORAS
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
        return -1, EMPTY_LORAS


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
