"""Lexical tool retrieval: BM25 over what the catalog says about each tool (name, slug,
description, category, base model, input and output port types, example requests).

Query and documents go through the same analysis: accents folded, model families spelled one way
(``sd 1.5`` → ``sd15``), words split, a light stemmer, a few synonyms (other languages and common
paraphrases: "bigger" → upscale), and typo tolerance: a query word the catalog never uses is
replaced by the catalog word with the most character trigrams in common. Pure and deterministic.
"""

# ruff: noqa: RUF001, RUF002 (the multiplication sign is what users type: "4x")

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from swarmstation.domain.agent.types import CatalogTool, Ranked

__all__ = [
    "DEFAULT_FAMILY",
    "LexicalRetriever",
    "fold",
    "model_groups",
    "names_family",
    "normalize",
    "stem",
    "terms",
    "trigram_similarity",
    "words",
]

#: The base model family preferred when a request names none (a tie-break, not a score).
DEFAULT_FAMILY = "SDXL"
#: The smallest trigram similarity at which an unknown word is read as a catalog word.
TYPO_SIMILARITY = 0.42
_K1 = 1.2
_B = 0.75

_FAMILIES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(?:stable[\s-]*diffusion[\s-]*|sd[\s-]*)xl\b"), " sdxl "),
    (re.compile(r"\b(?:stable[\s-]*diffusion[\s-]*|sd[\s-]*)(?:v)?1[\s.]?5\b"), " sd15 "),
    (re.compile(r"\bflux(?:[\s.-]*1)?(?:[\s-]*(?:schnell|dev))?\b"), " flux "),
    (re.compile(r"\b(\d+)\s*(?:x|×|fois|mal|veces)(?!\s*\d)(?=\s|$|[,.!?])"), r" \1x "),
    (re.compile(r"\btxt2img\b|\btext[\s-]*to[\s-]*image\b"), " txt2img "),
    (re.compile(r"\bimg2img\b|\bimage[\s-]*to[\s-]*image\b"), " img2img "),
)

STOPWORDS = frozenset(
    """a an the and or of to in on at for with by from is are be it its this that these those my me
    i you your we our please pls can could would will should do does did just some any into as
    so very really also then than there here what which who how please hey hi hello want like
    need get give make let us im i'm id i'd ok okay thanks thank thx one
    le la les un une des du de et ou en au aux pour avec sur mon ma mes ce cette est je tu moi
    der die das ein eine einen und oder mit fur auf im ist ich mir mein meine bitte
    el los las uno una y o con para por en mi mis es yo me favor""".split()  # noqa: SIM905
)

#: Query words read as catalog words (keys are stemmed before use; values are catalog terms).
SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "bigger": ("upscale",),
    "larger": ("upscale",),
    "enlarge": ("upscale",),
    "upsize": ("upscale",),
    "upres": ("upscale",),
    "hd": ("upscale", "resolution"),
    "4k": ("upscale", "resolution"),
    "hires": ("upscale", "resolution"),
    "highres": ("upscale", "resolution"),
    "sharper": ("upscale", "sharpen"),
    "agrandir": ("upscale",),
    "agrandis": ("upscale",),
    "grand": ("upscale",),
    "vergrossern": ("upscale",),
    "vergrossere": ("upscale",),
    "grosser": ("upscale",),
    "hochskalieren": ("upscale",),
    "ampliar": ("upscale",),
    "amplia": ("upscale",),
    "grande": ("upscale",),
    "describe": ("caption", "describe"),
    "description": ("caption", "describe"),
    "alt": ("caption",),
    "decris": ("caption", "describe"),
    "decrire": ("caption", "describe"),
    "beschreibe": ("caption", "describe"),
    "beschreiben": ("caption", "describe"),
    "describir": ("caption", "describe"),
    "describe_": ("caption",),
    "picture": ("image",),
    "pic": ("image",),
    "photo": ("image",),
    "foto": ("image",),
    "bild": ("image",),
    "imagen": ("image",),
    "dessin": ("image", "generate"),
    "draw": ("generate", "image"),
    "paint": ("generate", "image"),
    "sketch": ("generate", "image"),
    "render": ("generate", "image"),
    "illustrate": ("generate", "image"),
    "create": ("generate",),
    "dessine": ("generate", "image"),
    "genere": ("generate",),
    "cree": ("generate",),
    "zeichne": ("generate", "image"),
    "erstelle": ("generate",),
    "dibuja": ("generate", "image"),
    "crea": ("generate",),
    "genera": ("generate",),
    "improve": ("enhance", "prompt"),
    "better": ("enhance",),
    "rewrite": ("enhance", "prompt"),
    "ameliore": ("enhance",),
    "ameliorer": ("enhance",),
    "verbessere": ("enhance",),
    "verbessern": ("enhance",),
    "mejora": ("enhance",),
    "mejorar": ("enhance",),
    "redraw": ("redraw", "style"),
    "restyle": ("redraw", "style"),
    "reimagine": ("redraw", "style"),
    "transform": ("redraw",),
    "stylize": ("redraw", "style"),
    "shrink": ("resize",),
    "smaller": ("resize",),
    "downscale": ("resize",),
    "thumbnail": ("resize",),
    "redimensionner": ("resize",),
    "verkleinern": ("resize",),
    "trim": ("crop",),
    "recadrer": ("crop",),
    "recadre": ("crop",),
    "zuschneiden": ("crop",),
    "recortar": ("crop",),
    "recorta": ("crop",),
    "border": ("pad",),
    "letterbox": ("pad",),
    "margin": ("pad", "border"),
    "jpg": ("jpeg", "format"),
    "jpeg": ("format",),
    "png": ("format",),
    "webp": ("format",),
    "collage": ("grid", "sheet"),
    "mosaic": ("grid", "sheet"),
    "montage": ("grid", "sheet"),
    "grille": ("grid",),
    "raster": ("grid",),
    "cuadricula": ("grid",),
}

