"""The studio's shell in a browser: served at /, routes on the client, keeps the API's paths."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.conftest import Up
from tests.web.conftest import shot


def test_the_studio_is_served_at_the_root_with_a_strict_policy(studio_up: Up, page: Any) -> None:
    home = httpx.get(f"{studio_up.url}/")
    assert home.status_code == 200
    policy = home.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-eval" not in policy
    assert "<script>" not in home.text  # no inline scripts: only <script type="module" src=...>
    page.goto(f"{studio_up.url}/")
    page.get_by_role("link", name="swarmstation").first.wait_for()
    shot(page, "shell")


def test_client_routes_fall_back_to_the_app_but_api_paths_do_not(studio_up: Up) -> None:
    deep = httpx.get(f"{studio_up.url}/history/job/123")
    assert deep.status_code == 200 and deep.headers["content-type"].startswith("text/html")
    assert deep.headers["cache-control"] == "no-cache"
    for path in ("/v1/nothing-here", "/worker/v1/nope", "/objects/none", "/docs/x"):
        answer = httpx.get(f"{studio_up.url}{path}")
        assert answer.status_code in (404, 422), path  # the API's own answer, not the app
        assert answer.headers["content-type"].startswith("application/json"), path
    assert httpx.get(f"{studio_up.url}/docs").status_code == 200  # the API reference is still there
    asset = next(part for part in home_assets(studio_up.url))
    cached = httpx.get(f"{studio_up.url}{asset}")
    assert cached.status_code == 200 and "immutable" in cached.headers["cache-control"]


def home_assets(url: str) -> list[str]:
    import re

    return re.findall(r'(?:src|href)="(/assets/[^"]+)"', httpx.get(f"{url}/").text)
