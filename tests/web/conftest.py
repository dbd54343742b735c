# ruff: noqa: E501  (the injected wallet script is JavaScript, kept readable)
"""The studio in a real browser: Debian's Chromium driven by Playwright, against `swarmstation up`
on a free port with its emulated local instances.

- `studio_up`: one `swarmstation up` per test module (the browser tests share it; each test
  signs in as a user of its own).
- `browser`: one Chromium for all the browser tests (package scope), started from /usr/bin/chromium (Playwright's own
  browser download is never used). Each test gets a fresh context (`page`), so nothing carries
  over: no cookies, no storage.
- `page` fails its test when the page logged a JavaScript error or a Content-Security-Policy
  violation.
- `Wallet`: an injected EIP-1193 provider, announced per EIP-6963 and as window.ethereum, whose
  signatures are made here with a real key (eth-account), so the server verifies a real signature.
- `shot(page, name)`: a screenshot into test-output/screenshots/.
- `axe_violations(page)`: axe-core's serious and critical violations on the page as it is now."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Up, make_up

REPO = Path(__file__).resolve().parents[2]
STUDIO_INDEX = Path(os.environ.get("STUDIO_DIST_DIR") or REPO / "swarmstation" / "studio_dist") / "index.html"
AXE = REPO / "web" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO / "test-output" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    found = os.environ.get("SWARMSTATION_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("Debian's Chromium is not installed: `make chromium` (apt-get install -y chromium)")
    return found


# Package scope: Playwright's sync API keeps an event loop running in this thread while it is
# open, and tests after tests/web that call asyncio.run() would find it ("cannot be called from a
# running event loop"); it closes when the last browser test is done.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not STUDIO_INDEX.is_file():
        pytest.fail("the studio is not built: `make studio` (cd web && npm ci && npm run build)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def studio_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`swarmstation up` for one test module (open sign-up is on, as `up` has it)."""
    up = make_up(tmp_path_factory.mktemp("studio"))
    up.start()
    yield up
    up.cleanup()


@dataclass
class PageProblems:
    errors: list[str] = field(default_factory=list)

    def check(self) -> None:
        assert not self.errors, "the page logged errors:\n" + "\n".join(self.errors)


