"""Benchmark of LoRA resolution: 200-word prompts against 10,000 LoRAs with 30,000 triggers.

``swarmstation bench-loras`` (or ``run()`` from Python) prints the figures as JSON.

The data is synthetic and seeded. Trigger words come from a vocabulary of made-up words
(``zarqu``, ``belomin``...), so they look like the rare tokens real LoRA triggers are; a fifth of
the multi-word phrases start with an ordinary prompt word (``"style of belomin"``), so ordinary
words also start phrase look-ups that fail later, as they do with real maps. LoRAs are spread over
base models and access tiers; some triggers are shared by several LoRAs (conflicts). Each prompt
has 200 words: ordinary words, about six triggers (some with ``:weight``) and two tags.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from swarmstation.domain.loras import Access, LoraInfo, TriggerMatcher, resolve
from swarmstation.domain.stats import percentile

__all__ = ["run"]


def _split(words: str) -> tuple[str, ...]:
    return tuple(words.split())


_SYLLABLES = _split(
    "ba be bi bo bu da de di do du ka ke ki ko ku la le li lo lu ma me mi mo mu na ne ni no nu "
    "ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo vu za ze zi zo zu qu xa yo"
)
_COMMON = _split(
    "a an the of in on at with and or by from portrait photo painting of woman man girl boy cat dog "
    "city street forest mountain river sky night day light dark soft hard warm cold red blue green "
    "gold silver black white detailed sharp focus cinematic lighting style art illustration render "
    "highly intricate beautiful dramatic moody bright vivid pastel colour colours background foreground "
    "close up wide shot looking at viewer standing sitting walking smiling wearing dress coat hat "
    "masterpiece best quality ultra realistic photorealistic digital oil watercolour sketch concept"
)
_BASES = ("SDXL", "SDXL", "Pony", "Illustrious", "SD1.5", "FLUX", "SD3")


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))


def _build_loras(rng: random.Random, count: int, per_lora: int) -> tuple[list[LoraInfo], list[str]]:
    vocabulary = sorted({_word(rng) for _ in range(count * 3)})
    phrases: list[str] = []
    loras: list[LoraInfo] = []
    for n in range(count):
        triggers: list[str] = []
        for _ in range(per_lora):
            if phrases and rng.random() < 0.03:
                triggers.append(rng.choice(phrases))  # shared trigger -> a conflict
                continue
            length = rng.choice((1, 1, 2, 2, 3, 4))
            words = [rng.choice(vocabulary) for _ in range(length)]
            if length > 1 and rng.random() < 0.2:
                words[0] = rng.choice(_COMMON)
            phrase = " ".join(words)
            triggers.append(phrase)
            phrases.append(phrase)
        access: Access = rng.choice(("public", "public", "public", "shared", "own"))
        slug = f"lora-{n:05d}"
        loras.append(
            LoraInfo(
                slug=slug,
                name=f"LoRA {n}",
                triggers=tuple(triggers),
                aliases=(f"alias{n}",),
                default_weight=round(rng.uniform(0.5, 1.0), 2),
                base_model=rng.choice(_BASES),
                file_name=f"{slug}.safetensors",
                owner_id=f"user-{rng.randrange(500)}",
                visibility="private" if access != "public" else "public",
                access=access,
                created_at_rank=n,
            )
        )
    return loras, phrases


def _prompt(rng: random.Random, words: int, phrases: list[str], slugs: list[str]) -> str:
    parts = [rng.choice(_COMMON) for _ in range(words)]
    for _ in range(6):
        phrase = rng.choice(phrases)
        if rng.random() < 0.3:
            phrase += f":{rng.choice(('0.4', '.6', '0.8', '1'))}"
        parts[rng.randrange(words)] = phrase
    for _ in range(2):
        parts.insert(rng.randrange(len(parts)), f"<lora:{rng.choice(slugs)}:{rng.uniform(0.2, 1.0):.2f}>")
    text = " ".join(parts)
    return text[0].upper() + text[1:] + "."


def run(prompts: int = 200, loras: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Build ``loras`` synthetic LoRAs (3 triggers each), the matcher once, and time ``prompts`` resolutions.

    Returns ``{"loras", "triggers", "build_ms", "per_prompt_ms": {"p50", "p99", "mean"}, "prompts",
    "words_per_prompt", "applied_per_prompt_mean"}``; times are wall-clock milliseconds
    (``time.perf_counter``) on the calling thread, tool base model SDXL.
    """
    rng = random.Random(seed)
    infos, phrases = _build_loras(rng, loras, 3)
    slugs = [info.slug for info in infos]
    texts = [_prompt(rng, 200, phrases, slugs) for _ in range(prompts)]

    t0 = time.perf_counter()
    matcher = TriggerMatcher(infos)
    build_ms = (time.perf_counter() - t0) * 1000

    for text in texts[: min(20, len(texts))]:  # warm-up
        resolve(text, matcher, tool_base_model="SDXL")
    times: list[float] = []
    applied = 0
    for text in texts:
        t = time.perf_counter()
        result = resolve(text, matcher, tool_base_model="SDXL")
        times.append((time.perf_counter() - t) * 1000)
        applied += len(result.loras)
    return {
        "loras": len(infos),
        "triggers": sum(len(info.triggers) for info in infos),
        "build_ms": round(build_ms, 1),
        "per_prompt_ms": {
            "p50": round(statistics.median(times), 4) if times else 0.0,
            "p99": round(percentile(times, 0.99), 4),
            "mean": round(statistics.fmean(times), 4) if times else 0.0,
        },
        "prompts": len(texts),
        "words_per_prompt": 200,
        "applied_per_prompt_mean": round(applied / len(texts), 2) if texts else 0.0,
    }
