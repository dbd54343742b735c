"""Sign-In with Ethereum (issue 13, accounts and sign-in): real signatures from eth_account test
keys over messages built with the siwe package; every refusal is a clear 4xx that writes nothing;
nonces are single use across two control planes on one database; open sign-up on and off;
wallet linking, one user per address."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.store.db import transaction
from swarmstation.store.models import AuthNonce, User
from swarmstation.store.queries import user_for_address
from tests.conftest import FakeClock
from tests.helpers import add_user
from tests.served import Served, served
from tests.siwe_helpers import (
    ALICE,
    BOB,
    CAROL,
    counts,
    get_nonce,
    later,
    sign,
    sign_in,
    signed,
    siwe_message,
)

PLANE_SETTINGS = {"open_signup": True}


def test_a_new_address_signs_in_and_becomes_a_user(
    plane: ControlPlane, api: TestClient, clock: FakeClock
) -> None:
    nonce = api.get("/v1/auth/nonce").json()
    assert len(nonce["nonce"]) >= 8 and nonce["nonce"].isalnum()
    assert nonce["domain"] == "127.0.0.1:8000" and nonce["uri"] == "http://127.0.0.1:8000"
    assert nonce["chain_ids"] == [1]
    text = siwe_message(ALICE, nonce["nonce"], clock.now)
    resp = api.post("/v1/auth/siwe", json={"message": text, "signature": sign(ALICE, text)})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["address"] == ALICE.address.lower() and body["created"] is True
    assert body["user"]["role"] == "user"  # an address never brings the admin role
    assert "swarm_session" in resp.cookies and resp.cookies["swarm_csrf"] == body["csrf_token"]

    who = api.get("/v1/auth/session").json()  # the client sends the cookies back
    assert who["via"] == "session" and who["user"]["id"] == body["user"]["id"]
    assert who["address"] == ALICE.address.lower() and who["wallets"] == [ALICE.address.lower()]
    with transaction(plane.state.sessions) as s:
        user = user_for_address(s, ALICE.address)  # any case of the hex
        assert user is not None and user.id == body["user"]["id"]
        assert user_for_address(s, BOB.address) is None

    api.cookies.clear()
    again = sign_in(api, ALICE, clock.now).json()
    assert again["created"] is False and again["user"]["id"] == body["user"]["id"]


# -- refusals ---------------------------------------------------------------------------------------
def _refusals(api: TestClient, now: Any) -> Iterator[tuple[str, dict[str, Any], int, str]]:
    """(what, body, status, code) for each way a sign-in must fail."""
    nonce = get_nonce(api)
    text = siwe_message(ALICE, nonce, now)
    yield (
        "signed by another key",
        {"message": text, "signature": sign(BOB, text)},
        401,
        "siwe_signature_invalid",
    )
    tampered = text.replace("Sign in to swarmstation", "Sign in to swarmstation as admin")
    yield (
        "message changed after signing",
        {"message": tampered, "signature": sign(ALICE, text)},
        401,
        ("siwe_signature_invalid"),
    )
    forged_for = siwe_message(ALICE, get_nonce(api), now, address=BOB.address)  # claims Bob's address
    yield (
        "claims another's address",
        {"message": forged_for, "signature": sign(ALICE, forged_for)},
        401,
        ("siwe_signature_invalid"),
    )
    made_up = siwe_message(ALICE, "NeverIssued123", now)
    yield (
        "a nonce never issued",
        {"message": made_up, "signature": sign(ALICE, made_up)},
        401,
        "siwe_nonce_refused",
    )
    for what, fields in [
        ("another domain", {"domain": "evil.example"}),
        ("another URI", {"uri": "https://evil.example/login"}),
        ("another chain", {"chain_id": 137}),
        ("issued in the future", {"issued_at": later(now, 600)}),
        ("expired message", {"expiration": later(now, -1)}),
        ("not valid yet", {"not_before": later(now, 600)}),
    ]:
        yield what, signed(api, ALICE, now, **fields), 401, "siwe_refused"
    good = signed(api, ALICE, now)
    yield "not a SIWE message", {"message": "hello", "signature": good["signature"]}, 422, "siwe_malformed"
    lower = good["message"].replace(ALICE.address, ALICE.address.lower())
    yield (
        "address not in EIP-55 form",
        {"message": lower, "signature": sign(ALICE, lower)},
        422,
        "siwe_malformed",
    )
    yield "signature not hex", {**good, "signature": "0xnothex"}, 422, "siwe_malformed"
    yield "signature without 0x", {**good, "signature": good["signature"][2:]}, 422, "siwe_malformed"
    yield "signature of 64 bytes", {**good, "signature": good["signature"][:-2]}, 422, "siwe_malformed"
    yield "odd number of digits", {**good, "signature": good["signature"][:-1]}, 422, "siwe_malformed"
    yield "no signature", {"message": good["message"]}, 422, "validation_error"
    yield "huge message", {"message": "x" * 5000, "signature": good["signature"]}, 422, "validation_error"


def test_every_refusal_is_a_clear_4xx_and_writes_nothing(
    plane: ControlPlane, api: TestClient, clock: FakeClock
) -> None:
    before = counts(plane.state.sessions)
    seen = 0
    for what, body, status, code in _refusals(api, clock.now):
        resp = api.post("/v1/auth/siwe", json=body)
        assert (resp.status_code, resp.json()["code"]) == (status, code), f"{what}: {resp.text}"
        assert resp.json()["detail"], what
        # a message for people: no Python exception names or reprs
        assert not re.search(r"\w+(Error|Exception)\b|object at 0x", resp.json()["detail"]), what
        assert "swarm_session" not in resp.cookies, what
        assert counts(plane.state.sessions) == before, what
        seen += 1
    assert seen == 18


def test_a_signature_is_used_once(plane: ControlPlane, api: TestClient, clock: FakeClock) -> None:
    body = signed(api, ALICE, clock.now)
    assert api.post("/v1/auth/siwe", json=body).status_code == 200
    api.cookies.clear()
    before = counts(plane.state.sessions)
    replay = api.post("/v1/auth/siwe", json=body)
    assert replay.status_code == 401 and replay.json()["code"] == "siwe_nonce_refused"
    assert "used already" in replay.json()["detail"]
    assert counts(plane.state.sessions) == before


def test_an_expired_nonce_is_refused(plane: ControlPlane, api: TestClient, clock: FakeClock) -> None:
    body = signed(api, ALICE, clock.now)
    clock.advance(301)  # SWARMSTATION_SIWE_NONCE_TTL_SECONDS defaults to 300
    resp = api.post("/v1/auth/siwe", json=body)
    assert resp.status_code == 401 and resp.json()["code"] == "siwe_nonce_refused"
    assert "expired" in resp.json()["detail"]
    assert counts(plane.state.sessions)["users"] == 1  # the admin only


def test_expired_nonces_are_swept(plane: ControlPlane, api: TestClient, clock: FakeClock) -> None:
    for _ in range(3):
        get_nonce(api)
    clock.advance(301)
    get_nonce(api)
    with transaction(plane.state.sessions) as s:
        assert len(s.query(AuthNonce).all()) == 1


# -- two control planes, one database ------------------------------------------------------------
@pytest.fixture
def two_planes(
    tmp_path: Path, database_url: str, clock: FakeClock
) -> Iterator[tuple[TestClient, TestClient]]:
    planes = [
        build(
            Settings(
                data_dir=tmp_path / name,
                database_url=database_url,
                provider="none",
                public_url="http://127.0.0.1:8000",
                open_signup=True,
                scheduler_interval_seconds=60,
                control_interval_seconds=60,
            ),
            provider=None,
            clock=clock,
        )
        for name in ("a", "b")
    ]
    try:
        with TestClient(planes[0].app) as a, TestClient(planes[1].app) as b:
            yield a, b
    finally:
        for cp in planes:
            cp.state.engine.dispose()


def test_a_nonce_is_single_use_across_replicas(
    two_planes: tuple[TestClient, TestClient], clock: FakeClock
) -> None:
    a, b = two_planes
    body = signed(a, ALICE, clock.now)  # issued by replica a
    assert b.post("/v1/auth/siwe", json=body).status_code == 200  # used on replica b
    replay = a.post("/v1/auth/siwe", json=body)
    assert replay.status_code == 401 and replay.json()["code"] == "siwe_nonce_refused"


def test_concurrent_uses_of_one_nonce_sign_in_once(
    two_planes: tuple[TestClient, TestClient], clock: FakeClock
) -> None:
    a, b = two_planes
    for round_ in range(3):
        body = signed(a, [ALICE, BOB, CAROL][round_], clock.now)
        start = threading.Barrier(4)
        statuses: list[int] = []

        def post(client: TestClient, body: dict[str, str], start: threading.Barrier, out: list[int]) -> None:
            start.wait()
            out.append(client.post("/v1/auth/siwe", json=body).status_code)

        threads = [threading.Thread(target=post, args=(c, body, start, statuses)) for c in (a, b, a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(statuses) == [200, 401, 401, 401], statuses


# -- open sign-up ---------------------------------------------------------------------------------------
@pytest.fixture
def closed_plane(tmp_path: Path, clock: FakeClock) -> Iterator[ControlPlane]:
    cp = build(Settings(data_dir=tmp_path / "closed", provider="none"), provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


def test_closed_signup_refuses_new_addresses_but_takes_linked_ones(
    closed_plane: ControlPlane, clock: FakeClock
) -> None:
    assert closed_plane.state.settings.open_signup is None  # `serve`'s default: off
    with TestClient(closed_plane.app) as api:
        before = counts(closed_plane.state.sessions)
        resp = api.post("/v1/auth/siwe", json=signed(api, ALICE, clock.now))
        assert resp.status_code == 403 and "sign-up is closed" in resp.json()["detail"]
        assert counts(closed_plane.state.sessions) == before  # not even the nonce

        with transaction(closed_plane.state.sessions) as s:
            user, key = add_user(s, clock.now, name="alice")
        linked = api.post(
            "/v1/account/wallets",
            json=signed(api, ALICE, clock.now),
            headers={"Authorization": f"Bearer {key}"},
        )
        assert linked.status_code == 201, linked.text
        resp = api.post("/v1/auth/siwe", json=signed(api, ALICE, clock.now))
        assert resp.status_code == 200 and resp.json()["user"]["id"] == user.id


def test_up_opens_signup_and_serve_does_not(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    def first_sign_in(plane: Served) -> int:
        with httpx.Client(base_url=plane.url, timeout=30) as http:
            issued = http.get("/v1/auth/nonce").json()  # what the message must say, on this port
            text = siwe_message(
                ALICE, issued["nonce"], datetime.now(UTC), domain=issued["domain"], uri=issued["uri"]
            )
            return http.post(
                "/v1/auth/siwe", json={"message": text, "signature": sign(ALICE, text)}
            ).status_code

    with served(tmp_path / "serve", "serve") as plane:
        assert first_sign_in(plane) == 403
    with served(tmp_path / "serve-open", "serve", env={"SWARMSTATION_OPEN_SIGNUP": "true"}) as plane:
        assert first_sign_in(plane) == 200  # the variable wins over the command's default
    with served(tmp_path / "up", "up", env={"SWARMSTATION_POOL_MIN_INSTANCES": "0"}) as plane:
        assert first_sign_in(plane) == 200


# -- linking ------------------------------------------------------------------------------------------
def test_linking_wallets(plane: ControlPlane, api: TestClient, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        alice, alice_key = add_user(s, clock.now, name="alice")
        _, bob_key = add_user(s, clock.now, name="bob")
    as_alice = {"Authorization": f"Bearer {alice_key}"}
    as_bob = {"Authorization": f"Bearer {bob_key}"}

    first = api.post("/v1/account/wallets", json=signed(api, ALICE, clock.now), headers=as_alice)
    assert first.status_code == 201 and first.json()["address"] == ALICE.address.lower()
    again = api.post("/v1/account/wallets", json=signed(api, ALICE, clock.now), headers=as_alice)
    assert again.status_code == 200
    assert (
        api.post("/v1/account/wallets", json=signed(api, CAROL, clock.now), headers=as_alice).status_code
        == 201
    )
    listed = api.get("/v1/account/wallets", headers=as_alice).json()
    assert [w["address"] for w in listed] == [ALICE.address.lower(), CAROL.address.lower()]

    # Bob proves Alice's address? He cannot sign for it; and a valid signature of hers is hers.
    before = counts(plane.state.sessions)
    taken = api.post("/v1/account/wallets", json=signed(api, ALICE, clock.now), headers=as_bob)
    assert taken.status_code == 409 and "another account" in taken.json()["detail"]
    forged = signed(api, ALICE, clock.now)
    forged["signature"] = sign(BOB, forged["message"])
    assert api.post("/v1/account/wallets", json=forged, headers=as_bob).status_code == 401
    assert counts(plane.state.sessions) == before
    assert api.get("/v1/account/wallets", headers=as_bob).json() == []

    assert api.delete(f"/v1/account/wallets/{CAROL.address}", headers=as_bob).status_code == 404
    assert api.delete(f"/v1/account/wallets/{CAROL.address}", headers=as_alice).status_code == 204
    assert api.delete("/v1/account/wallets/not-an-address", headers=as_alice).status_code == 422
    assert (
        api.post("/v1/account/wallets", json=signed(api, CAROL, clock.now), headers=as_bob).status_code == 201
    )
    with transaction(plane.state.sessions) as s:
        carol_owner = user_for_address(s, CAROL.address.lower())
        assert carol_owner is not None and carol_owner.name == "bob"
        assert s.get(User, alice.id) is not None


def test_a_wallet_only_account_keeps_its_last_wallet(
    plane: ControlPlane, api: TestClient, clock: FakeClock
) -> None:
    sign_in(api, ALICE, clock.now)
    csrf = {"X-CSRF-Token": api.cookies["swarm_csrf"]}
    resp = api.delete(f"/v1/account/wallets/{ALICE.address}", headers=csrf)
    assert resp.status_code == 409 and "only way to sign in" in resp.json()["detail"]
    assert api.post("/v1/account/wallets", json=signed(api, BOB, clock.now), headers=csrf).status_code == 201
    assert api.delete(f"/v1/account/wallets/{ALICE.address}", headers=csrf).status_code == 204


def test_linking_needs_a_signed_in_user(plane: ControlPlane, api: TestClient, clock: FakeClock) -> None:
    resp = api.post("/v1/account/wallets", json=signed(api, ALICE, clock.now))
    assert resp.status_code == 401
    assert counts(plane.state.sessions)["wallets"] == 0


def test_a_signed_up_user_gets_the_welcome_credits(tmp_path: Path, clock: FakeClock) -> None:
    cp = build(
        Settings(data_dir=tmp_path / "w", provider="none", open_signup=True, welcome_credits=50),
        provider=None,
        clock=clock,
    )
    try:
        with TestClient(cp.app) as api:
            sign_in(api, ALICE, clock.now)
            account = api.get("/v1/account")
            assert account.status_code == 200, account.text
            assert account.json()["balance"] == 50
            sign_in(api, ALICE, clock.now)  # once: a second sign-in is no new user
            assert api.get("/v1/account").json()["balance"] == 50
    finally:
        cp.state.engine.dispose()


# -- contract wallets (EIP-1271) on a real local chain -----------------------------------------------
OWNED_WALLET_SOL = """
// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// The smallest EIP-1271 wallet: a signature is valid when it recovers to the owner.
contract OwnedWallet {
    address public owner;

    constructor(address owner_) {
        owner = owner_;
    }

    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        if (signature.length != 65) return 0xffffffff;
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := calldataload(signature.offset)
            s := calldataload(add(signature.offset, 32))
            v := byte(0, calldataload(add(signature.offset, 64)))
        }
        if (v < 27) v += 27;
        address signer = ecrecover(hash, v, r, s);
        return signer != address(0) && signer == owner ? bytes4(0x1626ba7e) : bytes4(0xffffffff);
    }
}
"""


@pytest.fixture(params=["deposit chain", "siwe rpc url"])
def chain_plane(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock, chain: Any
) -> Iterator[tuple[TestClient, ControlPlane, str]]:
    """A control plane that knows the local chain either as a deposit chain (its chain id and RPC
    come from SWARMSTATION_CHAINS) or through SWARMSTATION_SIWE_CHAIN_IDS and _SIWE_RPC_URL."""
    from eth_utils import to_checksum_address

    from tests.chain.harness import compile_solidity

    compiled = compile_solidity({"OwnedWallet.sol": OWNED_WALLET_SOL})["OwnedWallet"]
    wallet = chain.deploy(compiled, [ALICE.address], chain.accounts[0].key)
    if request.param == "deposit chain":
        deposit = {
            "chain_id": chain.chain_id,
            "name": "local",
            "rpc_url": chain.rpc_url,
            "treasury": chain.new_address(),
            "assets": [{"symbol": "ETH", "contract": None, "decimals": 18, "credits_per_unit": 1000}],
        }
        known: dict[str, Any] = {"chains": [deposit]}
    else:
        known = {"siwe_chain_ids": [1, chain.chain_id], "siwe_rpc_url": chain.rpc_url}
    cp = build(
        Settings(data_dir=tmp_path / "chain", provider="none", open_signup=True, **known),
        provider=None,
        clock=clock,
    )
    try:
        with TestClient(cp.app) as api:
            yield api, cp, str(to_checksum_address(wallet))
    finally:
        cp.state.engine.dispose()


def test_a_contract_wallet_signs_in_through_eip1271(
    chain_plane: tuple[TestClient, ControlPlane, str], clock: FakeClock, chain: Any
) -> None:
    api, cp, wallet = chain_plane
    before = counts(cp.state.sessions)
    # Bob signs for Alice's wallet: the contract says no, and nothing is written.
    text = siwe_message(BOB, get_nonce(api), clock.now, address=wallet, chain_id=chain.chain_id)
    refused = api.post("/v1/auth/siwe", json={"message": text, "signature": sign(BOB, text)})
    assert refused.status_code == 401 and refused.json()["code"] == "siwe_signature_invalid"
    # An address with no contract behind it, and a signature that is not its own: no.
    text = siwe_message(CAROL, get_nonce(api), clock.now, chain_id=chain.chain_id)
    assert api.post("/v1/auth/siwe", json={"message": text, "signature": sign(BOB, text)}).status_code == 401
    assert counts(cp.state.sessions) == before

    # The owner signs for the wallet: the contract vouches for it; the wallet's address signs in.
    text = siwe_message(ALICE, get_nonce(api), clock.now, address=wallet, chain_id=chain.chain_id)
    resp = api.post("/v1/auth/siwe", json={"message": text, "signature": sign(ALICE, text)})
    assert resp.status_code == 200, resp.text
    assert resp.json()["address"] == wallet.lower() and resp.json()["created"] is True
    # The only RPC is chain 1337's: for a message naming chain 1 it vouches for nothing.
    text = siwe_message(ALICE, get_nonce(api), clock.now, address=wallet, chain_id=1)
    assert (
        api.post("/v1/auth/siwe", json={"message": text, "signature": sign(ALICE, text)}).status_code == 401
    )


def test_an_unreachable_chain_is_a_503_that_writes_nothing(tmp_path: Path, clock: FakeClock) -> None:
    from tests.e2e.conftest import free_port

    cp = build(
        Settings(
            data_dir=tmp_path / "down",
            provider="none",
            open_signup=True,
            siwe_rpc_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        ),
        provider=None,
        clock=clock,
    )
    try:
        with TestClient(cp.app) as api:
            before = counts(cp.state.sessions)
            text = siwe_message(ALICE, get_nonce(api), clock.now, address=BOB.address)
            resp = api.post("/v1/auth/siwe", json={"message": text, "signature": sign(ALICE, text)})
            assert resp.status_code == 503 and resp.json()["code"] == "chain_unavailable", resp.text
            assert "Retry-After" in resp.headers
            assert counts(cp.state.sessions) == before
    finally:
        cp.state.engine.dispose()
