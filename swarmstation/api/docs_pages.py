"""The documentation the studio shows: README.md and docs/*.md of the repository, rendered to HTML
here with markdown-it (CommonMark with tables). Raw HTML in the markdown is escaped, not passed
on, and link targets such as `javascript:` are refused by markdown-it's link check, so what the
page inserts is safe. Images the markdown names under docs/ are served by `/v1/docs/files/…`.

Each heading below the title gets an id (GitHub's style: lower case, punctuation dropped, spaces to dashes, a
suffix for repeats), so `#section` links in the markdown work, and the page's `toc` lists them
for the studio's table of contents.

Where the repository is not beside the package (an installed wheel), the copy the studio build
packs into studio_dist/docs is read instead."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from markdown_it import MarkdownIt
from markdown_it.token import Token
from pydantic import BaseModel, Field

from swarmstation.api.studio import DIST
from swarmstation.domain.errors import NotFound

router = APIRouter(prefix="/v1/docs", tags=["studio"])

REPO = Path(__file__).resolve().parents[2]
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


class DocSummary(BaseModel):
    slug: str
    title: str


class DocList(BaseModel):
    docs: list[DocSummary]


class TocEntry(BaseModel):
    level: int = Field(description="2 for ##, 3 for ###, …")
    id: str = Field(description="The heading's id in the html: link to #id")
    text: str


class DocPage(BaseModel):
    slug: str
    title: str
    html: str
    toc: list[TocEntry] = Field(description="The page's headings below its title (## and ###), in order")


def _roots() -> tuple[Path, Path]:
    """(folder holding README.md, folder holding the docs' .md files and images)."""
    if (REPO / "README.md").is_file() and (REPO / "docs").is_dir():
        return REPO, REPO / "docs"
    return DIST / "docs", DIST / "docs"


def _sources() -> dict[str, Path]:
    top, docs = _roots()
    found: dict[str, Path] = {}
    if (top / "README.md").is_file():
        found["readme"] = top / "README.md"
    for path in sorted(docs.glob("*.md")):
        if path.name != "README.md":
            found[path.stem.lower()] = path
    return found


def _title(text: str, slug: str) -> str:
    match = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else slug


_IMG_SRC = re.compile(r'(<img src=")(?:\./)?(?:docs/)?([^":/?#][^":?#]*)"')
_DOC_LINK = re.compile(r'(<a href=")(?:\./)?(?:docs/)?([A-Za-z0-9_-]+)\.md(#[^"]*)?"')


TOC_LEVELS = (2, 3)
# Ids the studio's own page uses: a heading "Main" becomes main-1, not a second #main.
_STUDIO_IDS = ("app", "main")


def heading_id(text: str, seen: dict[str, int]) -> str:
    """GitHub's anchor for a heading: lower case, only letters, digits, spaces, - and _, spaces as
    dashes; the second "Setup" is "setup-1". `seen` counts the ids of the page so far."""
    base = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-") or "section"
    count = seen.get(base, 0)
    seen[base] = count + 1
    return base if count == 0 else f"{base}-{count}"


def _plain(inline: Token) -> str:
    return "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline"))


def render_markdown(text: str) -> tuple[str, list[TocEntry]]:
    """(the html, the table of contents) of a markdown text; raw HTML in it comes out escaped."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    toc: list[TocEntry] = []
    seen: dict[str, int] = dict.fromkeys(_STUDIO_IDS, 1)
    for i, token in enumerate(tokens):
        level = int(token.tag[1]) if token.type == "heading_open" else 0
        if level < 2:  # the page's title (h1) is the studio's heading, with no anchor of its own
            continue
        words = _plain(tokens[i + 1])
        anchor = heading_id(words, seen)
        token.attrSet("id", anchor)
        if level in TOC_LEVELS:
            toc.append(TocEntry(level=level, id=anchor, text=words))
    html = md.renderer.render(tokens, md.options, {})
    # Relative images and links to other docs, rewritten to where the studio finds them.
    html = _IMG_SRC.sub(lambda m: f'{m.group(1)}/v1/docs/files/{m.group(2)}"', html)
    html = _DOC_LINK.sub(lambda m: f'{m.group(1)}/guide/{m.group(2).lower()}{m.group(3) or ""}"', html)
    return html, toc


@lru_cache(maxsize=64)
def _render(path: Path, mtime: float) -> tuple[str, list[TocEntry]]:
    return render_markdown(path.read_text())


@router.get("", response_model=DocList)
def list_docs() -> DocList:
    return DocList(
        docs=[DocSummary(slug=slug, title=_title(p.read_text(), slug)) for slug, p in _sources().items()]
    )


@router.get("/files/{name:path}", include_in_schema=False)
def doc_file(name: str) -> FileResponse:
    _, docs = _roots()
    path = (docs / name).resolve()
    media = IMAGE_TYPES.get(path.suffix.lower())
    if media is None or not path.is_file() or not path.is_relative_to(docs.resolve()):
        raise NotFound(f"no documentation file {name!r}")
    return FileResponse(path, media_type=media, headers={"Cache-Control": "public, max-age=3600"})


@router.get("/{slug}", response_model=DocPage)
def get_doc(slug: str) -> DocPage:
    path = _sources().get(slug.lower())
    if path is None:
        raise NotFound(f"no documentation page {slug!r}")
    html, toc = _render(path, path.stat().st_mtime)
    return DocPage(slug=slug.lower(), title=_title(path.read_text(), slug), html=html, toc=toc)
