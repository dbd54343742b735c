"""Tag syntax: finding, parsing and stripping ``<lora:name:weight>`` / ``<lyco:...>`` tags."""

from __future__ import annotations

import re
from dataclasses import dataclass

from swarmstation.domain.errors import InvalidInput
from swarmstation.domain.loras.model import WEIGHT_MAX, WEIGHT_MIN, clamp_weight, format_weight, shorten

OPEN_TAG_RE = re.compile(r"<(?:lora|lyco):", re.IGNORECASE | re.ASCII)
_ANGLE_RE = re.compile(r"[<>]")
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


# --------------------------------------------------------------------------- tag stripping


@dataclass(frozen=True)
class _Tag:
    raw: str
    pos: int  # position in the encoder text where the tag was


def strip_all_tags(prompt: str) -> tuple[str, list[_Tag], list[str]]:
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
            if OPEN_TAG_RE.match(prompt, i):
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
    return strip_all_tags(prompt)[0]


# --------------------------------------------------------------------------- tag parsing


@dataclass(frozen=True)
class _TagSpec:
    name: str
    te: float | None  # None: the LoRA's default weight
    unet: float | None
    problems: tuple[str, ...]  # non-fatal (clamps, ignored dyn)


class BadTag(InvalidInput):
    """A LoRA tag that cannot be read; the resolver turns it into a warning."""

    code = "bad_lora_tag"


def _parse_number(text: str, what: str, problems: list[str]) -> float:
    if not _NUMBER_RE.fullmatch(text):
        raise BadTag(f"{what} {shorten(text)!r} is not a number")
    value = float(text)  # the pattern admits no inf/nan; a huge number overflows to inf and is clamped
    if not WEIGHT_MIN <= value <= WEIGHT_MAX:
        clamped = clamp_weight(value)
        problems.append(
            f"{what} {shorten(text)} is outside {format_weight(WEIGHT_MIN)}..{format_weight(WEIGHT_MAX)}; "
            f"using {format_weight(clamped)}"
        )
        return clamped
    return value


def parse_tag(body: str) -> _TagSpec:
    parts = [p.strip() for p in body.split(":")]
    name = parts[0]
    if not name:
        raise BadTag("it names no LoRA")
    positional: list[str] = []
    named: dict[str, str] = {}
    for part in parts[1:]:
        if "=" in part:
            key, _, value = part.partition("=")
            key = key.strip().casefold()
            if key not in ("te", "unet", "dyn"):
                raise BadTag(f"unknown argument {shorten(key, 20)!r} (use te=, unet= or dyn=)")
            if key in named:
                raise BadTag(f"{key}= is given twice")
            named[key] = value.strip()
        else:
            if named:
                raise BadTag("a plain number after a named argument")
            positional.append(part)
    if len(positional) > 3:
        raise BadTag("too many numbers (at most text-encoder, UNet and dyn_dim)")
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
