"""The prior system's ``resolveLoraTriggers`` behaviours (reference/prior-system.md §3.3), ported.

Each test says what became of one behaviour:

- ``test_kept_*``: the behaviour is kept as it was.
- ``test_fixed_*``: the prior behaviour was a fault (issue 3 names single-word triggers only,
  lowercased output, sentence periods changing weights, aliases ignored); the test pins the fix.
- ``test_changed_*``: a deliberate change of design (no tags in the encoder text, say), tested as
  the new behaviour.

Not ported, because they belong to the caller rather than to this pure function: the per-user
5-minute cache and stale-cache fallback, the "no user id means no permission check" path (a
matcher always holds exactly one user's LoRAs), and running resolution only for tools with a
LoRA loader (the tool's ``accepts_loras`` flag).
"""

from __future__ import annotations

from typing import Any

import pytest

from swarmstation.domain.loras import LoraInfo, Resolution, TriggerMatcher, resolve


def lora(slug: str, *triggers: str, **kw: Any) -> LoraInfo:
    fields: dict[str, Any] = {
        "slug": slug,
        "name": slug,
        "triggers": triggers,
        "aliases": (),
        "default_weight": 1.0,
        "base_model": "SDXL",
        "file_name": f"{slug}.safetensors",
        "owner_id": "someone",
        "visibility": "public",
        "access": "public",
        "created_at_rank": 0,
    }
    fields.update(kw)
    return LoraInfo(**fields)


def run(prompt: str, *loras: LoraInfo, base: str = "SDXL") -> Resolution:
    return resolve(prompt, TriggerMatcher(loras), tool_base_model=base)


def weights(r: Resolution) -> list[tuple[str, float]]:
    return [(a.slug, a.weight) for a in r.loras]


NEON = lora("neon-glow", "neon", default_weight=0.8)


# --------------------------------------------------------------------------- step 1: empty map


def test_kept_empty_map_leaves_a_tag_free_prompt_unchanged() -> None:
    """Prior: an empty trigger map returns the prompt unchanged."""
    r = run("A neon city. At night!")
    assert (r.prompt, r.loras, r.warnings) == ("A neon city. At night!", (), ())


def test_fixed_empty_map_still_strips_tags() -> None:
    """Prior: with an empty map even ``<lora:...>`` tags reached the encoder. Now every tag is
    removed, and an unknown one says so."""
    r = run("a city <lora:neon-glow:0.5>")
    assert r.prompt == "a city " and r.loras == ()
    assert r.warnings == ("removed '<lora:neon-glow:0.5>': unknown or inaccessible LoRA 'neon-glow'",)


# --------------------------------------------------------------------------- step 2: explicit tags


def test_kept_explicit_tag_with_known_slug_is_applied() -> None:
    """Prior: ``<lora:slug:weight>`` with a numeric weight and a slug in the map is recorded."""
    r = run("a city <lora:neon-glow:0.55>", NEON)
    assert weights(r) == [("neon-glow", 0.55)]
    assert r.loras[0].source == "tag" and r.loras[0].owner_id == "someone"


def test_changed_explicit_tag_is_removed_from_the_encoder_text() -> None:
    """Prior: the tag stayed in the modified prompt (for ComfyUI Deploy to parse). ComfyUI does
    not parse tags, so now the LoRA goes into the graph and the tag leaves the text."""
    assert run("a city <lora:neon-glow:0.55>", NEON).prompt == "a city "


def test_kept_unknown_or_inaccessible_slug_is_stripped_with_a_warning() -> None:
    """Prior: unknown slug with a user id -> tag stripped + warning "unknown or inaccessible"."""
    r = run("a <lora:someone-elses:1> city", NEON)
    assert r.prompt == "a  city" and r.loras == ()
    assert "unknown or inaccessible" in r.warnings[0]


def test_fixed_non_numeric_weight_is_stripped_not_kept_as_text() -> None:
    """Prior: a non-numeric weight kept the tag as plain text (+ warning), so the encoder saw it."""
    r = run("a <lora:neon-glow:strong> city", NEON)
    assert r.prompt == "a  city" and r.loras == ()
    assert "is not a number" in r.warnings[0]


def test_fixed_duplicate_tag_first_wins_and_the_rest_are_removed() -> None:
    """Prior: a duplicate slug passed through (both tags stayed). Now the first sets the weight."""
    r = run("<lora:neon-glow:0.3> a <lora:neon-glow:0.9>", NEON)
    assert weights(r) == [("neon-glow", 0.3)] and r.prompt == " a "
    assert "duplicate" in r.warnings[0]


