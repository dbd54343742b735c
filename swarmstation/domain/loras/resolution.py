"""Resolution: ``resolve`` turns a prompt into the LoRAs to apply, the text for the encoder and
warnings (tags first, then trigger words), within the prompt-length bound."""

from __future__ import annotations

import re
from dataclasses import dataclass

from swarmstation.domain.loras.model import (
    MAX_WARNINGS,
    WEIGHT_MAX,
    WEIGHT_MIN,
    AppliedLora,
    PromptTooLong,
    Resolution,
    base_model_family,
    clamp_weight,
    format_weight,
    shorten,
)
from swarmstation.domain.loras.tags import OPEN_TAG_RE, BadTag, parse_tag, strip_all_tags
from swarmstation.domain.loras.triggers import TriggerMatcher

_TRIGGER_WEIGHT_RE = re.compile(r":([+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+))(?!\.?[0-9]|\w)")


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
        f"this {shorten(tool_base_model, 30)} tool"
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

    text, tags, formed = strip_all_tags(prompt)
    claims: dict[str, _Claim] = {}
    tag_order = 0
    for tag in tags:
        try:
            spec = parse_tag(tag.raw[6:-1])
        except BadTag as exc:
            warn(f"removed malformed LoRA tag {shorten(tag.raw)!r}: {exc}")
            continue
        cand, reachable = matcher._lookup_name(spec.name, family)
        if cand is None:
            if reachable:
                bases = ", ".join(sorted({lora.base_model for lora in reachable}))
                warn(
                    f"removed {shorten(tag.raw)!r}: LoRA {reachable[0].slug!r} is for {bases}, "
                    f"not for {tool_desc}"
                )
            else:
                warn(f"removed {shorten(tag.raw)!r}: unknown or inaccessible LoRA {shorten(spec.name)!r}")
            continue
        lora = cand.chosen
        if cand.rivals:
            warn(
                f"{shorten(spec.name)!r} names {cand.rivals + 1} {lora.access} LoRAs; "
                f"using {lora.slug!r}, the newest"
            )
        if lora.slug in claims:
            warn(
                f"removed duplicate tag {shorten(tag.raw)!r}: "
                f"LoRA {lora.slug!r} is already set by an earlier tag"
            )
            continue
        for problem in spec.problems:
            warn(f"{shorten(tag.raw)!r}: {problem}")
        default = clamp_weight(lora.default_weight)
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
            f"{shorten(formed[0])!r}; such tags are not honoured"
        )
    unclosed = OPEN_TAG_RE.search(text)
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
                f"trigger {shorten(matched)!r} matches {cand.rivals + 1} {lora.access} LoRAs; "
                f"using {lora.slug!r}, the newest"
            )
        weight_match = _TRIGGER_WEIGHT_RE.match(text, end)
        if weight_match is not None:
            value = float(weight_match.group(1))
            weight = clamp_weight(value)
            if weight != value:
                warn(
                    f"weight {shorten(weight_match.group(1), 20)} for {shorten(matched)!r} is outside "
                    f"{format_weight(WEIGHT_MIN)}..{format_weight(WEIGHT_MAX)}; using {format_weight(weight)}"
                )
        else:
            weight = clamp_weight(lora.default_weight)
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