def open_page(browser: Any, *, width: int = 1280, height: int = 860) -> tuple[Any, Any, PageProblems]:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems = PageProblems()

    def on_console(msg: Any) -> None:
        text = msg.text
        if msg.type == "error" and not text.startswith("Failed to load resource"):
            problems.errors.append(f"console: {text}")
        elif "Content Security Policy" in text or "Refused to" in text:
            problems.errors.append(f"CSP: {text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.errors.append(f"pageerror: {exc}"))
    return context, page, problems


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context, page, problems = open_page(browser)
    yield page
    context.close()
    problems.check()


def shot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict[str, Any]]:
    """Run axe-core in the page (its source evaluated through the DevTools protocol, which the
    page's CSP does not govern) and return the violations of the given impacts."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text() + "\n;undefined")
    result = page.evaluate("async () => await window.axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in impacts
    ]


# -- the injected wallet ---------------------------------------------------------------------------
WALLET_SCRIPT = """
(() => {
  const call = (method, params) => window.__swarmWalletRequest(JSON.stringify({ method, params: params ?? [] }))
    .then((raw) => {
      const answer = JSON.parse(raw);
      if (answer.error) { const e = new Error(answer.error.message); e.code = answer.error.code; throw e; }
      return answer.result;
    });
  const listeners = {};
  const provider = {
    isSwarmTestWallet: true,
    request: ({ method, params }) => call(method, params),
    on: (event, fn) => { (listeners[event] ??= []).push(fn); },
    removeListener: (event, fn) => { listeners[event] = (listeners[event] ?? []).filter((f) => f !== fn); },
  };
  const info = Object.freeze({
    uuid: '6f1c1b6e-2d0f-4e36-9b6f-0d7d3c9a5e01',
    name: 'Test Wallet',
    icon: 'data:image/svg+xml,%3Csvg xmlns=%22http://www.w3.org/2000/svg%22 viewBox=%220 0 8 8%22%3E%3Crect width=%228%22 height=%228%22 fill=%22%23f08a24%22/%3E%3C/svg%3E',
    rdns: 'dev.swarmstation.testwallet',
  });
  const announce = () => window.dispatchEvent(new CustomEvent('eip6963:announceProvider', { detail: Object.freeze({ info, provider }) }));
  window.addEventListener('eip6963:requestProvider', announce);
  announce();
  if (WINDOW_ETHEREUM) window.ethereum = provider;
})();
"""


@dataclass
class Wallet:
    """A wallet extension for one browser context: a real key, and an optional chain to send
    transactions to (`send`, given a signed-and-sent hash back)."""

    key: str
    chain_id: int = 1
    send: Callable[[dict[str, Any]], str] | None = None
    requests: list[str] = field(default_factory=list)
    refuse_signing: bool = False

    @property
    def address(self) -> str:
        from eth_account import Account

        return str(Account.from_key(self.key).address)

    def install(self, context: Any, *, as_window_ethereum: bool = True) -> None:
        context.expose_binding("__swarmWalletRequest", lambda _source, raw: json.dumps(self._answer(raw)))
        context.add_init_script(WALLET_SCRIPT.replace("WINDOW_ETHEREUM", "true" if as_window_ethereum else "false"))

    def _answer(self, raw: str) -> dict[str, Any]:
        from eth_account import Account
        from eth_account.messages import encode_defunct

        request = json.loads(raw)
        method, params = request["method"], request.get("params") or []
        self.requests.append(method)
        if method in ("eth_requestAccounts", "eth_accounts"):
            return {"result": [self.address]}
        if method == "eth_chainId":
            return {"result": hex(self.chain_id)}
        if method == "net_version":
            return {"result": str(self.chain_id)}
        if method in ("wallet_switchEthereumChain", "wallet_addEthereumChain"):
            self.chain_id = int(params[0]["chainId"], 16)
            return {"result": None}
        if method == "personal_sign":
            if self.refuse_signing:
                return {"error": {"code": 4001, "message": "User rejected the request."}}
            message = params[0]
            data = bytes.fromhex(message[2:]) if message.startswith("0x") else message.encode()
            signed = Account.sign_message(encode_defunct(primitive=data), private_key=self.key)
            return {"result": "0x" + signed.signature.hex().removeprefix("0x")}
        if method == "eth_sendTransaction" and self.send is not None:
            return {"result": self.send(params[0])}
        return {"error": {"code": 4200, "message": f"the test wallet does not support {method}"}}


def sign_in_with_key(page: Any, up: Up, api_key: str) -> None:
    """Sign in through the page's API-key form."""
    page.goto(f"{up.url}/signin")
    page.get_by_label("API key").fill(api_key)
    page.get_by_role("button", name="Sign in with API key").click()
    page.get_by_test_id("signed-in-as").wait_for()


def new_user(up: Up, name: str, *, credits: int = 0, role: str = "user") -> tuple[str, str]:
    """(user id, API key) of a new user, with `credits` granted by the admin."""
    with up.client() as http:
        made = http.post("/v1/admin/users", json={"name": name, "role": role})
        assert made.status_code == 201, made.text
        user_id, key = made.json()["id"], made.json()["api_key"]
        if credits:
            granted = http.post(
                f"/v1/admin/users/{user_id}/credits",
                json={"amount": credits, "reason": "test grant"},
                headers={"Idempotency-Key": f"grant-{user_id}"},
            )
            assert granted.status_code == 201, granted.text
    return user_id, key


def wait_http(url: str, predicate: Callable[[httpx.Response], bool], timeout: float = 30) -> httpx.Response:
    import time

    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(url, timeout=5)
        if predicate(response) or time.monotonic() > deadline:
            return response
        time.sleep(0.2)