# --------------------------------------------------------------------------- steps 3-4: tokens


@pytest.mark.parametrize(
    "prompt", ["neon", "(neon)", "[neon]", "{neon}", "'neon'", '"neon"', "neon,", "neon?", "a,neon,b"]
)
def test_kept_triggers_match_between_punctuation(prompt: str) -> None:
    """Prior: tokens split on whitespace and ``.,!?()[]{}'"``."""
    r = run(prompt, NEON)
    assert weights(r) == [("neon-glow", 0.8)] and r.prompt == prompt


def test_kept_colon_weight_including_leading_dot() -> None:
    """Prior: ``word:weight``, with ``neon:.4`` re-merged so that it works."""
    assert weights(run("city, neon:.4", NEON)) == [("neon-glow", 0.4)]
    assert weights(run("city, neon:1.25", NEON)) == [("neon-glow", 1.25)]


def test_kept_matching_is_case_insensitive() -> None:
    """Prior: the word part is lowercased for matching."""
    assert weights(run("NeOn city", NEON)) == [("neon-glow", 0.8)]


def test_fixed_trigger_text_keeps_its_case() -> None:
    """Prior: the re-emitted trigger word was the lowercased form."""
    assert run("NeOn City", NEON).prompt == "NeOn City"


@pytest.mark.parametrize(
    ("prompt", "prior_weight"), [("neon.", 0.6), ("neon..", 0.4), ("neon!", 1.0), ("neon!!", 1.2)]
)
def test_fixed_punctuation_never_changes_a_weight(prompt: str, prior_weight: float) -> None:
    """Prior: trailing dots subtracted 0.2 each, ``!`` added 0.2 each, so a sentence-final
    period after a trigger lowered its weight. Now punctuation is punctuation."""
    r = run(f"a city of {prompt} Then more", NEON)
    assert weights(r) == [("neon-glow", 0.8)]
    assert weights(r) != [("neon-glow", prior_weight)]
    assert r.prompt == f"a city of {prompt} Then more"


# --------------------------------------------------------------------------- step 5: weight 0, base models


def test_kept_explicit_weight_zero_leaves_the_word_and_applies_nothing() -> None:
    """Prior: ``word:0`` leaves the token as it is and applies no LoRA."""
    r = run("neon:0 city", NEON)
    assert r.prompt == "neon:0 city" and r.loras == ()


@pytest.mark.parametrize(
    ("tool", "lora_base", "prior", "now", "mark"),
    [
        ("SDXL", "SDXL", True, True, "kept"),
        ("SDXL", "Illustrious", True, True, "kept"),
        ("SDXL", "SD1.5", True, False, "fixed: SD1.5 weights do not fit SDXL"),
        ("SDXL", "Pony", False, True, "changed: Pony is SDXL-family"),
        ("SD1.5", "SD1.5", True, True, "kept"),
        ("SD1.5", "SDXL", False, False, "kept"),
        ("FLUX", "Flux.1 D", True, True, "kept: FLUX takes FLUX*"),
        ("FLUX", "FLUX", True, True, "kept"),
        ("FLUX", "KONTEXT", False, True, "changed: Kontext is FLUX.1-family"),
        ("KONTEXT", "FLUX", True, True, "kept"),
        ("KONTEXT", "KONTEXT", True, True, "kept"),
        ("SD3", "SD3", True, True, "kept: exact match"),
        ("other", "other", True, False, "fixed: unknown families never match"),
        ("", "SDXL", True, False, "fixed: no base model no longer means no filtering"),
    ],
)
def test_base_model_filtering(tool: str, lora_base: str, prior: bool, now: bool, mark: str) -> None:
    """Prior step 5: SDXL tools took SD1.5/SDXL/ILLUSTRIOUS, SD1.5 only SD1.5, FLUX anything
    starting "FLUX", KONTEXT KONTEXT or FLUX*, others an exact match, no base model no filter."""
    r = run("neon", lora("x", "neon", base_model=lora_base), base=tool)
    assert bool(r.loras) is now, mark


# --------------------------------------------------------------------------- step 6: conflicts


