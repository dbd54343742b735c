"""Deposits over HTTP: the chains and assets accepted, reporting a transfer, a user's deposits,
and the admins' view (e.g. the unattributed ones). The work is in control/deposits.py."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from swarmstation.api.deps import DB, AdminUser, CurrentUser
from swarmstation.api.schemas import INT64_MAX, Strict
from swarmstation.control import deposits as deposit_ops
from swarmstation.control.deposits import Deposits
from swarmstation.domain.deposits import DepositState
from swarmstation.store.models import Deposit

router = APIRouter(prefix="/v1", tags=["deposits"])


def _service(request: Request) -> Deposits:
    service: Deposits = request.app.state.deposits
    return service


class AssetOut(BaseModel):
    symbol: str
    contract: str | None = Field(description="The ERC-20 contract; null for the native currency")
    decimals: int
    credits_per_unit: int = Field(
        description="Credits per whole unit (10**decimals base units), rounded down"
    )


class ChainOut(BaseModel):
    chain_id: int
    name: str
    treasury: str = Field(description="Send deposits here, from a wallet linked to your account")
    confirmations: int = Field(description="Blocks (its own included) before a deposit is credited")
    assets: list[AssetOut]


class DepositOptions(BaseModel):
    chains: list[ChainOut]


class ReportIn(Strict):
    chain_id: int = Field(ge=1, le=INT64_MAX, strict=True)
    tx_hash: str = Field(
        pattern=r"^0x[0-9a-fA-F]{64}$", description="The transaction hash: 0x and 32 bytes of hex"
    )


class DepositOut(BaseModel):
    id: str
    chain_id: int
    tx_hash: str
    log_index: int = Field(description="The Transfer log's index; -1 for the transaction's own value")
    state: DepositState = Field(description="pending → credited, or unattributed; refused; dropped")
    reason: str = Field(description="Why it is in its state, for people")
    sender: str
    symbol: str | None
    token: str | None = Field(description="The ERC-20 contract; null for the native currency")
    amount: str = Field(description="In the asset's base units, as decimal text")
    credits: int
    block_number: int
    user_id: str | None = Field(description="Whom it was credited to")
    created_at: datetime
    updated_at: datetime
    credited_at: datetime | None


class DepositList(BaseModel):
    deposits: list[DepositOut]


def _out(rows: list[Deposit]) -> DepositList:
    return DepositList(deposits=[DepositOut.model_validate(r, from_attributes=True) for r in rows])


@router.get("/deposits/options", response_model=DepositOptions)
def deposit_options(request: Request) -> DepositOptions:
    """The chains deposits are accepted on (no RPC URLs: they may carry keys)."""
    service = _service(request)
    return DepositOptions(
        chains=[
            ChainOut(
                chain_id=c.chain_id,
                name=c.name,
                treasury=c.treasury,
                confirmations=c.confirmations,
                assets=[
                    AssetOut(
                        symbol=a.symbol,
                        contract=a.contract,
                        decimals=a.decimals,
                        credits_per_unit=a.credits_per_unit,
                    )
                    for a in c.assets
                ],
            )
            for c in service.configs.values()
        ]
    )


@router.post("/account/deposits", response_model=DepositList, status_code=201)
def report_deposit(body: ReportIn, user: CurrentUser, request: Request, response: Response) -> DepositList:
    """Report a transfer to a treasury: its deposits are recorded (and credited once confirmed,
    to the owner of the sending wallet). 201 when new, 200 when it was known already."""
    rows, created = _service(request).report(user_id=user.id, chain_id=body.chain_id, tx_hash=body.tx_hash)
    if not created:
        response.status_code = 200
    return _out(rows)


@router.get("/account/deposits", response_model=DepositList)
def my_deposits(s: DB, user: CurrentUser, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> DepositList:
    return _out(deposit_ops.deposits_of_user(s, user.id, limit=limit))


@router.get("/admin/deposits", response_model=DepositList, tags=["admin"])
def all_deposits(
    s: DB,
    _: AdminUser,
    state: Annotated[DepositState | None, Query(description="Only deposits in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> DepositList:
    return _out(deposit_ops.deposits_in_state(s, [state] if state is not None else None, limit=limit))
