"""Deposits against a real local chain (ganache): real transactions, real logs, real receipts.

Each test has a treasury of its own (a fresh address), so the tests share one chain without
seeing each other's transfers. The scanner is driven by hand (`Deposits.tick`); confirmations
come from mining blocks (`chain.mine`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.control import ledger
from swarmstation.control.bootstrap import create_user_with_key
from swarmstation.control.deposits import Deposits
from swarmstation.store.db import transaction
from swarmstation.store.models import ChainCursor, LedgerEntry, Wallet
from tests.chain.harness import Chain, FundedAccount, token_contract
from tests.conftest import FakeClock

CONFIRMATIONS = 3
ETH_CREDITS = 2000  # credits per ETH
TUSD_CREDITS = 1000  # credits per token (6 decimals, like USDC)


@pytest.fixture(scope="module")
def token(chain: Chain) -> str:
    """An accepted ERC-20 (TestToken.sol compiled now), with tokens minted to accounts 1-4."""
    compiled = token_contract()
    owner = chain.accounts[0]
    address = chain.deploy(compiled, ["Test USD", "TUSD"], owner.key)
    for account in chain.accounts[1:5]:
        chain.receipt(
            chain.transact(address, compiled.abi, "mint", [account.address, 100 * 10**6], owner.key)
        )
    return address


class Scene:
    """A control plane whose one chain is the local node, with a treasury of its own."""

    def __init__(self, chain: Chain, token: str, database_url: str, tmp_path: Path, clock: FakeClock) -> None:
        self.chain = chain
        self.token = token
        self.treasury = chain.new_address()
        self.database_url = database_url
        self.tmp_path = tmp_path
        self.clock = clock
        self.start_block = chain.block_number() + 1
        self.plane = self._build()
        self._start()
        self.admin = {"Authorization": f"Bearer {self.plane.admin_key}"}

    def settings(self) -> Settings:
        return Settings(
            data_dir=self.tmp_path / "data",
            database_url=self.database_url,
            provider="none",
            scheduler_interval_seconds=60,
            control_interval_seconds=60,
            deposit_scan_interval_seconds=3600,  # the test scans by hand
            chains=[
                {
                    "chain_id": self.chain.chain_id,
                    "name": "local",
                    "rpc_url": self.chain.rpc_url,
                    "treasury": self.treasury,
                    "confirmations": CONFIRMATIONS,
                    "start_block": self.start_block,
                    "assets": [
                        {"symbol": "ETH", "contract": None, "decimals": 18, "credits_per_unit": ETH_CREDITS},
                        {
                            "symbol": "TUSD",
                            "contract": self.token,
                            "decimals": 6,
                            "credits_per_unit": TUSD_CREDITS,
                        },
                    ],
                }
            ],
        )

    def _build(self) -> ControlPlane:
        return build(self.settings(), provider=None, clock=self.clock)

    def _start(self) -> None:
        self.api = TestClient(self.plane.app)
        self.api.__enter__()
        # The scanner loop scans once at start-up, in a thread of its own; wait for that scan, so
        # that it cannot find a transfer the test sends next before the test reports it.
        deadline = time.monotonic() + 30
        while self.deposits.ticks == 0:
            assert time.monotonic() < deadline, "the deposit scanner's first scan did not finish"
            time.sleep(0.01)

    def restart(self) -> None:
        self.close()
        self.plane = self._build()
        self._start()

    def close(self) -> None:
        self.api.__exit__(None, None, None)
        self.plane.state.engine.dispose()

    @property
    def deposits(self) -> Deposits:
        service: Deposits = self.plane.app.state.deposits
        return service

    def user(self, name: str, wallet: FundedAccount | None = None) -> tuple[str, dict[str, str]]:
        with transaction(self.plane.state.sessions) as s:
            user, key = create_user_with_key(s, name, "user", self.clock())
            if wallet is not None:
                s.add(Wallet(address=wallet.address.lower(), user_id=user.id, linked_at=self.clock()))
        return user.id, {"Authorization": f"Bearer {key}"}

    def link(self, user_id: str, wallet: FundedAccount) -> None:
        with transaction(self.plane.state.sessions) as s:
            s.add(Wallet(address=wallet.address.lower(), user_id=user_id, linked_at=self.clock()))

    def available(self, user_id: str) -> int:
        with transaction(self.plane.state.sessions) as s:
            return ledger.balance(s, user_id).available

    def verify(self) -> None:
        with transaction(self.plane.state.sessions) as s:
            assert ledger.verify(s) == []

    def deposit_entries(self) -> int:
        with transaction(self.plane.state.sessions) as s:
            return int(
                s.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "deposit"))
                or 0
            )

    def report(self, headers: dict[str, str], tx_hash: str, chain_id: int | None = None) -> Any:
        body = {"chain_id": chain_id or self.chain.chain_id, "tx_hash": tx_hash}
        return self.api.post("/v1/account/deposits", json=body, headers=headers)

    def send_tokens(
        self, sender: FundedAccount, amount: int, *, to: str | None = None, gas: int | None = None
    ) -> str:
        recipient = self.chain.w3.to_checksum_address(to or self.treasury)
        return self.chain.transact(
            self.token, token_contract().abi, "transfer", [recipient, amount], sender.key, gas=gas
        )


@pytest.fixture
def scene(chain: Chain, token: str, database_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Scene]:
    scene = Scene(chain, token, database_url, tmp_path, clock)
    yield scene
    scene.close()


def only(response: Any) -> dict[str, Any]:
    deposits = response.json()["deposits"]
    assert len(deposits) == 1, deposits
    return dict(deposits[0])


def test_eth_deposit_is_credited_only_after_its_confirmations(scene: Scene) -> None:
    sender = scene.chain.accounts[1]
    alice, headers = scene.user("alice", wallet=sender)
    tx_hash = scene.chain.send_eth(sender.key, scene.treasury, 10**18 // 2)  # 0.5 ETH

    reported = scene.report(headers, tx_hash)
    assert reported.status_code == 201, reported.text
    deposit = only(reported)
    assert deposit["state"] == "pending"
    assert deposit["reason"] == f"waiting for confirmations: 1 of {CONFIRMATIONS}"
    assert (deposit["log_index"], deposit["symbol"], deposit["token"]) == (-1, "ETH", None)
    assert (deposit["amount"], deposit["credits"]) == (str(10**18 // 2), ETH_CREDITS // 2)
    assert deposit["sender"] == sender.address.lower()

    scene.chain.mine(CONFIRMATIONS - 2)
    scene.deposits.tick()
    assert only(scene.api.get("/v1/account/deposits", headers=headers))["state"] == "pending"
    assert scene.available(alice) == 0

    scene.chain.mine(1)
    scene.deposits.tick()
    deposit = only(scene.api.get("/v1/account/deposits", headers=headers))
    assert deposit["state"] == "credited", deposit
    assert deposit["user_id"] == alice
    assert scene.available(alice) == ETH_CREDITS // 2
    scene.verify()


def test_token_deposit_reported_twice_and_scanned_is_credited_once(scene: Scene) -> None:
    sender = scene.chain.accounts[2]
    bob, headers = scene.user("bob", wallet=sender)
    tx_hash = scene.send_tokens(sender, 2_500_000)  # 2.5 TUSD

    scene.deposits.tick()  # the scanner finds it first, from the Transfer log
    first = scene.report(headers, tx_hash)
    assert first.status_code == 200, first.text  # known already
    deposit = only(first)
    assert (deposit["state"], deposit["symbol"], deposit["token"]) == ("pending", "TUSD", scene.token)
    assert deposit["log_index"] >= 0
    assert deposit["credits"] == 2500

    scene.chain.mine(CONFIRMATIONS)
    second = scene.report(headers, tx_hash)  # the report itself settles what is confirmed
    assert second.status_code == 200
    assert only(second)["state"] == "credited"
    scene.deposits.tick()
    third = scene.report(headers, tx_hash)
    assert only(third)["state"] == "credited"

    assert scene.available(bob) == 2500
    assert scene.deposit_entries() == 1
    scene.verify()


def test_a_transfer_from_an_unlinked_wallet_waits_until_its_owner_links_it(scene: Scene) -> None:
    sender = scene.chain.accounts[3]
    carol, headers = scene.user("carol")  # no wallet yet
    tx_hash = scene.chain.send_eth(sender.key, scene.treasury, 10**18)
    scene.chain.mine(CONFIRMATIONS)
    scene.deposits.tick()

    waiting = scene.api.get("/v1/admin/deposits", params={"state": "unattributed"}, headers=scene.admin)
    assert waiting.status_code == 200
    deposit = only(waiting)
    assert deposit["tx_hash"] == tx_hash
    assert "no user has linked" in deposit["reason"]
    assert scene.api.get("/v1/account/deposits", headers=headers).json()["deposits"] == []
    assert scene.available(carol) == 0

    scene.link(carol, sender)
    # Her wallet's deposits are hers to see at once; the scanner credits them on its next pass.
    assert only(scene.api.get("/v1/account/deposits", headers=headers))["state"] == "unattributed"
    scene.deposits.tick()
    deposit = only(scene.api.get("/v1/account/deposits", headers=headers))
    assert (deposit["state"], deposit["user_id"]) == ("credited", carol)
    assert scene.available(carol) == ETH_CREDITS
    assert scene.api.get(
        "/v1/admin/deposits", params={"state": "unattributed"}, headers=scene.admin
    ).json() == {"deposits": []}
    scene.verify()


def test_a_reverted_transfer_is_refused(scene: Scene) -> None:
    sender = scene.chain.accounts[4]
    dave, headers = scene.user("dave", wallet=sender)
    # More tokens than the sender has, with a gas limit so that it is mined (and reverts).
    tx_hash = scene.send_tokens(sender, 10**15, gas=100_000)
    assert scene.chain.receipt(tx_hash)["status"] == 0
    scene.chain.mine(CONFIRMATIONS)

    reported = scene.report(headers, tx_hash)
    assert reported.status_code == 201
    deposit = only(reported)
    assert deposit["state"] == "refused"
    assert "reverted" in deposit["reason"]
    scene.deposits.tick()
    assert scene.available(dave) == 0
    assert only(scene.api.get("/v1/account/deposits", headers=headers))["state"] == "refused"
    scene.verify()


def test_a_transfer_to_another_address_is_refused(scene: Scene) -> None:
    sender = scene.chain.accounts[5]
    erin, headers = scene.user("erin", wallet=sender)
    tx_hash = scene.chain.send_eth(sender.key, scene.chain.new_address(), 10**17)
    scene.chain.mine(CONFIRMATIONS)

    deposit = only(scene.report(headers, tx_hash))
    assert deposit["state"] == "refused"
    assert "nothing to the treasury" in deposit["reason"]
    scene.deposits.tick()
    assert scene.available(erin) == 0


def test_a_token_not_accepted_is_refused(scene: Scene) -> None:
    chain = scene.chain
    sender = chain.accounts[6]
    frank, headers = scene.user("frank", wallet=sender)
    compiled = token_contract()
    other = chain.deploy(compiled, ["Other", "OTH"], sender.key)
    chain.receipt(chain.transact(other, compiled.abi, "mint", [sender.address, 10**9], sender.key))
    tx_hash = chain.transact(
        other, compiled.abi, "transfer", [chain.w3.to_checksum_address(scene.treasury), 10**6], sender.key
    )

    scene.deposits.tick()  # the scanner sees Transfer logs of any token to the treasury
    deposit = only(scene.api.get("/v1/account/deposits", headers=headers))
    assert (deposit["tx_hash"], deposit["state"], deposit["token"]) == (tx_hash, "refused", other)
    assert "is not accepted" in deposit["reason"]
    assert only(scene.report(headers, tx_hash))["state"] == "refused"
    scene.chain.mine(CONFIRMATIONS)
    scene.deposits.tick()
    assert scene.available(frank) == 0


def test_a_deposit_dropped_by_a_reorganisation_is_not_credited(scene: Scene) -> None:
    chain = scene.chain
    sender = chain.accounts[7]
    grace, headers = scene.user("grace", wallet=sender)
    snapshot = chain.snapshot()
    tx_hash = chain.send_eth(sender.key, scene.treasury, 10**18)
    scene.deposits.tick()
    assert only(scene.api.get("/v1/account/deposits", headers=headers))["state"] == "pending"

    chain.revert(snapshot)  # the block with the transfer is gone
    chain.mine(CONFIRMATIONS + 1)  # and a longer chain without it
    scene.deposits.tick()
    deposit = only(scene.api.get("/v1/account/deposits", headers=headers))
    assert (deposit["tx_hash"], deposit["state"]) == (tx_hash, "dropped")
    assert "reorganisation" in deposit["reason"]
    assert scene.available(grace) == 0
    assert scene.report(headers, tx_hash).status_code == 404  # the chain no longer knows it
    scene.verify()


def test_the_scanner_resumes_from_its_cursor_after_a_restart(scene: Scene) -> None:
    sender = scene.chain.accounts[8]
    heidi, _ = scene.user("heidi", wallet=sender)
    scene.chain.mine(CONFIRMATIONS + 2)
    scene.deposits.tick()
    with transaction(scene.plane.state.sessions) as s:
        cursor = s.get(ChainCursor, scene.chain.chain_id)
        assert cursor is not None
        assert cursor.last_block == scene.chain.block_number() - CONFIRMATIONS + 1

    scene.close()  # down while a deposit arrives
    scene.chain.send_eth(sender.key, scene.treasury, 3 * 10**18)
    scene.chain.mine(CONFIRMATIONS)
    scene.restart()
    scene.deposits.tick()
    assert scene.available(heidi) == 3 * ETH_CREDITS
    scene.verify()


def test_deposit_options_list_the_chains_without_rpc_urls(scene: Scene) -> None:
    answer = scene.api.get("/v1/deposits/options")
    assert answer.status_code == 200
    (chain,) = answer.json()["chains"]
    assert chain["chain_id"] == scene.chain.chain_id
    assert chain["treasury"] == scene.treasury
    assert chain["confirmations"] == CONFIRMATIONS
    assert [(a["symbol"], a["contract"], a["decimals"]) for a in chain["assets"]] == [
        ("ETH", None, 18),
        ("TUSD", scene.token, 6),
    ]
    assert scene.chain.rpc_url not in answer.text


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"chain_id": 1337, "tx_hash": "0x1234"}, 422, "tx_hash"),
        ({"chain_id": 1337, "tx_hash": "0x" + "zz" * 32}, 422, "tx_hash"),
        ({"chain_id": 1337, "tx_hash": "0x" + "ab" * 33}, 422, "tx_hash"),
        ({"chain_id": 1337, "tx_hash": "ab" * 32}, 422, "tx_hash"),
        ({"chain_id": 999, "tx_hash": "0x" + "ab" * 32}, 422, "chain_id"),
        ({"chain_id": "1337", "tx_hash": "0x" + "ab" * 32}, 422, "chain_id"),
        ({"chain_id": 1337, "tx_hash": "0x" + "ab" * 32}, 404, None),  # well formed, unknown
    ],
)
def test_bad_reports_are_refused_with_nothing_written(
    scene: Scene, body: dict[str, Any], status: int, field: str | None
) -> None:
    _, headers = scene.user("ivan")
    answer = scene.api.post("/v1/account/deposits", json=body, headers=headers)
    assert answer.status_code == status, answer.text
    problem = answer.json()
    assert problem["detail"]
    if field is not None:
        assert [e["field"] for e in problem["errors"]] == [field]
    assert scene.api.get("/v1/admin/deposits", headers=scene.admin).json() == {"deposits": []}
    assert scene.api.post("/v1/account/deposits", json=body).status_code == 401