_WORD_RE = re.compile(r"[a-z0-9]+")


def fold(text: str) -> str:
    """Lower case, accents removed (``é`` → ``e``, ``ß`` → ``ss``)."""
    text = text.lower().replace("ß", "ss")
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def normalize(text: str) -> str:
    """Folded text with model families and multipliers spelled one way (``sd 1.5`` → ``sd15``,
    ``4×`` → ``4x``, ``text to image`` → ``txt2img``)."""
    text = fold(text)
    for pattern, repl in _FAMILIES:
        text = pattern.sub(repl, text)
    return text


def words(text: str) -> list[str]:
    """The words of normalized ``text`` (no stemming, stopwords kept)."""
    return _WORD_RE.findall(normalize(text))


def stem(word: str) -> str:
    """A light English stemmer: enough that "upscaling", "upscaled" and "upscales" meet."""
    if len(word) <= 4 or word.isdigit():
        return word
    for suffix, repl in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", "e"), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith("ss"):
                return word
            word = word[: len(word) - len(suffix)] + repl
            break
    if word.endswith("e") and len(word) > 4:
        word = word[:-1]
    return word


def terms(text: str) -> list[str]:
    """Stemmed content words of ``text``, without stopwords, single letters and bare numbers."""
    return [stem(w) for w in words(text) if w not in STOPWORDS and not w.isdigit() and len(w) > 1]


_STEMMED_SYNONYMS: dict[str, tuple[str, ...]] = {}
for _key, _values in SYNONYMS.items():
    _STEMMED_SYNONYMS.setdefault(stem(_key), tuple(stem(v) for v in _values))


@lru_cache(maxsize=8192)
def _trigrams(word: str) -> frozenset[str]:
    padded = f"  {word} "
    return frozenset(padded[i : i + 3] for i in range(len(padded) - 2))


def trigram_similarity(a: str, b: str) -> float:
    """Jaccard similarity of the character trigrams of two words (1.0: the same word)."""
    ta, tb = _trigrams(a), _trigrams(b)
    return len(ta & tb) / len(ta | tb)


#: The terms that name a base model family.
FAMILY_TERMS = frozenset({"sdxl", "sd15", "flux"})


@dataclass(frozen=True)
class _Doc:
    slug: str
    tf: Mapping[str, float]
    length: float
    prior: float
    #: Tools that do the same thing with another model share a group (the slug otherwise).
    group: str


def _weighted(parts: Iterable[tuple[str, float]]) -> Counter[str]:
    tf: Counter[str] = Counter()
    for text, weight in parts:
        for term in terms(text):
            tf[term] += weight  # type: ignore[assignment]
    return tf


def _document(tool: CatalogTool) -> _Doc:
    spec = tool.spec
    ins = " ".join(f"input {i.type} {i.name}" for i in spec.inputs if i.required or i.type == "image")
    outs = " ".join(f"output {o.type} {o.name}" for o in spec.outputs)
    takes = ",".join(sorted(i.type for i in spec.inputs if i.required))
    gives = ",".join(o.type for o in spec.outputs)
    return _indexed(
        spec.slug,
        spec.name,
        spec.description,
        spec.category,
        spec.base_model,
        ins,
        outs,
        tool.examples,
        takes,
        gives,
    )


