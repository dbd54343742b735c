"""Wallet sign-in and the account page in a real browser: an injected EIP-1193 wallet signing
with a real key (the server verifies it), API keys made and revoked on the page, and an ETH
deposit sent from the wallet to a real local chain (ganache) and credited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chain.harness import Chain, token_contract
from tests.e2e.conftest import Up, make_up
from tests.web.conftest import Wallet, axe_violations, new_user, open_page, shot, sign_in_with_key

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


def test_a_person_makes_an_api_key_on_the_account_page_uses_and_revokes_it(studio_up: Up, page: Any) -> None:
    _, key = new_user(studio_up, "keymaker", credits=250)
    sign_in_with_key(page, studio_up, key)
    page.goto(f"{studio_up.url}/account")
    assert page.get_by_test_id("available").inner_text() == "250 cr"
    ledger = page.get_by_test_id("ledger")
    assert "grant" in ledger.inner_text() and "+250 cr" in ledger.inner_text()

    page.get_by_label("Key name").fill("laptop")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("new-api-key").inner_text().strip()
    assert secret and secret != key
    assert "shown only this once" in page.get_by_role("status").filter(has_text="laptop").inner_text()
    as_new = {"Authorization": f"Bearer {secret}"}
    answer = httpx.get(f"{studio_up.url}/v1/auth/session", headers=as_new)
    assert answer.status_code == 200 and answer.json()["user"]["name"] == "keymaker"
    keys = page.get_by_test_id("api-keys")
    keys.get_by_text("laptop").wait_for()
    assert axe_violations(page) == []
    shot(page, "account")

    # Shown once: after a reload, only its prefix is there.
    page.reload()
    page.get_by_test_id("api-keys").get_by_text("laptop").wait_for()
    assert page.get_by_test_id("new-api-key").count() == 0
    assert secret not in page.content()

    page.get_by_role("button", name="Revoke laptop").click()
    page.get_by_role("button", name="Yes, revoke laptop").click()
    page.get_by_test_id("api-keys").get_by_text("revoked").wait_for()
    assert httpx.get(f"{studio_up.url}/v1/auth/session", headers=as_new).status_code == 401
    # The key this browser signed in with still works: the page is still signed in.
    assert page.get_by_test_id("signed-in-as").inner_text() == "keymaker"


def test_the_account_page_fits_a_phone_and_sends_signed_out_visitors_to_sign_in(
    studio_up: Up, browser: Any
) -> None:
    context, page, problems = open_page(browser, width=375, height=800)
    page.goto(f"{studio_up.url}/account")
    page.wait_for_url(f"{studio_up.url}/signin?next=%2Faccount")
    _, key = new_user(studio_up, "phone", credits=5)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in with API key").click()
    page.wait_for_url(f"{studio_up.url}/account")
    page.get_by_test_id("ledger").wait_for()
    page.get_by_label("Key name").fill("a key with a rather long name to wrap")
    page.get_by_role("button", name="Create key").click()
    page.get_by_test_id("new-api-key").wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert axe_violations(page) == []
    context.close()
    problems.check()


def test_a_key_user_links_a_wallet_then_unlinks_it(studio_up: Up, browser: Any) -> None:
    _, key = new_user(studio_up, "linker")
    wallet = Wallet(key="0x" + "43" * 32)
    context, page, problems = open_page(browser)
    wallet.install(context)
    sign_in_with_key(page, studio_up, key)
    page.goto(f"{studio_up.url}/account")
    page.get_by_text("No wallet is linked.").wait_for()
    page.get_by_role("button", name="Link Test Wallet").click()
    address = wallet.address.lower()
    page.get_by_test_id("linked-wallets").get_by_text(address).wait_for()
    as_key = {"Authorization": f"Bearer {key}"}
    assert [
        w["address"] for w in httpx.get(f"{studio_up.url}/v1/account/wallets", headers=as_key).json()
    ] == [address]
    page.get_by_role("button", name=f"Unlink {address}").click()
    page.get_by_role("button", name=f"Yes, unlink {address[:6]}…{address[-4:]}").click()
    page.get_by_text("No wallet is linked.").wait_for()
    assert httpx.get(f"{studio_up.url}/v1/account/wallets", headers=as_key).json() == []
    context.close()
    problems.check()


def test_revoking_the_key_this_browser_signed_in_with_signs_it_out(studio_up: Up, page: Any) -> None:
    _, key = new_user(studio_up, "selfrevoker")
    sign_in_with_key(page, studio_up, key)
    page.get_by_label("API key").wait_for(state="detached")
    page.goto(f"{studio_up.url}/account")
    row = page.get_by_test_id("api-keys").get_by_role("row").filter(has_text="this browser")
    row.get_by_role("button", name="Revoke").click()
    row.get_by_role("button", name="Yes, revoke").click()
    page.wait_for_url(f"{studio_up.url}/signin?next=%2Faccount")
    page.get_by_label("API key").wait_for()
    assert (
        httpx.get(f"{studio_up.url}/v1/auth/session", headers={"Authorization": f"Bearer {key}"}).status_code
        == 401
    )


def test_the_ledger_pages_newest_first(studio_up: Up, page: Any) -> None:
    user_id, key = new_user(studio_up, "ledgerreader")
    with studio_up.client() as http:
        for n in range(1, 23):
            granted = http.post(
                f"/v1/admin/users/{user_id}/credits",
                json={"amount": n, "reason": f"grant number {n}"},
                headers={"Idempotency-Key": f"ledger-{user_id}-{n}"},
            )
            assert granted.status_code == 201, granted.text
    sign_in_with_key(page, studio_up, key)
    page.goto(f"{studio_up.url}/account")
    rows = page.get_by_test_id("ledger").locator("tbody tr")
    rows.first.wait_for()
    assert rows.count() == 20
    assert "grant number 22" in rows.first.inner_text() and "+22 cr" in rows.first.inner_text()
    assert "253 cr" in rows.first.inner_text()  # the balance after it: 1 + 2 + ... + 22
    page.get_by_role("button", name="Older entries").click()
    rows.nth(21).wait_for()
    assert rows.count() == 22
    assert "grant number 1" in rows.last.inner_text() and "+1 cr" in rows.last.inner_text()
    assert page.get_by_role("button", name="Older entries").count() == 0


# -- deposits against a real local chain ------------------------------------------------------------
CONFIRMATIONS = 2
ETH_CREDITS = 2000  # credits per ETH


TUSD_CREDITS = 1000  # credits per token (6 decimals, like USDC)


@pytest.fixture(scope="module")
def token(chain: Chain) -> str:
    """An accepted ERC-20 (tests/chain/TestToken.sol), with tokens minted to account 8."""
    compiled = token_contract()
    owner = chain.accounts[0]
    address = chain.deploy(compiled, ["Test USD", "TUSD"], owner.key)
    chain.receipt(
        chain.transact(address, compiled.abi, "mint", [chain.accounts[8].address, 100 * 10**6], owner.key)
    )
    return address


@pytest.fixture
def chain_up(chain: Chain, token: str, tmp_path: Path) -> Iterator[tuple[Up, Chain, str]]:
    """`swarmstation up` whose one deposit chain is the local node, with a treasury of its own,
    scanned often (so a test waits for blocks, not for the scanner)."""
    treasury = chain.new_address()
    chains = [
        {
            "chain_id": chain.chain_id,
            "name": "Local",
            "rpc_url": chain.rpc_url,
            "treasury": treasury,
            "confirmations": CONFIRMATIONS,
            "start_block": chain.block_number() + 1,
            "assets": [
                {"symbol": "ETH", "contract": None, "decimals": 18, "credits_per_unit": ETH_CREDITS},
                {"symbol": "TUSD", "contract": token, "decimals": 6, "credits_per_unit": TUSD_CREDITS},
            ],
        }
    ]
    up = make_up(tmp_path, chains=json.dumps(chains), deposit_scan_interval_seconds=0.3)
    up.start()
    try:
        yield up, chain, treasury
    finally:
        up.cleanup()


def test_a_wallet_user_deposits_eth_from_the_account_page_and_sees_it_credited(
    chain_up: tuple[Up, Chain, str], browser: Any
) -> None:
    up, chain, treasury = chain_up
    funded = chain.accounts[7]

    def send(tx: dict[str, Any]) -> str:
        # What the wallet extension does: sign the page's transaction with its key and broadcast it.
        assert tx["from"].lower() == funded.address.lower()
        return chain.send_raw({"to": tx["to"], "value": int(tx["value"], 16), "gas": 21000}, funded.key)

    # Chain 1 at first: the page must switch the wallet to the deposit chain.
    wallet = Wallet(key=funded.key, chain_id=1, send=send)
    context, page, problems = open_page(browser)
    wallet.install(context)
    page.goto(f"{up.url}/signin?next=/account%23deposit")
    page.get_by_role("button", name="Test Wallet").click()
    page.wait_for_url(f"{up.url}/account#deposit")
    before = int(page.get_by_test_id("available").inner_text().removesuffix(" cr").replace(",", ""))

    assert page.get_by_label("Chain").input_value() == str(chain.chain_id)
    assert page.get_by_label("Asset").input_value() == "ETH"
    page.get_by_label("Amount (ETH)").fill("0.05")
    assert page.get_by_test_id("deposit-preview").inner_text() == "0.05 ETH = 100 cr"
    balance_before = int(chain.rpc("eth_getBalance", [treasury, "latest"]), 16)
    page.get_by_role("button", name="Send from wallet").click()

    deposits = page.get_by_test_id("deposits")
    deposits.get_by_text(f"waiting for confirmations: 1 of {CONFIRMATIONS}").wait_for()
    assert "pending" in deposits.inner_text()
    assert int(chain.rpc("eth_getBalance", [treasury, "latest"]), 16) - balance_before == 5 * 10**16
    assert wallet.chain_id == chain.chain_id and "eth_sendTransaction" in wallet.requests

    chain.mine(CONFIRMATIONS - 1)
    deposits.get_by_text("credited", exact=True).wait_for(timeout=30_000)
    expected = f"{before + 100:,} cr"
    page.get_by_test_id("available").filter(has_text=expected).wait_for()
    page.get_by_test_id("balance").filter(has_text=expected).wait_for()  # the header too
    assert "deposit" in page.get_by_test_id("ledger").inner_text()
    assert axe_violations(page) == []
    shot(page, "account-deposit")
    page.set_viewport_size({"width": 375, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # the deposit form fits a phone
    context.close()
    problems.check()


def test_a_key_user_links_the_wallet_and_deposits_tokens_from_it(
    chain_up: tuple[Up, Chain, str], token: str, browser: Any
) -> None:
    up, chain, treasury = chain_up
    funded = chain.accounts[8]
    compiled = token_contract()

    def send(tx: dict[str, Any]) -> str:
        # The page's ERC-20 call data, hand-encoded, goes to the chain as it is.
        return chain.send_raw({"to": tx["to"], "value": int(tx["value"], 16), "data": tx["data"]}, funded.key)

    def treasury_tokens() -> int:
        contract = chain.w3.eth.contract(address=chain.w3.to_checksum_address(token), abi=compiled.abi)
        return int(contract.functions.balanceOf(chain.w3.to_checksum_address(treasury)).call())

    _, key = new_user(up, "tokenholder")
    wallet = Wallet(key=funded.key, chain_id=chain.chain_id, send=send)
    context, page, problems = open_page(browser)
    wallet.install(context)
    sign_in_with_key(page, up, key)
    page.goto(f"{up.url}/account#deposit")
    page.get_by_label("Asset").select_option("TUSD")
    page.get_by_label("Amount (TUSD)").fill("2.5")
    assert page.get_by_test_id("deposit-preview").inner_text() == "2.5 TUSD = 2,500 cr"

    # Not linked yet: the page refuses to send what could not be credited to this account.
    page.get_by_role("button", name="Send from wallet").click()
    refusal = page.get_by_role("alert")
    refusal.wait_for()
    assert "is not linked to this account" in refusal.inner_text()
    assert "eth_sendTransaction" not in wallet.requests

    page.get_by_role("button", name="Link Test Wallet").click()
    page.get_by_test_id("linked-wallets").get_by_text(funded.address.lower()).wait_for()
    linked = httpx.get(f"{up.url}/v1/account/wallets", headers={"Authorization": f"Bearer {key}"})
    assert [w["address"] for w in linked.json()] == [funded.address.lower()]

    page.get_by_role("button", name="Send from wallet").click()
    deposits = page.get_by_test_id("deposits")
    deposits.get_by_text(f"waiting for confirmations: 1 of {CONFIRMATIONS}").wait_for()
    assert treasury_tokens() == 2_500_000
    chain.mine(CONFIRMATIONS - 1)
    deposits.get_by_text("credited", exact=True).wait_for(timeout=30_000)
    assert "2.5 TUSD" in deposits.inner_text()
    page.get_by_test_id("available").filter(has_text="2,500 cr").wait_for()
    context.close()
    problems.check()
