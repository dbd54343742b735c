"""A user's wallets under /v1/account/wallets: link one (proven by a SIWE signature), list, unlink.

Linking takes the same signed message as sign-in (api/auth.py), checked the same way, its nonce
consumed; an address belongs to one user, so an address linked to someone else is a 409.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from swarmstation.api.auth import SiweIn, verified
from swarmstation.api.deps import DB, CurrentUser, State
from swarmstation.control import auth as auth_ops
from swarmstation.store.models import Wallet

router = APIRouter(prefix="/v1/account/wallets", tags=["account"])


class WalletOut(BaseModel):
    address: str  # lowercase 0x + 40 hex
    linked_at: datetime


def wallet_out(wallet: Wallet) -> WalletOut:
    return WalletOut(address=wallet.address, linked_at=wallet.linked_at)


@router.get("", response_model=list[WalletOut])
def list_wallets(user: CurrentUser, s: DB) -> list[WalletOut]:
    return [wallet_out(w) for w in auth_ops.wallets_of(s, user)]


@router.post("", response_model=WalletOut, status_code=201)
def link_wallet(
    body: SiweIn, request: Request, response: Response, user: CurrentUser, s: DB, state: State
) -> WalletOut:
    """Link the address that signed `message` (201; 200 when it was linked to you already)."""
    claim = verified(request, state, body)
    wallet, created = auth_ops.link_wallet(s, user, claim, state.clock())
    if not created:
        response.status_code = 200
    return wallet_out(wallet)


@router.delete("/{address}", status_code=204)
def unlink_wallet(address: str, user: CurrentUser, s: DB) -> None:
    auth_ops.unlink_wallet(s, user, address)