def test_kept_conflict_order_own_then_shared_then_newest_public_with_warning() -> None:
    """Prior: user-owned private (newest) > private shared to the user (newest) > public
    (newest; warning if more than one)."""
    own_old = lora("own-old", "neon", access="own", visibility="private", created_at_rank=1)
    own_new = lora("own-new", "neon", access="own", visibility="private", created_at_rank=2)
    shared = lora("shared", "neon", access="shared", visibility="private", created_at_rank=9)
    pub_old = lora("pub-old", "neon", created_at_rank=3)
    pub_new = lora("pub-new", "neon", created_at_rank=8)
    assert [a.slug for a in run("neon", pub_new, shared, own_old, own_new).loras] == ["own-new"]
    assert [a.slug for a in run("neon", pub_new, pub_old, shared).loras] == ["shared"]
    r = run("neon", pub_old, pub_new)
    assert [a.slug for a in r.loras] == ["pub-new"] and "2 public LoRAs" in r.warnings[0]


# --------------------------------------------------------------------------- step 7: output


def test_fixed_repeated_trigger_keeps_the_word() -> None:
    """Prior: a trigger of an already applied slug was dropped from the text (punctuation kept).
    Now the text is never changed; the LoRA is still applied once."""
    r = run("neon street, neon sign.", NEON)
    assert r.prompt == "neon street, neon sign." and weights(r) == [("neon-glow", 0.8)]


def test_kept_default_weight_when_no_weight_is_written() -> None:
    """Prior: weight = explicit, else round2(defaultWeight + modifier)."""
    assert weights(run("neon", lora("x", "neon", default_weight=0.65))) == [("x", 0.65)]


def test_changed_output_has_no_tags_and_loras_are_returned_separately() -> None:
    """Prior: each trigger became ``<lora:slug:weight>trigger`` (1.0 printed as ``1``) in the
    modified prompt. Now the text is left as written and the LoRAs come back as data."""
    r = run("a neon city", NEON)
    assert r.prompt == "a neon city" and "<lora:" not in r.prompt
    a = r.loras[0]
    assert (a.slug, a.file_name, a.strength_model, a.strength_clip, a.matched_text) == (
        "neon-glow",
        "neon-glow.safetensors",
        0.8,
        0.8,
        "neon",
    )


def test_changed_lorahash_placeholder_triggers_are_replaced_by_tags() -> None:
    """Prior: LoRAs without trained words got a ``lorahash_<hex>`` trigger that was replaced, not
    re-emitted. Now such a LoRA has no trigger and is used by its slug in a tag; bare words never
    select it."""
    quiet = lora("quiet-style")
    assert weights(run("quiet-style <lora:quiet-style:0.6>", quiet)) == [("quiet-style", 0.6)]
    assert run("quiet-style portrait", quiet).loras == ()


# --------------------------------------------------------------------------- notes under §3.3


def test_fixed_multi_word_trigger_phrases_fire() -> None:
    """Prior: only single-token triggers could match; multi-word Civitai phrases never fired."""
    r = run("Portrait In The Style Of  Disney", lora("disney", "in the style of disney"))
    assert [a.matched_text for a in r.loras] == ["In The Style Of  Disney"]


def test_changed_aliases_name_the_lora_and_the_text_is_never_substituted() -> None:
    """Prior: cognates matched as extra trigger words, but their ``replaceWithBaseTrigger`` was
    never substituted (aliases were effectively ignored). Now aliases name the LoRA in tags;
    cognate words are imported as triggers; the text is never rewritten."""
    ghibli = lora("ghibli-v2", "ohwx ghibli", "studio ghibli", aliases=("ghibli", "Studio Ghibli Style"))
    assert weights(run("<lora:ghibli:0.5>", ghibli)) == [("ghibli-v2", 0.5)]
    assert weights(run("<lora:studio ghibli style:0.7>", ghibli)) == [("ghibli-v2", 0.7)]
    r = run("a Studio Ghibli landscape", ghibli)
    assert r.prompt == "a Studio Ghibli landscape" and weights(r) == [("ghibli-v2", 1.0)]


def test_changed_set_lora_strength_is_an_explicit_tag() -> None:
    """Prior: ``setLoraStrength(prompt, slug, w)`` rewrote the weight of a tag in the modified
    prompt ("tweak" menus). There is no tag in the text now; a client that tweaks a weight adds
    ``<lora:slug:w>``, which beats the trigger wherever it is."""
    assert weights(run("neon city <lora:neon-glow:0.25>", NEON)) == [("neon-glow", 0.25)]
