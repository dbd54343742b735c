"""End to end, the money story of issue 13 on a real `swarmstation up` and a real local chain:

a new user signs in with a wallet (SIWE over the real endpoints), has 0 credits and gets a 402
with nothing queued; sends tokens from that wallet to the treasury (a real ERC-20 transfer on
ganache), reports it and is credited only once the transfer has its confirmations; generates an
image with a LoRA another user owns; pays exactly the captured charge (hold, capture, release in
the ledger) while the LoRA's author earns the royalty; a retried submission with the same
Idempotency-Key makes no second job or charge; and the ledger verifies."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from eth_account import Account

from tests.chain.harness import Chain, token_contract
from tests.e2e.conftest import Up, wait_for
from tests.fakes.model_hubs import FakeHubs
from tests.siwe_helpers import sign, siwe_message

pytestmark = pytest.mark.slow

TOOL = "sdxl-txt2img"
CONFIRMATIONS = 2
TOKEN_DECIMALS = 6
CREDITS_PER_TOKEN = 1000
DEPOSIT_TOKENS = 25  # 25 000 credits: more than the hold below
PER_GPU_SECOND = 1000  # credits per GPU second ...
CAP = 20_000  # ... at most this per run: the quote, and so the hold
ROYALTY_BPS = 500  # the default share of a LoRA of another author
SCAN_SECONDS = 0.3
PROMPT = "mountains at dawn, ink wash painting"


def ok(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, (
        f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}"
    )
    return resp.json()


def keyed(up: Up, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=up.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30)


def job_entries(http: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """The caller's ledger entries for one job, oldest first."""
    entries = ok(http.get("/v1/account/ledger", params={"limit": 500}))["entries"]
    return [e for e in reversed(entries) if e["ref_type"] == "job" and e["ref_id"] == job_id]


