"""Every route of the studio, visited signed out in a real browser: no serious or critical axe-core
violations, and no console errors, page errors or CSP violations, on the page each route shows
(routes that need an account are checked where they land: the sign-in page)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.e2e.conftest import Up
from tests.web.conftest import axe_violations, open_page

# (route, where a signed-out visitor ends up)
ROUTES = [
    ("/", r"/$"),
    ("/pricing", r"/pricing$"),
    ("/guide", r"/guide$"),
    ("/guide/readme", r"/guide/readme$"),
    ("/signin", r"/signin$"),
    ("/generate", r"/(generate|signin\?next=%2Fgenerate)$"),
    ("/sandbox", r"/(sandbox|signin\?next=%2Fsandbox)$"),  # signed out: a local workspace
    ("/chat", r"/(chat|signin\?next=%2Fchat)$"),
    ("/history", r"/(history|signin\?next=%2Fhistory)$"),
    ("/account", r"/(account|signin\?next=%2Faccount)$"),
    ("/admin", r"/(admin|signin\?next=%2Fadmin)$"),
]


@pytest.mark.parametrize(("route", "lands"), ROUTES, ids=[r for r, _ in ROUTES])
def test_a_signed_out_visit_is_axe_clean_and_error_free(
    studio_up: Up, browser: Any, route: str, lands: str
) -> None:
    context, page, problems = open_page(browser)
    try:
        page.goto(f"{studio_up.url}{route}")
        page.wait_for_url(re.compile(lands))
        page.get_by_role("heading", level=1).first.wait_for()
        page.wait_for_load_state("networkidle")
        page.locator("p.loading").first.wait_for(state="detached", timeout=10_000)
        assert page.get_by_role("heading", name="Not found").count() == 0, route
        violations = axe_violations(page)
        assert violations == [], f"{route} (at {page.url}): {violations}"
    finally:
        context.close()
    problems.check()
