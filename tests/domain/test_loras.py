"""LoRA resolution (swarmstation.domain.loras): tables for each rule, then hypothesis properties."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmstation.domain.loras import (
    MAX_WARNINGS,
    WEIGHT_MAX,
    WEIGHT_MIN,
    AppliedLora,
    LoraInfo,
    PromptTooLong,
    Resolution,
    TriggerMatcher,
    base_model_family,
    compatible,
    phrase_key,
    resolve,
    strip_lora_tags,
)
from swarmstation.domain.loras.tags import strip_all_tags
from swarmstation.domain.loras.triggers import _ASCII_PAIR_RE, _PAIR_RE


def make_lora(slug: str, *triggers: str, **kw: Any) -> LoraInfo:
    fields: dict[str, Any] = {
        "slug": slug,
        "name": slug.title(),
        "triggers": triggers,
        "aliases": (),
        "default_weight": 1.0,
        "base_model": "SDXL",
        "file_name": f"{slug}.safetensors",
        "owner_id": f"owner-of-{slug}",
        "visibility": "public",
        "access": "public",
        "created_at_rank": 0,
    }
    fields.update(kw)
    return LoraInfo(**fields)


def run(prompt: str, *loras: LoraInfo, base: str = "SDXL", **kw: Any) -> Resolution:
    return resolve(prompt, TriggerMatcher(loras), tool_base_model=base, **kw)


def slugs(r: Resolution) -> list[str]:
    return [a.slug for a in r.loras]


def only(r: Resolution) -> AppliedLora:
    assert len(r.loras) == 1, r
    return r.loras[0]


# --------------------------------------------------------------------------- base models


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("SD1.5", "SD1.5"),
        ("SD 1.5", "SD1.5"),
        ("SD 1.5 LCM", "SD1.5"),
        ("SD 1.4", "SD1.5"),
        ("sd15", "SD1.5"),
        ("SDXL", "SDXL"),
        ("SDXL 1.0", "SDXL"),
        ("SDXL Lightning", "SDXL"),
        ("Pony", "SDXL"),
        ("Illustrious", "SDXL"),
        ("ILLUSTRIOUS", "SDXL"),
        ("NoobAI", "SDXL"),
        ("Pony V7", "other"),
        ("FLUX", "FLUX"),
        ("Flux.1 D", "FLUX"),
        ("Flux.1 S", "FLUX"),
        ("Flux.1 Kontext", "FLUX"),
        ("KONTEXT", "FLUX"),
        ("Flux.2 D", "other"),
        ("SD3", "SD3"),
        ("SD 3.5 Large", "SD3"),
        ("SD 2.1", "other"),
        ("AuraFlow", "other"),
        ("other", "other"),
        ("", "other"),
    ],
)
def test_base_model_family(name: str, family: str) -> None:
    assert base_model_family(name) == family


@pytest.mark.parametrize(
    ("lora_base", "tool_base", "ok"),
    [
        ("SDXL", "SDXL", True),
        ("Pony", "SDXL", True),
        ("Illustrious", "SDXL", True),
        ("SDXL", "Pony", True),
        ("NoobAI", "Illustrious", True),
        ("SD1.5", "SDXL", False),
        ("SDXL", "SD1.5", False),
        ("Flux.1 D", "FLUX", True),
        ("SDXL", "FLUX", False),
        ("SD3", "SD3", True),
        ("other", "other", False),
        ("Chroma", "Chroma", False),
    ],
)
def test_compatible(lora_base: str, tool_base: str, ok: bool) -> None:
    assert compatible(lora_base, tool_base) is ok


def test_lora_info_validates_its_fields() -> None:
    with pytest.raises(ValueError):
        make_lora("")
    with pytest.raises(ValueError):
        make_lora("x", default_weight=float("nan"))
    with pytest.raises(ValueError):
        make_lora("x", access="everyone")
    with pytest.raises(ValueError):
        make_lora("x", visibility="secret")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("  Disney   Style ", "disney style"),
        ("K-Pop", "k-pop"),
        ("a , b", "a , b"),
        ("hatsune miku (vocaloid)", "hatsune miku (vocaloid)"),
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),
        ("", ""),
    ],
)
def test_phrase_key(text: str, key: str) -> None:
    assert phrase_key(text) == key


# --------------------------------------------------------------------------- triggers


def test_trigger_matches_case_insensitively_and_keeps_the_text() -> None:
    r = run("A portrait, DISNEY style.", make_lora("disney", "disney", default_weight=0.8))
    assert r.prompt == "A portrait, DISNEY style."
    a = only(r)
    assert (a.slug, a.source, a.matched_text, a.weight) == ("disney", "trigger", "DISNEY", 0.8)
    assert (a.strength_model, a.strength_clip) == (0.8, 0.8)
    assert a.file_name == "disney.safetensors" and a.owner_id == "owner-of-disney"
    assert r.warnings == ()


@pytest.mark.parametrize(
    ("prompt", "hit"),
    [
        ("noir", True),
        ("neo-noir, city", True),
        ("(noir)", True),
        ("[noir]", True),
        ("'noir'", True),
        ('"noir"', True),
        ("noir!", True),
        ("noir's", True),
        ("noirish", False),
        ("film_noir", False),
        ("noir2", False),
        ("n o i r", False),
    ],
)
def test_word_boundaries(prompt: str, hit: bool) -> None:
    assert slugs(run(prompt, make_lora("noir", "noir"))) == (["noir"] if hit else [])


@pytest.mark.parametrize(
    ("prompt", "matched"),
    [
        ("in the style of disney", "style of disney"),
        ("in the Style\n\tof   DISNEY now", "Style\n\tof   DISNEY"),
        ("style of", None),
        ("style, of disney", None),
        ("styleof disney", None),
    ],
)
def test_multi_word_phrases_match_any_whitespace(prompt: str, matched: str | None) -> None:
    r = run(prompt, make_lora("d", "style of disney"))
    assert [a.matched_text for a in r.loras] == ([matched] if matched else [])


def test_phrase_punctuation_must_match_exactly() -> None:
    lora = make_lora("kpop", "k-pop", "hatsune miku (vocaloid)")
    assert slugs(run("K-POP idol", lora)) == ["kpop"]
    assert slugs(run("k - pop idol", lora)) == []
    assert only(run("Hatsune  Miku (Vocaloid), 1girl", lora)).matched_text == "Hatsune  Miku (Vocaloid)"
    assert slugs(run("hatsune miku(vocaloid)", lora)) == []


def test_longest_phrase_wins_and_matches_do_not_overlap() -> None:
    loras = (
        make_lora("style", "style"),
        make_lora("style-of-disney", "style of disney"),
        make_lora("disney-castle", "disney castle"),
        make_lora("castle", "castle"),
    )
    r = run("style of disney castle", *loras)
    assert slugs(r) == ["style-of-disney", "castle"]
    assert [a.matched_text for a in r.loras] == ["style of disney", "castle"]
    assert slugs(run("a style of painting", *loras)) == ["style"]


def test_longest_phrase_is_the_longest_with_a_compatible_lora() -> None:
    loras = (make_lora("short", "pixel"), make_lora("long-sd15", "pixel art", base_model="SD1.5"))
    assert slugs(run("pixel art", *loras, base="SDXL")) == ["short"]
    assert slugs(run("pixel art", *loras, base="SD1.5")) == ["long-sd15"]


def test_non_ascii_prompts_fold_case_fully() -> None:
    loras = (make_lora("strasse", "STRASSE"), make_lora("cafe", "café style"))
    assert slugs(run("Eine Straße bei Nacht", *loras)) == ["strasse"]
    r = run("Un CAFÉ   STYLE — ok", *loras)
    assert only(r).matched_text == "CAFÉ   STYLE"


def test_same_trigger_twice_applies_once_and_keeps_both_words() -> None:
    r = run("disney, more disney", make_lora("disney", "disney"))
    assert r.prompt == "disney, more disney"
    assert slugs(r) == ["disney"] and only(r).matched_text == "disney"


def test_loras_are_in_order_of_first_appearance() -> None:
    loras = (make_lora("a", "alpha"), make_lora("b", "beta"), make_lora("c", "gamma"))
    assert slugs(run("gamma then alpha then beta", *loras)) == ["c", "a", "b"]
    assert slugs(run("beta <lora:c> alpha", *loras)) == ["b", "c", "a"]


# --------------------------------------------------------------------------- trigger weights


@pytest.mark.parametrize(
    ("prompt", "weight"),
    [
        ("disney:0.6 portrait", 0.6),
        ("disney:.4", 0.4),
        ("disney:-0.5", -0.5),
        ("disney:+0.5", 0.5),
        ("disney:1", 1.0),
        ("disney:0.6.", 0.6),
        ("disney:0.6, next", 0.6),
        ("portrait of disney:1. Next sentence", 1.0),
        ("disney.", 0.8),
        ("disney...", 0.8),
        ("disney!!", 0.8),
        ("disney?", 0.8),
        ("disney: 0.6", 0.8),
        ("disney :0.6", 0.8),
        ("disney:abc", 0.8),
        ("disney:1.5.3", 0.8),
        ("disney:0.6x", 0.8),
        ("disney:1e3", 0.8),
        ("disney:٣", 0.8),
    ],
)
def test_trigger_weight_only_from_a_colon_number(prompt: str, weight: float) -> None:
    r = run(prompt, make_lora("disney", "disney", default_weight=0.8))
    a = only(r)
    assert (a.weight, a.strength_model, a.strength_clip) == (weight, weight, weight)
    assert r.prompt == prompt  # the ":0.6" stays in the text
    assert r.warnings == ()


def test_trigger_weight_on_a_phrase() -> None:
    assert only(run("style of disney:0.3", make_lora("d", "style of disney"))).weight == 0.3


@pytest.mark.parametrize(
    ("written", "used"), [("50", WEIGHT_MAX), ("-12.5", WEIGHT_MIN), ("9" * 400, WEIGHT_MAX)]
)
def test_trigger_weight_out_of_range_is_clamped_with_a_warning(written: str, used: float) -> None:
    r = run(f"disney:{written}", make_lora("disney", "disney"))
    assert only(r).weight == used
    assert len(r.warnings) == 1 and "outside -10..10" in r.warnings[0]
    assert len(r.warnings[0]) < 200  # a 400-digit number is cut in the warning


@pytest.mark.parametrize("prompt", ["disney:0", "disney:0.0", "disney:-0", "disney:.0"])
def test_trigger_weight_zero_disables(prompt: str) -> None:
    r = run(prompt, make_lora("disney", "disney"))
    assert r.loras == () and r.prompt == prompt and r.warnings == ()


def test_weight_zero_first_disables_later_mentions_too() -> None:
    lora = make_lora("disney", "disney")
    assert run("disney:0 and disney again", lora).loras == ()
    assert run("disney:0 <lora:disney:0.7>", lora).loras[0].weight == 0.7  # a tag beats a trigger
    assert run("<lora:disney:0> disney", lora).loras == ()


def test_default_weight_is_clamped() -> None:
    assert only(run("big", make_lora("big", "big", default_weight=25.0))).weight == WEIGHT_MAX


# --------------------------------------------------------------------------- tags


def test_tag_is_honoured_and_removed() -> None:
    r = run("a cat <lora:pixel:0.7> on a mat", make_lora("pixel"))
    assert r.prompt == "a cat  on a mat"
    a = only(r)
    assert (a.source, a.weight, a.strength_model, a.strength_clip) == ("tag", 0.7, 0.7, 0.7)
    assert a.matched_text == "<lora:pixel:0.7>"
    assert r.warnings == ()


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("cat<lora:pixel:1>dog", "cat dog"),
        ("cat <lora:pixel:1>dog", "cat dog"),
        ("<lora:pixel:1>dog", "dog"),
        ("cat<lora:pixel:1>", "cat"),
        ("cat<lora:pixel:1><lora:other:1>dog", "cat dog"),
        ("<lora:pixel:1>", ""),
    ],
)
def test_tag_removal_keeps_words_apart(prompt: str, expected: str) -> None:
    assert run(prompt, make_lora("pixel"), make_lora("other")).prompt == expected


@pytest.mark.parametrize(
    ("tag", "model", "clip"),
    [
        ("<lora:x>", 0.8, 0.8),  # no number: the LoRA's default weight
        ("<lora:x:0.5>", 0.5, 0.5),
        ("<lora:x:0.3:0.9>", 0.9, 0.3),  # A1111: text encoder first, UNet second
        ("<lora:x:te=0.3:unet=0.9>", 0.9, 0.3),
        ("<lora:x:unet=0.9:te=0.3>", 0.9, 0.3),
        ("<lora:x:te=0.3>", 0.3, 0.3),  # unet defaults to te, as in A1111
        ("<lora:x:unet=0.2>", 0.2, 0.8),  # te defaults to the default weight
        ("<lora:x:0.5:unet=1>", 1.0, 0.5),
        ("<lora:x:0:1>", 1.0, 0.0),  # one strength 0 is still a LoRA
        ("<LORA: x : 0.5 >", 0.5, 0.5),
        ("<lyco:x:0.5>", 0.5, 0.5),
        ("<lora:x:1e-1>", 0.1, 0.1),
    ],
)
def test_tag_weights(tag: str, model: float, clip: float) -> None:
    r = run(f"a {tag} b", make_lora("x", default_weight=0.8))
    a = only(r)
    assert (a.strength_model, a.strength_clip, a.weight) == (model, clip, model)
    assert r.prompt == "a  b"


def test_tag_dyn_dim_is_ignored_with_a_warning() -> None:
    r = run("<lora:x:0.5:0.6:8>", make_lora("x"))
    assert (only(r).strength_clip, only(r).strength_model) == (0.5, 0.6)
    assert len(r.warnings) == 1 and "dyn_dim" in r.warnings[0]


@pytest.mark.parametrize("tag", ["<lora:x:0>", "<lora:x:0:0>", "<lora:x:te=0:unet=0>", "<lora:x:-0.0>"])
def test_tag_weight_zero_disables(tag: str) -> None:
    r = run(f"{tag} x", make_lora("x", "x"))
    assert r.loras == () and r.warnings == ()


@pytest.mark.parametrize(
    ("written", "used"), [("11", WEIGHT_MAX), ("-100", WEIGHT_MIN), ("1" * 400, WEIGHT_MAX)]
)
def test_tag_weight_out_of_range_is_clamped_with_a_warning(written: str, used: float) -> None:
    r = run(f"<lora:x:{written}>", make_lora("x"))
    assert only(r).weight == used
    assert len(r.warnings) == 1 and "outside -10..10" in r.warnings[0]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pixel-art", "pixel-art"),  # slug
        ("PIXEL-ART", "pixel-art"),  # case-insensitive
        ("Pixel  Art", "pixel-art"),  # alias, whitespace collapsed
        ("pxl", "pixel-art"),  # alias
        ("px_v2", "pixel-art"),  # file stem
        ("px_v2.safetensors", "pixel-art"),  # file name with extension
        ("pixel-art.safetensors", "pixel-art"),
    ],
)
def test_tag_names(name: str, expected: str) -> None:
    lora = make_lora("pixel-art", aliases=("Pixel Art", "pxl"), file_name="sdxl/px_v2.safetensors")
    assert slugs(run(f"<lora:{name}:1>", lora)) == [expected]


def test_slug_beats_alias_beats_file_stem() -> None:
    a = make_lora("foo", access="public", created_at_rank=1)
    b = make_lora("bar", aliases=("foo",), access="own", created_at_rank=9)
    c = make_lora("baz", file_name="foo.safetensors", access="own", created_at_rank=10)
    assert slugs(run("<lora:foo>", a, b, c)) == ["foo"]
    assert slugs(run("<lora:foo>", b, c)) == ["bar"]
    assert slugs(run("<lora:foo>", c)) == ["baz"]


def test_alias_conflicts_follow_access_then_age() -> None:
    pub_old = make_lora("p1", aliases=("shiny",), created_at_rank=1)
    pub_new = make_lora("p2", aliases=("shiny",), created_at_rank=2)
    shared = make_lora("s1", aliases=("shiny",), access="shared", visibility="private")
    r = run("<lora:shiny>", pub_old, pub_new)
    assert slugs(r) == ["p2"] and len(r.warnings) == 1 and "2 public" in r.warnings[0]
    r = run("<lora:shiny>", pub_old, pub_new, shared)
    assert slugs(r) == ["s1"] and r.warnings == ()


@pytest.mark.parametrize(
    ("prompt", "fragment"),
    [
        ("<lora:nope:1>", "unknown or inaccessible LoRA 'nope'"),
        ("<lora:>", "names no LoRA"),
        ("<lora::1>", "names no LoRA"),
        ("<lora:x:abc>", "is not a number"),
        ("<lora:x:1:2:3:4>", "too many numbers"),
        ("<lora:x:foo=1>", "unknown argument"),
        ("<lora:x:te=1:te=2>", "given twice"),
        ("<lora:x:te=1:0.5>", "after a named argument"),
        ("<lora:x:te=abc>", "is not a number"),
        ("<lora:x:inf>", "is not a number"),
        ("<lora:x:nan>", "is not a number"),
        ("<lora:x:1,5>", "is not a number"),
        ("<lora:sd15:1>", "is for SD1.5, not for this SDXL tool"),
    ],
)
def test_bad_tags_are_removed_with_a_warning(prompt: str, fragment: str) -> None:
    r = run(f"a {prompt} b", make_lora("x"), make_lora("sd15", base_model="SD1.5"))
    assert r.loras == ()
    assert r.prompt == "a  b"
    assert len(r.warnings) == 1 and fragment in r.warnings[0], r.warnings


@pytest.mark.parametrize("prompt", ["a <lora:x", "a <lora:x:0.5 b", "<lora:x <lora:y", "a <LyCo:"])
def test_unclosed_tag_stays_as_text_with_a_warning(prompt: str) -> None:
    r = run(prompt, make_lora("z"))
    assert r.prompt == prompt and r.loras == ()
    assert len(r.warnings) == 1 and "unclosed" in r.warnings[0]


def test_tag_formed_by_removing_a_tag_is_removed_not_honoured() -> None:
    r = run("<lora:<lora:x:0.5>y:1> z", make_lora("x"), make_lora("y"))
    assert slugs(r) == ["x"] and r.prompt == " z"
    assert r.warnings == (
        "removed 1 LoRA tag(s) formed by removing other tags, such as '<lora:y:1>'; "
        "such tags are not honoured",
    )
    assert strip_lora_tags("<lora:<lora:x:0.5>y:1> z") == " z"


def test_other_extra_network_kinds_are_left_alone() -> None:
    r = run("a <hypernet:foo:1> b", make_lora("foo"))
    assert r.prompt == "a <hypernet:foo:1> b" and r.loras == ()


def test_duplicate_tag_first_wins() -> None:
    r = run("<lora:x:0.5> <lora:x:0.9> <lora:X>", make_lora("x"))
    assert only(r).weight == 0.5
    assert len(r.warnings) == 2 and all("duplicate" in w for w in r.warnings)


def test_tag_beats_trigger_and_first_mention_gives_the_place() -> None:
    loras = (make_lora("disney", "disney"), make_lora("other", "other"))
    r = run("disney and other <lora:disney:0.3>", *loras)
    assert slugs(r) == ["disney", "other"]
    assert r.loras[0].source == "tag" and r.loras[0].weight == 0.3
    assert r.warnings == ()


# --------------------------------------------------------------------------- access, base models, conflicts


def test_conflict_order_own_then_shared_then_newest_public() -> None:
    own = make_lora("own", "neon", access="own", visibility="private", created_at_rank=1)
    shared = make_lora("shared", "neon", access="shared", visibility="private", created_at_rank=5)
    pub_old = make_lora("pub-old", "neon", created_at_rank=3)
    pub_new = make_lora("pub-new", "neon", created_at_rank=9)
    assert slugs(run("neon", own, shared, pub_old, pub_new)) == ["own"]
    assert slugs(run("neon", shared, pub_old, pub_new)) == ["shared"]
    r = run("neon", pub_old, pub_new)
    assert slugs(r) == ["pub-new"]
    assert r.warnings == ("trigger 'neon' matches 2 public LoRAs; using 'pub-new', the newest",)
    assert run("neon", own, pub_old, pub_new).warnings == ()


def test_an_incompatible_own_lora_gives_way_to_a_compatible_public_one() -> None:
    own = make_lora("own-sd15", "neon", access="own", base_model="SD1.5")
    pub = make_lora("pub-xl", "neon", base_model="Pony")
    assert slugs(run("neon", own, pub, base="SDXL")) == ["pub-xl"]
    assert slugs(run("neon", own, pub, base="SD1.5")) == ["own-sd15"]


def test_incompatible_triggers_are_silent() -> None:
    r = run("anime girl", make_lora("anime", "anime", base_model="SD1.5"), base="SDXL")
    assert r.loras == () and r.warnings == ()


@pytest.mark.parametrize("base", ["other", "", "Chroma"])
def test_a_tool_without_a_known_family_takes_no_lora(base: str) -> None:
    r = run("neon <lora:neon>", make_lora("neon", "neon"), base=base)
    assert r.loras == () and r.prompt == "neon "
    assert len(r.warnings) == 1


def test_inaccessible_loras_are_unknown() -> None:
    # The matcher holds only what this user may use; another user's private LoRA is simply absent.
    r = run("<lora:secret:1> secret", make_lora("public-one", "other"))
    assert r.loras == () and r.warnings == (
        "removed '<lora:secret:1>': unknown or inaccessible LoRA 'secret'",
    )


# --------------------------------------------------------------------------- limits


def test_max_loras_serves_tags_first() -> None:
    loras = [make_lora(f"t{i}", f"word{i}") for i in range(5)] + [make_lora("tagged")]
    r = run("word0 word1 word2 word3 word4 <lora:tagged:0.5>", *loras, max_loras=3)
    assert slugs(r) == ["t0", "t1", "tagged"]
    assert r.warnings == ("at most 3 LoRAs per job; dropped 't2', 't3', 't4'",)
    assert run("word0 <lora:tagged>", *loras, max_loras=0).loras == ()
    with pytest.raises(ValueError):
        run("x", max_loras=-1)


def test_prompt_too_long() -> None:
    assert run("a" * 100, max_prompt_chars=100).prompt == "a" * 100
    with pytest.raises(PromptTooLong) as info:
        run("a" * 101, max_prompt_chars=100)
    assert isinstance(info.value, ValueError)
    assert (info.value.length, info.value.limit) == (101, 100)
    with pytest.raises(PromptTooLong):
        run("x" * 10_001)


def test_many_warnings_are_capped() -> None:
    r = run(
        " ".join(f"<lora:nope{i}>" for i in range(30)) + " " + " ".join(f"w{i}" for i in range(5)),
        *[make_lora(f"t{i}", f"w{i}") for i in range(5)],
        max_loras=2,
    )
    assert len(r.warnings) == MAX_WARNINGS + 2
    assert r.warnings[-2].startswith("at most 2 LoRAs per job")
    assert r.warnings[-1] == "10 more warning(s) not shown"


def test_a_long_prompt_of_nested_tags_is_handled() -> None:
    prompt = "<lora:" * 1000 + "x" + ">" * 1000
    r = run(prompt, make_lora("x"))
    assert slugs(r) == ["x"]
    assert r.prompt.strip() == ""
    assert len(r.warnings) == 1 and "formed by removing" in r.warnings[0]


# --------------------------------------------------------------------------- overlay


def test_overlay_adds_user_loras_and_replaces_same_slug() -> None:
    base = TriggerMatcher(
        [make_lora("pub", "neon", created_at_rank=5), make_lora("mine", "mine", created_at_rank=1)]
    )
    user = base.overlay(
        [
            make_lora("mine", "mine", "neon", access="own", created_at_rank=1),
            make_lora("priv", "secret phrase here", access="shared", visibility="private"),
        ]
    )
    assert user.slugs == {"pub", "mine", "priv"}
    r = resolve("neon and secret   phrase here", user, tool_base_model="SDXL")
    assert slugs(r) == ["mine", "priv"]
    assert r.warnings == ()
    # the base is unchanged
    assert slugs(resolve("neon secret phrase here", base, tool_base_model="SDXL")) == ["pub"]


def test_overlay_longest_match_across_layers() -> None:
    base = TriggerMatcher([make_lora("short", "pixel")])
    user = base.overlay([make_lora("long", "pixel art", access="own")])
    assert slugs(resolve("pixel art", user, tool_base_model="SDXL")) == ["long"]
    assert slugs(resolve("pixel", user, tool_base_model="SDXL")) == ["short"]
    both = TriggerMatcher([make_lora("short", "pixel"), make_lora("long", "pixel art", access="own")])
    for prompt in ["pixel art", "pixel", "pixel pixel art <lora:short:0.2>"]:
        assert resolve(prompt, user, tool_base_model="SDXL") == resolve(prompt, both, tool_base_model="SDXL")


def test_overlay_shadowed_entries_are_gone_for_triggers_and_names() -> None:
    base = TriggerMatcher([make_lora("x", "old trigger", aliases=("old",))])
    user = base.overlay([make_lora("x", "new trigger", access="own")])
    assert resolve("old trigger <lora:old>", user, tool_base_model="SDXL").loras == ()
    assert slugs(resolve("new trigger", user, tool_base_model="SDXL")) == ["x"]


def test_duplicate_slug_in_one_build_first_wins() -> None:
    m = TriggerMatcher([make_lora("x", "first"), make_lora("x", "second")])
    assert slugs(resolve("first second", m, tool_base_model="SDXL")) == ["x"]
    assert resolve("second", m, tool_base_model="SDXL").loras == ()


# =========================================================================== properties

_FILLER = ["a", "portrait", "of", "the", "City", "at", "night", ",", ".", "!", "(", ")", ":", "0.5", "-", "é"]
_WORLD = (
    make_lora("neon", "neon", "neon lights", created_at_rank=1),
    make_lora("neon-b", "neon", created_at_rank=2, base_model="Pony"),
    make_lora("disney", "disney", "style of disney", default_weight=0.7, aliases=("Disney Style",)),
    make_lora("kpop", "k-pop", base_model="Illustrious"),
    make_lora("mine", "my face", access="own", visibility="private", owner_id="me"),
    make_lora("gift", "gifted look", access="shared", visibility="private"),
    make_lora("anime15", "anime", base_model="SD1.5"),
    make_lora("fluxy", "anime", "flux look", base_model="Flux.1 D"),
    make_lora("zero", "nothing", default_weight=0.0),
    make_lora("hidden", "hidden gem", access="own"),
)
#: LoRAs that exist but that this user may not use: never in the matcher.
_FORBIDDEN = (
    make_lora("theirs", "their face", owner_id="someone-else", visibility="private"),
    make_lora("private-neon", "neon", access="shared", visibility="private"),
)
_USER = TriggerMatcher(_WORLD)
_BY_SLUG = {lora.slug: lora for lora in _WORLD}
_TRIGGERS = sorted({t for lora in (*_WORLD, *_FORBIDDEN) for t in lora.triggers})
_NAMES = sorted({lora.slug for lora in (*_WORLD, *_FORBIDDEN)} | {"Disney Style", "nope", ""})
_TAG_RE = re.compile(r"<(?:lora|lyco):[^<>]*>", re.IGNORECASE)


def _cases(text: str, flips: list[bool]) -> str:
    return "".join(c.upper() if f else c for c, f in zip(text, flips + [False] * len(text), strict=False))


@st.composite
def _tag(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(_NAMES))
    args = draw(
        st.lists(
            st.sampled_from(["0.5", "1", "0", "-2", "abc", "te=0.3", "unet=0.9", "12", ".25", ""]),
            max_size=3,
        )
    )
    return "<" + draw(st.sampled_from(["lora", "LoRA", "lyco"])) + ":" + ":".join([name, *args]) + ">"


@st.composite
def _piece(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 9))
    if kind <= 3:
        return draw(st.sampled_from(_FILLER))
    if kind <= 6:
        trigger = draw(st.sampled_from(_TRIGGERS))
        trigger = _cases(trigger, draw(st.lists(st.booleans(), max_size=len(trigger))))
        trigger = re.sub(" ", lambda _: draw(st.sampled_from([" ", "  ", "\t", "\n "])), trigger)
        suffix = draw(st.sampled_from(["", "", ":0.6", ":0", ":.4", ":abc", ".", "!", ":15", ":1."]))
        return trigger + suffix
    if kind <= 8:
        return draw(_tag())
    return draw(st.sampled_from(["<lora:", "<lora:x", ">", "<", "lora:neon:1>"]))


@st.composite
def prompts(draw: st.DrawFn) -> str:
    pieces = draw(st.lists(_piece(), max_size=25))
    seps = draw(st.lists(st.sampled_from([" ", "", ", ", "\n"]), min_size=len(pieces), max_size=len(pieces)))
    return "".join(p + s for p, s in zip(pieces, seps, strict=True))


_BASES = st.sampled_from(["SDXL", "SD1.5", "FLUX", "Pony", "other"])
_PROPS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _words_without_tags(text: str) -> list[str]:
    while True:
        stripped = _TAG_RE.sub(" ", text)
        if stripped == text:
            return text.split()
        text = stripped


@_PROPS
@given(prompts(), _BASES, st.integers(0, 10))
def test_property_words_are_kept_in_order(prompt: str, base: str, max_loras: int) -> None:
    r = resolve(prompt, _USER, tool_base_model=base, max_loras=max_loras)
    assert r.prompt.split() == _words_without_tags(prompt)
    if _TAG_RE.search(prompt) is None:
        assert r.prompt == prompt


@_PROPS
@given(prompts(), _BASES, st.integers(0, 10))
def test_property_only_accessible_compatible_loras_within_limits(
    prompt: str, base: str, max_loras: int
) -> None:
    r = resolve(prompt, _USER, tool_base_model=base, max_loras=max_loras)
    seen = [a.slug for a in r.loras]
    assert len(seen) == len(set(seen)) <= max_loras
    for a in r.loras:
        lora = _BY_SLUG[a.slug]  # accessible: a LoRA of this user's matcher, never a forbidden one
        assert compatible(lora.base_model, base)
        assert (a.file_name, a.owner_id) == (lora.file_name, lora.owner_id)
        assert WEIGHT_MIN <= a.strength_model <= WEIGHT_MAX and WEIGHT_MIN <= a.strength_clip <= WEIGHT_MAX
        assert a.strength_model != 0 or a.strength_clip != 0
        assert a.weight == a.strength_model
        if a.source == "trigger":
            assert a.strength_model == a.strength_clip
            assert phrase_key(a.matched_text) in {phrase_key(t) for t in lora.triggers}
            assert a.matched_text in r.prompt
        else:
            assert a.matched_text in prompt and _TAG_RE.fullmatch(a.matched_text)


@_PROPS
@given(prompts(), _BASES, st.randoms(use_true_random=False))
def test_property_deterministic_whatever_the_build_order(prompt: str, base: str, rnd: random.Random) -> None:
    shuffled = list(_WORLD)
    rnd.shuffle(shuffled)
    first = resolve(prompt, _USER, tool_base_model=base)
    assert resolve(prompt, _USER, tool_base_model=base) == first
    assert resolve(prompt, TriggerMatcher(shuffled), tool_base_model=base) == first


@_PROPS
@given(prompts(), _BASES, st.integers(0, 10))
def test_property_idempotent(prompt: str, base: str, max_loras: int) -> None:
    r = resolve(prompt, _USER, tool_base_model=base, max_loras=max_loras)
    r2 = resolve(r.prompt, _USER, tool_base_model=base, max_loras=max_loras)
    # 1. the encoder text is a fixed point, so resolving it again changes nothing at all
    assert r2.prompt == r.prompt
    assert resolve(r2.prompt, _USER, tool_base_model=base, max_loras=max_loras) == r2
    # 2. a prompt without tags resolves to exactly the same result
    if _TAG_RE.search(prompt) is None:
        assert r2 == r
    # 3. otherwise r2 holds exactly r's trigger LoRAs, unless max_loras dropped some or a tag named
    #    a LoRA that a trigger also selects
    tag_named: set[str] = set()
    for tag in _TAG_RE.findall(prompt):
        name = tag.split(":", 2)[1].rstrip(">").strip()
        tag_named |= {
            s for s, lo in _BY_SLUG.items() if name.casefold() in (s, *(a.casefold() for a in lo.aliases))
        }
    dropped = any(w.startswith("at most") for w in r.warnings)
    if not dropped and not tag_named & {a.slug for a in r2.loras}:
        assert r2.loras == tuple(a for a in r.loras if a.source == "trigger")


_NASTY = st.text(
    alphabet=st.sampled_from(list("<>:lorayc=.-+0123456789eE \t\nxé_,!()ßİ")) | st.characters(),
    max_size=300,
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(_NASTY, prompts(), st.lists(st.sampled_from(["<lora:", "x", ":", ">", "1", " "])).map("".join))
)
def test_property_arbitrary_text_never_raises(text: str) -> None:
    for base in ("SDXL", "FLUX"):
        try:
            r = resolve(text, _USER, tool_base_model=base, max_prompt_chars=200)
        except PromptTooLong:
            assert len(text) > 200
            continue
        assert isinstance(r, Resolution)
        assert resolve(r.prompt, _USER, tool_base_model=base).prompt == r.prompt
        assert _TAG_RE.search(r.prompt) is None


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
def test_property_ascii_fast_path_tokenises_like_the_unicode_path(text: str) -> None:
    assert _ASCII_PAIR_RE.findall(text) == _PAIR_RE.findall(text)


# --------------------------------------------------------------------------- tag removal vs. its definition


def _reference_strip(prompt: str) -> tuple[str, list[tuple[str, int]], int]:
    """The definition, executed literally: replace every innermost tag by a marker, again and
    again until no tag is left; then each run of markers becomes one space between two non-space
    characters and nothing elsewhere. Each tag gets its own marker (private-use characters, which
    the generated prompts never contain), so that we can tell where the written tags ended up."""
    written: list[str] = []
    parent: dict[str, str] = {}  # marker -> marker of the formed tag that swallowed it
    formed = 0
    text = prompt
    first = True
    while True:
        pieces, last, found = [], 0, False
        for m in _TAG_RE.finditer(text):
            found = True
            if first:
                marker = chr(0xE000 + len(written))
                written.append(m.group())
            else:
                marker = chr(0xF0000 + formed)
                formed += 1
                for inner in m.group():
                    if 0xE000 <= ord(inner) < 0xF8FF or ord(inner) >= 0xF0000:
                        parent[inner] = marker
            pieces += [text[last : m.start()], marker]
            last = m.end()
        if not found:
            break
        text = "".join([*pieces, text[last:]])
        first = False

    def is_marker(c: str) -> bool:
        return 0xE000 <= ord(c) < 0xF8FF or ord(c) >= 0xF0000

    out: list[str] = []
    where: dict[str, int] = {}
    i = 0
    while i < len(text):
        if not is_marker(text[i]):
            out.append(text[i])
            i += 1
            continue
        j = i
        while j < len(text) and is_marker(text[j]):
            where[text[j]] = len(out)
            j += 1
        if out and j < len(text) and not out[-1].isspace() and not text[j].isspace():
            out.append(" ")
        i = j
    positions = []
    for k, raw in enumerate(written):
        marker = chr(0xE000 + k)
        while marker not in where:
            marker = parent[marker]
        positions.append((raw, where[marker]))
    return "".join(out), positions, formed


_TAGGY = st.lists(
    st.sampled_from(
        ["<lora:", "<LYCO:", "<lora:x:1>", "<lora:y>", "<", ">", "a", "b", " ", ":", "\n", "<lor"]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_TAGGY, prompts()))
def test_property_tag_removal_is_repeated_innermost_removal(prompt: str) -> None:
    text, tags, formed = strip_all_tags(prompt)
    ref_text, ref_tags, ref_formed = _reference_strip(prompt)
    assert text == ref_text
    assert [(t.raw, t.pos) for t in tags] == ref_tags
    assert len(formed) == ref_formed
