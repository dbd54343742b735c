"""The lexical retriever: the catalog's words, stemming, synonyms, typos, other languages."""

from __future__ import annotations

import pytest

from swarmstation.domain.agent.lexical import LexicalRetriever, normalize, stem, terms, trigram_similarity
from swarmstation.domain.agent.types import CatalogTool

R = LexicalRetriever()


def top(query: str, catalog: list[CatalogTool], n: int = 1) -> list[str]:
    return [r.slug for r in R.rank(query, catalog, limit=n)]


def test_analysis() -> None:
    assert stem("upscaling") == stem("upscaled") == stem("upscales") == "upscal"
    assert normalize("Stable Diffusion 1.5 at 4\u00d7").split() == ["sd15", "at", "4x"]
    assert "1024x768" in normalize("1024x768") and "sd15" in normalize("SD-1.5")
    assert normalize("Décris l'image").startswith("decris")
    assert terms("a 1024 x 768 picture of the sea") == ["pictur", "sea"]  # numbers and stopwords go
    assert trigram_similarity("upscale", "upscale") == 1.0
    assert trigram_similarity("upscael", "upscale") > trigram_similarity("upscael", "caption")


@pytest.mark.parametrize(
    ("query", "slug"),
    [
        ("upscale my picture 4x", "upscale-4x"),
        ("make it bigger", "upscale-4x"),
        ("upscael this", "upscale-4x"),  # typo
        ("vergrößern bitte", "upscale-4x"),  # German
        ("describe this photo", "caption"),
        ("décris cette image", "caption"),  # French
        ("describir la foto", "caption"),  # Spanish
        ("improve my prompt", "prompt-enhance"),
        ("convert to jpg", "image-convert"),
        ("crop the edges", "image-crop"),
        ("put them in a colage", "contact-sheet"),  # typo of a synonym
        ("pad it to 16:9 with a border", "image-pad"),
        ("resize to 800 wide", "image-resize"),
        ("redraw my photo as a painting", "sd15-img2img"),
        ("generate with flux", "flux-txt2img"),
        ("a knight with sd 1.5", "sd15-txt2img"),
    ],
)
def test_ranks_the_tool_first(query: str, slug: str, catalog: list[CatalogTool]) -> None:
    assert top(query, catalog) == [slug]


def test_tools_differing_only_by_model_rank_together_default_first(catalog: list[CatalogTool]) -> None:
    # "photorealistic" is in flux's examples, "anime" in sd15's: neither picks the model alone
    for query in ("a photorealistic cat", "an anime cat", "a cat"):
        ranked = R.rank(query, catalog, limit=len(catalog))
        t2i = [r for r in ranked if r.slug.endswith("txt2img")]
        assert t2i[0].slug == "sdxl-txt2img", query
    assert top("a photorealistic cat with flux", catalog) == ["flux-txt2img"]


def test_deterministic_and_limited(catalog: list[CatalogTool]) -> None:
    first = R.rank("upscale then describe", catalog, limit=3)
    assert first == R.rank("upscale then describe", catalog, limit=3)
    assert len(first) == 3 and {r.slug for r in first} >= {"upscale-4x", "caption"}
    assert [r.score for r in first] == sorted((r.score for r in first), reverse=True)
    assert R.rank("anything", [], limit=3) == []
