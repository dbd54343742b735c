"""The public pages, signed out, in a real browser against `swarmstation up`: the landing page's
catalog with the prices the API gives, the way on to generating, pricing for every tool, the docs
(the README, its table of contents, the API reference at /docs); each one axe-clean, keyboard
reachable and without horizontal scrolling at 375 px."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Up, make_up
from tests.web.conftest import SCREENSHOTS, axe_violations, open_page, shot

# The unit each price model reads with (web/src/pages/catalog.ts UNITS).
UNITS = {
    "per_run": "per run",
    "per_megapixel": "per output megapixel",
    "per_gpu_second": "per GPU second",
    "per_1k_tokens": "per 1k tokens",
    "derived": "per run",
}
STAND_IN = "<!doctype html><html lang=en><title>API reference</title><h1>API reference</h1></html>"


def tools_of(up: Up) -> list[dict[str, Any]]:
    with up.client() as http:
        listed = http.get("/v1/tools")
        assert listed.status_code == 200, listed.text
        tools: list[dict[str, Any]] = listed.json()
    assert tools, "the catalog has tools"
    return tools


def price_text(price: dict[str, Any]) -> str:
    return f"{price['credits']:,} cr {UNITS[price['model']]}"


def no_horizontal_scroll(browser: Any, url: str, ready: str) -> None:
    context, narrow, problems = open_page(browser, width=375, height=800)
    try:
        narrow.goto(url)
        narrow.locator(ready).first.wait_for()
        width = narrow.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{url} scrolls sideways at 375 px: {width} px wide"
    finally:
        context.close()
    problems.check()


def test_the_landing_page_lists_the_catalog_with_the_apis_prices(
    studio_up: Up, page: Any, browser: Any
) -> None:
    tools = tools_of(studio_up)
    page.goto(f"{studio_up.url}/")
    page.get_by_role("heading", name="swarmstation", level=1).wait_for()
    page.get_by_text("autoscaled GPU pool").first.wait_for()
    for tool in tools:
        card = page.get_by_test_id(f"tool-{tool['slug']}")
        card.get_by_role("heading", name=tool["name"]).wait_for()
        assert price_text(tool["price"]) in card.get_by_test_id(f"price-{tool['slug']}").inner_text()
        status = "available" if tool["available"] else "unavailable"
        assert card.locator(".badge", has_text=re.compile(f"^{status}$")).count() == 1, tool["slug"]
        if tool["available"]:
            link = card.get_by_role("link", name=f"Generate with {tool['name']}")
            assert link.get_attribute("href") == f"/generate/{tool['slug']}"
        else:
            card.get_by_text(tool["unavailable_reason"]).wait_for()
    assert page.get_by_test_id(re.compile("^tool-")).count() == len(tools)
    assert axe_violations(page) == []
    shot(page, "landing")
    no_horizontal_scroll(browser, f"{studio_up.url}/", "[data-testid^=tool-]")


LEADS_ON = re.compile(r"/(generate|signin\?next=%2Fgenerate)$")


def test_start_generating_leads_a_signed_out_visitor_on(studio_up: Up, page: Any) -> None:
    """To the generate page, or (it needs an account) to sign in and back to it."""
    page.goto(f"{studio_up.url}/")
    page.get_by_role("link", name="Start generating", exact=True).click()
    page.wait_for_url(LEADS_ON)
    page.get_by_role("heading", level=1).wait_for()
    assert page.get_by_role("heading", name="Not found").count() == 0


def test_tab_reaches_the_main_navigation_and_the_call_to_action(studio_up: Up, page: Any) -> None:
    page.goto(f"{studio_up.url}/")
    page.get_by_test_id(re.compile("^tool-")).first.wait_for()
    reached: list[str] = []
    for _ in range(25):
        page.keyboard.press("Tab")
        reached.append(
            page.evaluate(
                "() => { const e = document.activeElement;"
                " return (e.closest('nav[aria-label=Main]') ? 'nav:' : '') + (e.textContent || '').trim() }"
            )
        )
        if reached[-1] == "Start generating":
            break
    assert "nav:Generate" in reached and "nav:Pricing" in reached and "nav:Docs" in reached, reached
    assert reached[-1] == "Start generating", reached
    page.keyboard.press("Enter")
    page.wait_for_url(LEADS_ON)


def test_pricing_shows_every_tools_price_and_the_charging_rules(
    studio_up: Up, page: Any, browser: Any
) -> None:
    tools = tools_of(studio_up)
    page.goto(f"{studio_up.url}/pricing")
    page.get_by_role("heading", name="Pricing", level=1).wait_for()
    table = page.get_by_role("table", name="Prices per tool")
    for tool in tools:
        row = table.get_by_test_id(f"row-{tool['slug']}")
        row.get_by_role("rowheader", name=tool["name"]).wait_for()
        assert price_text(tool["price"]) in row.get_by_test_id(f"price-{tool['slug']}").inner_text(), tool[
            "slug"
        ]
    assert table.get_by_role("row").count() == len(tools) + 1
    with studio_up.client() as http:
        rate = http.get("/v1/account").json()["credits_per_usd"]
        chains = http.get("/v1/deposits/options").json()["chains"]
    assert f"$1 buys {rate:,} cr" in page.get_by_test_id("credits-per-usd").inner_text()
    for step in ("Quote.", "Hold.", "Capture.", "Release."):
        page.get_by_text(step, exact=True).wait_for()
    if chains:
        for chain in chains:
            page.get_by_test_id(f"chain-{chain['chain_id']}").wait_for()
    else:
        page.get_by_test_id("no-deposits").wait_for()
    page.get_by_role("link", name="Sign in", exact=True).last.wait_for()  # signed out: sign in to deposit
    assert axe_violations(page) == []
    shot(page, "pricing")
    no_horizontal_scroll(browser, f"{studio_up.url}/pricing", "[data-testid^=row-]")


def test_the_guide_renders_the_readme_and_links_to_the_api_reference(
    studio_up: Up, page: Any, browser: Any
) -> None:
    readme = httpx.get(f"{studio_up.url}/v1/docs/readme").json()
    page.goto(f"{studio_up.url}/guide")
    page.get_by_role("heading", name="Docs", level=1).wait_for()
    reference = page.get_by_role("link", name="API reference")
    assert reference.get_attribute("href") == "/docs"
    page.get_by_role("main").get_by_role("link", name=readme["title"], exact=True).wait_for()
    assert axe_violations(page) == []
    shot(page, "guide")
    page.get_by_role("main").get_by_role("link", name=readme["title"], exact=True).click()
    page.wait_for_url(re.compile("/guide/readme$"))
    page.get_by_role("heading", name=readme["title"], level=1).wait_for()
    assert page.title().startswith(readme["title"])
    toc = page.get_by_role("navigation", name="On this page")
    first = readme["toc"][0]
    toc.get_by_role("link", name=first["text"], exact=True).click()
    page.wait_for_url(re.compile(f"#{first['id']}$"))
    assert page.locator(f"[id='{first['id']}']").evaluate("e => e.getBoundingClientRect().top") < 200
    assert axe_violations(page) == []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)  # the README is too tall for a full-page shot
    page.screenshot(path=str(SCREENSHOTS / "guide-readme.png"))
    # The reference is the server's Swagger page: a real navigation out of the studio. Swagger UI's
    # own scripts come from a CDN this machine cannot reach, so the browser is given a stand-in
    # page; what the server really answers at /docs is checked over HTTP.
    swagger = httpx.get(f"{studio_up.url}/docs")
    assert swagger.status_code == 200 and "swagger-ui" in swagger.text
    page.route(f"{studio_up.url}/docs", lambda route: route.fulfill(content_type="text/html", body=STAND_IN))
    with page.expect_request(lambda r: r.url == f"{studio_up.url}/docs" and r.is_navigation_request()):
        page.get_by_role("link", name="API reference").click()
    page.wait_for_url(re.compile("/docs$"))
    assert page.locator("#app").count() == 0  # left the studio
    no_horizontal_scroll(browser, f"{studio_up.url}/guide/readme", "article.doc h1")


def test_a_missing_doc_page_says_so(studio_up: Up, page: Any) -> None:
    page.goto(f"{studio_up.url}/guide/no-such-page")
    page.get_by_role("alert").get_by_text("no documentation page").wait_for()


@pytest.mark.parametrize("path", ["/", "/pricing"])
def test_the_catalog_unreachable_is_a_message_not_a_blank_page(
    studio_up: Up, browser: Any, path: str
) -> None:
    context, page, _ = open_page(browser)  # the failed request logs an error on purpose
    try:
        page.route(
            "**/v1/catalog", lambda route: route.fulfill(status=503, json={"detail": "down for a moment"})
        )
        page.goto(f"{studio_up.url}{path}")
        page.get_by_role("alert").get_by_text("down for a moment").wait_for()
        page.get_by_role("button", name="Try again").wait_for()
    finally:
        context.close()


TREASURY = "0x1111111111111111111111111111111111111111"
CHAINS = [
    {
        "chain_id": 8453,
        "name": "Base",
        "rpc_url": "http://127.0.0.1:9/",  # nothing listens: the scanner's failures stay in its log
        "treasury": TREASURY,
        "confirmations": 12,
        "assets": [
            {"symbol": "ETH", "decimals": 18, "credits_per_unit": 3_000_000},
            {"symbol": "USDC", "contract": "0x" + "83" * 20, "decimals": 6, "credits_per_unit": 1000},
        ],
    }
]


def test_pricing_shows_the_deposit_chains_and_a_price_an_admin_set(
    tmp_path: Path, browser: Any, page: Any
) -> None:
    up = make_up(tmp_path, chains=json.dumps(CHAINS), credits_per_usd=2000)
    up.start()
    try:
        with up.client() as http:
            set_price = {"model": "per_gpu_second", "credits": 3, "cap": 450}
            assert http.put("/v1/admin/tools/sdxl-txt2img/price", json=set_price).status_code == 200
        page.goto(f"{up.url}/pricing")
        price = page.get_by_test_id("price-sdxl-txt2img")
        price.get_by_text("3 cr per GPU second").wait_for()
        price.get_by_text("at most 450 cr a run").wait_for()
        page.get_by_test_id("row-sdxl-txt2img").get_by_text("Per GPU second, capped").wait_for()
        assert "$1 buys 2,000 cr" in page.get_by_test_id("credits-per-usd").inner_text()
        base = page.get_by_test_id("chain-8453")
        base.get_by_role("heading", name="Base").wait_for()
        base.get_by_text("credited after 12 confirmations").wait_for()
        base.get_by_text(TREASURY).wait_for()
        assert "3,000,000 cr per ETH" in base.inner_text() and "1,000 cr per USDC" in base.inner_text()
        assert axe_violations(page) == []
        shot(page, "pricing-deposits")
        # A price changed while the page is open shows when the person comes back to the tab.
        with up.client() as http:
            assert http.put(
                "/v1/admin/tools/sdxl-txt2img/price", json={"model": "per_run", "credits": 7}
            ).is_success
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
        price.get_by_text("7 cr per run").wait_for()
    finally:
        up.cleanup()
