"""The docs the studio shows (GET /v1/docs/{slug}): rendered from markdown with raw HTML escaped,
headings given ids, and a table of contents; and the public catalog (GET /v1/catalog) the landing
and pricing pages read before anyone signs in."""

from __future__ import annotations

from typing import Any

from swarmstation.api.docs_pages import heading_id, render_markdown


def test_raw_html_in_markdown_is_shown_escaped_never_run() -> None:
    html, _ = render_markdown(
        "# Page\n\n<script>alert('x')</script>\n\nText <img src=x onerror=alert(1)> here.\n\n"
        "[click](javascript:alert(1))\n"
    )
    assert "<script>" not in html and "&lt;script&gt;alert(" in html
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'href="javascript:' not in html


def test_headings_get_github_style_ids_and_a_table_of_contents() -> None:
    html, toc = render_markdown(
        "# Title\n\n## The `up` command\n\n### Set-up, step 1!\n\n"
        "## The `up` command\n\n#### Deep\n\n## Main\n"
    )
    assert "<h1>Title</h1>" in html  # the title is the page's own heading: no anchor
    assert '<h2 id="the-up-command">' in html and '<h2 id="the-up-command-1">' in html
    assert [(e.level, e.id, e.text) for e in toc] == [
        (2, "the-up-command", "The up command"),
        (3, "set-up-step-1", "Set-up, step 1!"),
        (2, "the-up-command-1", "The up command"),
        (2, "main-1", "Main"),  # the studio's <main id="main"> keeps its id
    ]
    assert '<h4 id="deep">' in html  # an id, but not in the table of contents


def test_heading_id_counts_repeats() -> None:
    seen: dict[str, int] = {}
    assert [heading_id(t, seen) for t in ("A", "a", "  ", "é x")] == ["a", "a-1", "section", "é-x"]


def test_the_readme_page_has_its_table_of_contents(api: Any) -> None:
    page = api.get("/v1/docs/readme").json()
    assert page["toc"], page.keys()
    for entry in page["toc"]:
        assert f'id="{entry["id"]}"' in page["html"]
    assert api.get("/v1/docs/nope").status_code == 404


def test_the_catalog_is_public_and_matches_the_tools_list(api: Any, admin: dict[str, str]) -> None:
    assert api.get("/v1/tools").status_code == 401  # the working list still needs credentials
    catalog = api.get("/v1/catalog")
    assert catalog.status_code == 200, catalog.text
    body = catalog.json()
    assert body["credits_per_usd"] == 1000
    assert body["tools"] == api.get("/v1/tools", headers=admin).json()
    assert body["tools"] and all("price" in t and "available" in t for t in body["tools"])