def test_sign_in_deposit_generate_pay_once_with_the_authors_royalty(up_factory, chain: Chain) -> None:  # type: ignore[no-untyped-def]
    # -- the chain: a token of our own, tokens in the user's wallet, a fresh treasury ------------
    wallet = chain.accounts[9]
    signer = Account.from_key(wallet.key)
    compiled = token_contract()
    token = chain.deploy(compiled, ["Story USD", "SUSD"], chain.accounts[0].key)
    chain.receipt(
        chain.transact(
            token, compiled.abi, "mint", [wallet.address, 100 * 10**TOKEN_DECIMALS], chain.accounts[0].key
        )
    )
    treasury = chain.new_address()
    chains = [
        {
            "chain_id": chain.chain_id,
            "name": "local",
            "rpc_url": chain.rpc_url,
            "treasury": treasury,
            "confirmations": CONFIRMATIONS,
            "start_block": chain.block_number(),
            "assets": [
                {
                    "symbol": "SUSD",
                    "contract": token,
                    "decimals": TOKEN_DECIMALS,
                    "credits_per_unit": CREDITS_PER_TOKEN,
                }
            ],
        }
    ]

    # -- a LoRA on the (fake) Civitai, imported by its author -----------------------------------
    hubs = FakeHubs().start()
    hubs.add_civitai_lora(7, 70, name="Ink Wash", trained_words=["ink wash painting"], base_model="SDXL 1.0")
    try:
        up: Up = up_factory(
            civitai_base_url=hubs.url,
            open_signup="true",
            chains=json.dumps(chains),
            deposit_scan_interval_seconds=SCAN_SECONDS,
            emulator_step_seconds=0.02,
        )
        up.start()
        admin = up.client()
        ok(
            admin.put(
                f"/v1/admin/tools/{TOOL}/price",
                json={"model": "per_gpu_second", "credits": PER_GPU_SECOND, "cap": CAP},
            )
        )

        author_key = ok(admin.post("/v1/admin/users", json={"name": "inkwash", "role": "user"}), 201)[
            "api_key"
        ]
        author = keyed(up, author_key)
        slug = ok(
            author.post("/v1/loras/import", json={"url": f"{hubs.url}/models/7", "visibility": "public"}), 201
        )["slug"]
        ok(admin.post(f"/v1/admin/loras/{slug}/approve", json={"visibility": "public"}), 202)
        wait_for(
            lambda: ok(author.get(f"/v1/loras/{slug}"))["moderation_status"] == "approved",
            60,
            "the LoRA approved",
        )
        author_balance_before = ok(author.get("/v1/account"))["balance"]

        # -- sign in with the wallet: nonce -> message -> signature -> session cookie -----------
        browser = httpx.Client(base_url=up.url, timeout=30)
        nonce = ok(browser.get("/v1/auth/nonce"))
        assert chain.chain_id in nonce["chain_ids"]
        text = siwe_message(
            signer,
            nonce["nonce"],
            datetime.now(UTC),
            domain=nonce["domain"],
            uri=nonce["uri"],
            chain_id=chain.chain_id,
        )
        signed_in = ok(browser.post("/v1/auth/siwe", json={"message": text, "signature": sign(signer, text)}))
        assert signed_in["created"] is True and signed_in["user"]["role"] == "user"
        assert signed_in["address"] == wallet.address.lower()
        assert "swarm_session" in browser.cookies
        session = ok(browser.get("/v1/auth/session"))
        assert session["via"] == "session" and session["wallets"] == [wallet.address.lower()]
        # the cookie and its CSRF token make an API key for the rest
        refused = browser.post("/v1/account/keys", json={"name": "story"})
        assert refused.status_code == 403, refused.text
        made = ok(
            browser.post(
                "/v1/account/keys", json={"name": "story"}, headers={"X-CSRF-Token": signed_in["csrf_token"]}
            ),
            201,
        )
        user = keyed(up, made["api_key"])
        account = ok(user.get("/v1/account"))
        assert account["user"]["id"] == signed_in["user"]["id"]
        assert (account["balance"], account["held"], account["available"]) == (0, 0, 0)

        # -- no credits: the quote is known, the job is refused with 402 and nothing queued ------
        job_body = {"tool": TOOL, "inputs": {"prompt": PROMPT}}
        quote = ok(user.post("/v1/quotes", json=job_body))
        assert quote["total"] == CAP and quote["charged"] is True
        royalty_lines = [line for line in quote["lines"] if line["kind"] == "royalty"]
        assert [(x["lora"], x["author"], x["bps"]) for x in royalty_lines] == [(slug, "inkwash", ROYALTY_BPS)]
        refused = user.post("/v1/jobs", json=job_body)
        assert refused.status_code == 402, refused.text
        body = refused.json()
        assert (body["code"], body["required"], body["available"]) == ("insufficient_credits", CAP, 0)
        assert ok(user.get("/v1/jobs"))["jobs"] == []
        assert ok(admin.get("/v1/admin/status"))["queue"]["queued"] == 0

        # -- a deposit from the signed-in wallet, credited after its confirmations ---------------
        options = ok(user.get("/v1/deposits/options"))["chains"]
        assert [(c["chain_id"], c["treasury"], c["confirmations"]) for c in options] == [
            (chain.chain_id, treasury, CONFIRMATIONS)
        ]
        tx_hash = chain.transact(
            token,
            compiled.abi,
            "transfer",
            [chain.w3.to_checksum_address(treasury), DEPOSIT_TOKENS * 10**TOKEN_DECIMALS],
            wallet.key,
        )
        assert chain.receipt(tx_hash)["status"] == 1
        reported = ok(
            user.post("/v1/account/deposits", json={"chain_id": chain.chain_id, "tx_hash": tx_hash}), 201
        )
        [deposit] = reported["deposits"]
        deposited = DEPOSIT_TOKENS * CREDITS_PER_TOKEN
        assert (deposit["state"], deposit["credits"], deposit["symbol"]) == ("pending", deposited, "SUSD")
        assert deposit["reason"] == f"waiting for confirmations: 1 of {CONFIRMATIONS}"
        time.sleep(SCAN_SECONDS * 5)  # several scans, and still one confirmation short
        assert ok(user.get("/v1/account"))["balance"] == 0
        chain.mine(CONFIRMATIONS - 1)
        credited = wait_for(
            lambda: (a := ok(user.get("/v1/account")))["balance"] == deposited and a,
            30,
            "the deposit credited",
        )
        assert (credited["held"], credited["available"]) == (0, deposited)
        assert [d["state"] for d in ok(user.get("/v1/account/deposits"))["deposits"]] == ["credited"]
        # reported, and found by the scanner too: credited once, to the wallet's owner
        ledger = ok(user.get("/v1/account/ledger"))["entries"]
        assert [(e["kind"], e["amount"], e["ref_type"], e["ref_id"]) for e in ledger] == [
            ("deposit", deposited, "deposit", deposit["id"])
        ]

        # -- generate with the other author's LoRA; a retry with the same key is the same job ----
        idem = {"Idempotency-Key": "story-job-1"}
        job = ok(user.post("/v1/jobs", json=job_body, headers=idem), 201)
        assert [lo["slug"] for lo in job["applied_loras"]] == [slug]
        retried = user.post("/v1/jobs", json=job_body, headers=idem)
        assert retried.status_code in (200, 201), retried.text
        assert retried.json()["id"] == job["id"] and retried.headers.get("Idempotent-Replayed") == "true"
        done = wait_for(
            lambda: (
                (j := ok(user.get(f"/v1/jobs/{job['id']}")))["state"] in ("COMPLETED", "FAILED", "CANCELLED")
                and j
            ),
            180,
            "the job to finish",
            interval=0.5,
        )
        assert done["state"] == "COMPLETED", done
        [output] = done["outputs"]
        png = user.get(f"/v1/jobs/{job['id']}/outputs/{output['id']}", follow_redirects=True)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG\r\n\x1a\n")

        # the balance went down by exactly the captured charge: hold, capture, release
        entries = job_entries(user, job["id"])
        assert [e["kind"] for e in entries] == ["hold", "capture", "release"], entries
        hold, capture, release = entries
        charge = -capture["amount"]
        assert 0 < charge < CAP
        assert (hold["amount"], hold["held_change"]) == (0, CAP)
        assert capture["held_change"] == -charge
        assert (release["amount"], release["held_change"]) == (0, -(CAP - charge))
        after = ok(user.get("/v1/account"))
        assert (after["balance"], after["held"], after["available"]) == (
            deposited - charge,
            0,
            deposited - charge,
        )

        # the author's royalty, out of the charge
        royalty = charge * ROYALTY_BPS // 10_000
        assert royalty > 0
        author_entries = ok(author.get("/v1/account/ledger"))["entries"]
        earned = [e for e in author_entries if e["kind"] == "royalty"]
        assert [(e["amount"], e["ref_type"], e["ref_id"]) for e in earned] == [(royalty, "lora", slug)]
        assert ok(author.get("/v1/account"))["balance"] == author_balance_before + royalty

        # a retry after the end: the first job again, no second job, hold or charge
        again = user.post("/v1/jobs", json=job_body, headers=idem)
        assert again.status_code in (200, 201) and again.json()["id"] == job["id"], again.text
        assert again.json()["state"] == "COMPLETED"
        assert [j["id"] for j in ok(user.get("/v1/jobs"))["jobs"]] == [job["id"]]
        assert job_entries(user, job["id"]) == entries
        assert ok(user.get("/v1/account"))["balance"] == deposited - charge
        changed = user.post("/v1/jobs", json={**job_body, "inputs": {"prompt": "another"}}, headers=idem)
        assert changed.status_code == 422, changed.text

        # the ledger verifies, over the API and with the CLI
        assert ok(admin.get("/v1/admin/credits/verify"))["problems"] == []
        verified = up.cli("credits", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        hubs.stop()
