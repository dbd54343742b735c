"""Sign-In with Ethereum for tests: real keys (eth_account), messages built with the siwe package,
signatures made as a wallet's personal_sign makes them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from siwe import SiweMessage
from siwe.siwe import ISO8601Datetime
from sqlalchemy import func, select

from swarmstation.store.db import transaction
from swarmstation.store.models import AuthNonce, BrowserSession, User, Wallet

# What a control plane with the default settings expects (base_url http://127.0.0.1:8000).
DOMAIN = "127.0.0.1:8000"
URI = "http://127.0.0.1:8000"

# Fixed test keys, so that failures are reproducible.
ALICE: LocalAccount = Account.from_key(bytes([0x11]) * 32)
BOB: LocalAccount = Account.from_key(bytes([0x22]) * 32)
CAROL: LocalAccount = Account.from_key(bytes([0x33]) * 32)


def iso(when: datetime) -> ISO8601Datetime:
    return ISO8601Datetime.from_datetime(when)


def siwe_message(
    account: LocalAccount,
    nonce: str,
    now: datetime,
    *,
    domain: str = DOMAIN,
    uri: str = URI,
    chain_id: int = 1,
    issued_at: datetime | None = None,
    expiration: datetime | None = None,
    not_before: datetime | None = None,
    address: str | None = None,
) -> str:
    fields: dict[str, Any] = {
        "domain": domain,
        "address": address or account.address,
        "uri": uri,
        "version": "1",
        "chain_id": chain_id,
        "issued_at": iso(issued_at or now),
        "nonce": nonce,
        "statement": "Sign in to swarmstation",
    }
    if expiration is not None:
        fields["expiration_time"] = iso(expiration)
    if not_before is not None:
        fields["not_before"] = iso(not_before)
    return SiweMessage(**fields).prepare_message()


def sign(account: LocalAccount, text: str) -> str:
    """personal_sign (EIP-191) of `text`, as 0x-prefixed hex."""
    return "0x" + bytes(account.sign_message(encode_defunct(text=text)).signature).hex()


def get_nonce(api: Any) -> str:
    resp = api.get("/v1/auth/nonce")
    assert resp.status_code == 200, resp.text
    nonce: str = resp.json()["nonce"]
    return nonce


def signed(api: Any, account: LocalAccount, now: datetime, **fields: Any) -> dict[str, str]:
    """A fresh nonce, a message for it and its signature: the body of POST /v1/auth/siwe."""
    text = siwe_message(account, get_nonce(api), now, **fields)
    return {"message": text, "signature": sign(account, text)}


def sign_in(api: Any, account: LocalAccount, now: datetime) -> Any:
    resp = api.post("/v1/auth/siwe", json=signed(api, account, now))
    assert resp.status_code == 200, resp.text
    return resp


def counts(sessions: Any) -> dict[str, int]:
    """Rows that a sign-in writes: users, wallets, sessions, used nonces."""
    with transaction(sessions) as s:
        return {
            "users": s.scalar(select(func.count()).select_from(User)) or 0,
            "wallets": s.scalar(select(func.count()).select_from(Wallet)) or 0,
            "sessions": s.scalar(select(func.count()).select_from(BrowserSession)) or 0,
            "used_nonces": s.scalar(
                select(func.count()).select_from(AuthNonce).where(AuthNonce.used_at.is_not(None))
            )
            or 0,
        }


def later(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)