@lru_cache(maxsize=1024)
def _indexed(
    slug: str,
    name: str,
    description: str,
    category: str,
    base_model: str,
    ins: str,
    outs: str,
    examples: tuple[str, ...],
    takes: str,
    gives: str,
) -> _Doc:
    """A tool's index entry (cached: the same tool text is analysed once per process)."""
    parts = [
        (name, 2.0),
        (slug.replace("-", " "), 2.0),
        (description, 1.0),
        (category.replace("-", " "), 2.0),
        (base_model if base_model != "other" else "", 1.0),
        (ins, 0.5),
        (outs, 0.5),
        (" ".join(examples), 1.0),
    ]
    tf = _weighted(parts)
    # A request that names nothing the catalog knows is most likely a prompt: text-to-image
    # tools, and the default family among them, come first on ties.
    prior = 0.0
    if category == "text-to-image":
        prior = 0.02 if base_model == DEFAULT_FAMILY else 0.01
    group = slug if base_model in ("", "other") else f"{category}|{takes}|{gives}"
    return _Doc(slug, tf, float(sum(tf.values())), prior, group)


def names_family(query: str) -> bool:
    """Whether ``query`` names a base model family (sdxl, sd 1.5, flux)."""
    return bool(FAMILY_TERMS & set(terms(query)))


def model_groups(catalog: Sequence[CatalogTool]) -> dict[str, str]:
    """Each tool's group: tools that do the same thing with another model share one."""
    return {tool.spec.slug: _document(tool).group for tool in catalog}


class LexicalRetriever:
    """BM25 ranking of catalog tools for a request (see the module docstring)."""

    def analyse(self, query: str, vocabulary: Iterable[str]) -> list[str]:
        """The query's terms as the index reads them: synonyms added, unknown words mapped to the
        nearest catalog word by trigrams (words of 4 letters or more)."""
        vocab = set(vocabulary)
        out: list[str] = []
        for term in terms(query):
            expanded = _STEMMED_SYNONYMS.get(term)
            if expanded:
                out.extend(expanded)
                if term in vocab:
                    out.append(term)
                continue
            if term in vocab or len(term) < 4 or term.isdigit():
                out.append(term)
                continue
            best, best_sim = "", 0.0
            for candidate in sorted(vocab):
                if len(candidate) < 4:
                    continue
                sim = trigram_similarity(term, candidate)
                if sim > best_sim:
                    best, best_sim = candidate, sim
            synonym_best = ""
            for key in _STEMMED_SYNONYMS:
                if len(key) >= 4 and (sim := trigram_similarity(term, key)) > best_sim:
                    synonym_best, best_sim = key, sim
            if best_sim >= TYPO_SIMILARITY:
                if synonym_best:
                    out.extend(_STEMMED_SYNONYMS[synonym_best])
                else:
                    out.append(best)
        return out

    def rank(self, query: str, catalog: Sequence[CatalogTool], *, limit: int = 5) -> list[Ranked]:
        docs = [_document(tool) for tool in catalog]
        if not docs:
            return []
        df: Counter[str] = Counter()
        for doc in docs:
            df.update(doc.tf.keys())
        n = len(docs)
        avg = sum(d.length for d in docs) / n
        q = Counter(self.analyse(query, df.keys()))
        scored: list[Ranked] = []
        for doc in docs:
            score = doc.prior
            for term, qtf in q.items():
                tf = doc.tf.get(term, 0.0)
                if not tf:
                    continue
                idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                score += qtf * idf * tf * (_K1 + 1) / (tf + _K1 * (1 - _B + _B * doc.length / avg))
            scored.append(Ranked(doc.slug, score))
        if not FAMILY_TERMS & set(q):
            # No family named: tools of one category that differ by their model are equally
            # relevant (a word in one's description should not pick the model); the prior
            # (the default family) orders them.
            best: dict[str, float] = {}
            for doc, r in zip(docs, scored, strict=True):
                best[doc.group] = max(best.get(doc.group, 0.0), r.score - doc.prior)
            scored = [
                Ranked(r.slug, best[doc.group] + doc.prior) for doc, r in zip(docs, scored, strict=True)
            ]
        scored = [Ranked(r.slug, round(r.score, 6)) for r in scored]
        scored.sort(key=lambda r: (-r.score, r.slug))
        return scored[:limit]
