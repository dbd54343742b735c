"""Deposits on EVM chains: a user's report of a transaction, the leader's scanner of the
treasuries, and settlement (credit once, after the confirmations, to the sender's owner).

Both ways in end in the same two steps, in one transaction each time:
- `_record` turns a transaction as the chain shows it *now* into deposit rows (domain/deposits.py
  `classify`): new rows are PENDING, or REFUSED with the reason; a PENDING row whose transfer is
  no longer in the transaction (a reorganisation re-mined it elsewhere, or it reverted there)
  is DROPPED or REFUSED; a DROPPED one mined again is PENDING again.
- `_settle` looks at PENDING rows of a transaction read again from the chain: with the
  configured confirmations the row is credited through the ledger (its idempotency key is
  `deposit:<chain>:<tx>:<log index>`, so a race between a report and the scanner credits once),
  or waits UNATTRIBUTED until a user links the sending wallet.

Chain reads (JSON-RPC) happen before the transaction opens, never inside it.

The scanner keeps one cursor per chain: the last block that was scanned *and* is final. Each
pass reads the blocks after it up to the head (at most `deposit_scan_max_blocks`), so blocks
that are not final yet are read again next pass and a block replaced in a reorganisation is
seen. It finds ERC-20 `Transfer` logs to the treasury (of any token: one not accepted is
refused, visibly) and transactions whose own value goes to the treasury (top-level transfers
only: value moved by a contract's internal call is not seen).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from swarmstation.config import DepositChain, Settings, reveal
from swarmstation.control import ledger
from swarmstation.domain.deposits import (
    DEPOSIT,
    ChainConfig,
    ChainTransaction,
    DepositState,
    DepositTrigger,
    Finding,
    classify,
    confirmations,
    next_cursor,
    scan_range,
    summarise_pending,
)
from swarmstation.domain.errors import InvalidInput, NotFound, SwarmError
from swarmstation.integrations.evm import EvmClient, NotMined
from swarmstation.store import queries
from swarmstation.store.db import transaction
from swarmstation.store.models import ChainCursor, Deposit, Wallet

log = logging.getLogger(__name__)

VANISHED_REASON = (
    "the transaction left the chain in a reorganisation before its confirmations; "
    "it is credited if it is mined again"
)


def ledger_key(row: Deposit) -> str:
    return f"deposit:{row.chain_id}:{row.tx_hash}:{row.log_index}"


def _unattributed_reason(sender: str) -> str:
    return f"sent from {sender}, which no user has linked: link that wallet to be credited"


class Deposits:
    """The configured chains and their JSON-RPC clients; `report` for the API, `tick` for the
    leader loop (ControlLoops.extra)."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime],
        *,
        clients: Mapping[int, EvmClient] | None = None,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.max_blocks = settings.deposit_scan_max_blocks
        self.ticks = 0  # scans finished since start (the loop's first one runs at start-up)
        self.chains: dict[int, DepositChain] = {c.chain_id: c for c in settings.chains}
        self.configs: dict[int, ChainConfig] = {c.chain_id: c.config() for c in settings.chains}
        self.clients: dict[int, EvmClient] = dict(clients or {})
        for chain in settings.chains:
            if chain.chain_id not in self.clients:
                rpc_url = reveal(chain.rpc_url) or ""
                self.clients[chain.chain_id] = EvmClient(
                    rpc_url, label=f"chain {chain.chain_id} ({chain.name})"
                )

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def config(self, chain_id: int) -> ChainConfig:
        config = self.configs.get(chain_id)
        if config is None:
            known = ", ".join(str(c) for c in self.configs) or "none"
            raise InvalidInput.at(
                "chain_id", f"chain {chain_id} is not configured for deposits (configured: {known})"
            )
        return config

    # -- a user's report -------------------------------------------------------------------------
    def report(self, *, user_id: str, chain_id: int, tx_hash: str) -> tuple[list[Deposit], bool]:
        """Record the deposits of a reported transaction and settle what is confirmed already.
        Returns the transaction's deposit rows and whether any was new. NotFound when the chain
        does not know the transaction, NotMined (409) when it is not in a block yet."""
        config = self.config(chain_id)
        client = self.clients[chain_id]
        tx_hash = tx_hash.lower()
        tx = client.transaction(tx_hash)
        if tx is None:
            raise NotFound(f"no transaction {tx_hash} on {config.name} (chain {chain_id})")
        head = client.block_number()
        now = self.clock()
        with transaction(self.sessions) as s:
            created = _record(s, config, tx, now, reported_by=user_id)
            _settle(s, config, tx_hash, tx, head, now)
            rows = list(
                s.scalars(
                    select(Deposit)
                    .where(Deposit.chain_id == chain_id, Deposit.tx_hash == tx_hash)
                    .order_by(Deposit.log_index)
                )
            )
        return rows, created

    # -- the scanner -----------------------------------------------------------------------------
    def tick(self) -> None:
        """One scan of every configured chain; a chain that fails is logged and tried next tick."""
        for chain_id in self.configs:
            try:
                self.scan(chain_id)
            except SwarmError as exc:
                log.warning("deposit scan of chain %s failed: %s", chain_id, exc.detail)
        self.ticks += 1

    def scan(self, chain_id: int) -> None:
        config = self.configs[chain_id]
        client = self.clients[chain_id]
        head = client.block_number()
        now = self.clock()
        with transaction(self.sessions) as s:
            cursor = _cursor(s, self.chains[chain_id], head, now)
            pending = set(
                s.scalars(
                    select(Deposit.tx_hash).where(
                        Deposit.chain_id == chain_id, Deposit.state == DepositState.PENDING
                    )
                )
            )
        blocks = scan_range(cursor, head, self.max_blocks)
        found: set[str] = set()
        if blocks is not None:
            found = _incoming(client, config.treasury, *blocks)
        current: dict[str, ChainTransaction | None] = {}
        for tx_hash in sorted(found | pending):
            try:
                current[tx_hash] = client.transaction(tx_hash)
            except NotMined:
                current[tx_hash] = None  # back in the mempool after a reorganisation
        with transaction(self.sessions) as s:
            for tx_hash, tx in current.items():
                _settle(s, config, tx_hash, tx, head, now)
            credit_linked(s, now, chain_id=chain_id)
            if blocks is not None:
                row = s.get(ChainCursor, chain_id, with_for_update=True)
                if row is not None:
                    row.last_block = next_cursor(row.last_block, blocks[1], head, config.confirmations)
                    row.updated_at = now


def _incoming(client: EvmClient, treasury: str, first: int, last: int) -> set[str]:
    """Hashes of the transactions in blocks first..last that move tokens or value to `treasury`."""
    hashes = {str(log["transactionHash"]).lower() for log in client.transfer_logs_to(treasury, first, last)}
    for number in range(first, last + 1):
        block = client.block(number)
        for tx in (block or {}).get("transactions", []):
            if (
                isinstance(tx, dict)
                and str(tx.get("to") or "").lower() == treasury
                and int(tx["value"], 16) > 0
            ):
                hashes.add(str(tx["hash"]).lower())
    return hashes


def _cursor(s: Session, chain: DepositChain, head: int, now: datetime) -> int:
    row = s.get(ChainCursor, chain.chain_id)
    if row is None:
        # A new chain starts at its start_block, or at the head: deposits sent before the
        # control plane knew the chain are found when they are reported.
        start = chain.start_block if chain.start_block is not None else head
        row = ChainCursor(chain_id=chain.chain_id, last_block=max(start - 1, -1), updated_at=now)
        s.add(row)
        s.flush()
    return row.last_block


# -- recording and settling ----------------------------------------------------------------------
def _row(s: Session, chain_id: int, tx_hash: str, log_index: int) -> Deposit | None:
    return s.scalar(
        select(Deposit)
        .where(Deposit.chain_id == chain_id, Deposit.tx_hash == tx_hash, Deposit.log_index == log_index)
        .with_for_update()
    )


def _insert(
    s: Session,
    config: ChainConfig,
    tx: ChainTransaction,
    finding: Finding,
    now: datetime,
    reported_by: str | None,
) -> Deposit | None:
    """A new row for `finding`, or None when a concurrent writer inserted it first."""
    row = Deposit(
        id=str(uuid.uuid4()),
        chain_id=config.chain_id,
        tx_hash=tx.tx_hash,
        log_index=finding.log_index,
        state=DEPOSIT.initial,
        reason=summarise_pending(confirmations(tx.block_number, tx.block_number), config.confirmations),
        block_number=tx.block_number,
        block_hash=tx.block_hash,
        sender=finding.sender,
        symbol=finding.symbol,
        token=finding.token,
        amount=str(finding.amount),
        credits=finding.credits,
        reported_by=reported_by,
        created_at=now,
        updated_at=now,
    )
    if finding.refusal is not None:
        DEPOSIT.apply(row, DepositTrigger.REFUSE)
        row.reason = finding.refusal
    try:
        with s.begin_nested():
            s.add(row)
    except IntegrityError:
        return None
    return row


def _record(
    s: Session, config: ChainConfig, tx: ChainTransaction, now: datetime, *, reported_by: str | None
) -> bool:
    """Bring the rows of `tx` in line with what the chain shows now; True when a row was new."""
    created = False
    findings = classify(config, tx)
    for finding in findings:
        row = _row(s, config.chain_id, tx.tx_hash, finding.log_index)
        if row is None:
            row = _insert(s, config, tx, finding, now, reported_by)
            if row is not None:
                created = True
                continue
            row = _row(s, config.chain_id, tx.tx_hash, finding.log_index)
            if row is None:  # pragma: no cover - inserted and gone again: nothing to do
                continue
        if reported_by is not None and row.reported_by is None:
            row.reported_by = reported_by
        if row.state == DepositState.DROPPED and finding.refusal is None:
            DEPOSIT.apply(row, DepositTrigger.REAPPEARED)
        if row.state == DepositState.PENDING:
            # Possibly another block than before (a reorganisation re-mined it).
            row.block_number, row.block_hash = tx.block_number, tx.block_hash
            row.sender, row.symbol, row.token = finding.sender, finding.symbol, finding.token
            row.amount, row.credits = str(finding.amount), finding.credits
            if finding.refusal is not None:
                DEPOSIT.apply(row, DepositTrigger.REFUSE)
                row.reason = finding.refusal
        row.updated_at = now
    # A pending transfer the transaction no longer makes (re-mined elsewhere with other log
    # indexes, or differently): it cannot be credited under this key.
    keys = {f.log_index for f in findings}
    for row in _pending_rows(s, config.chain_id, tx.tx_hash):
        if row.log_index not in keys:
            DEPOSIT.apply(row, DepositTrigger.VANISHED)
            row.reason = VANISHED_REASON
            row.updated_at = now
    return created


def _pending_rows(s: Session, chain_id: int, tx_hash: str) -> list[Deposit]:
    return list(
        s.scalars(
            select(Deposit)
            .where(
                Deposit.chain_id == chain_id,
                Deposit.tx_hash == tx_hash,
                Deposit.state == DepositState.PENDING,
            )
            .with_for_update()
        )
    )


def _settle(
    s: Session, config: ChainConfig, tx_hash: str, tx: ChainTransaction | None, head: int, now: datetime
) -> None:
    """Record `tx` as just read (`tx` None: no longer mined), then settle its PENDING rows."""
    if tx is not None:
        _record(s, config, tx, now, reported_by=None)
    for row in _pending_rows(s, config.chain_id, tx_hash):
        if tx is None or tx.block_hash != row.block_hash:
            DEPOSIT.apply(row, DepositTrigger.VANISHED)
            row.reason, row.updated_at = VANISHED_REASON, now
            continue
        have = confirmations(row.block_number, head)
        if have < config.confirmations:
            row.reason, row.updated_at = summarise_pending(have, config.confirmations), now
            continue
        owner = queries.user_for_address(s, row.sender)
        if owner is None:
            DEPOSIT.apply(row, DepositTrigger.CONFIRMED_UNLINKED)
            row.reason, row.updated_at = _unattributed_reason(row.sender), now
            continue
        _credit(s, row, owner.id, DepositTrigger.CONFIRMED_OWNED, now)


def _credit(s: Session, row: Deposit, user_id: str, trigger: DepositTrigger, now: datetime) -> None:
    DEPOSIT.apply(row, trigger)
    ledger.credit_deposit(
        s, user_id=user_id, amount=row.credits, deposit_id=row.id, key=ledger_key(row), now=now
    )
    row.user_id, row.credited_at, row.updated_at = user_id, now, now
    row.reason = f"credited {row.credits} credits"


def credit_linked(
    s: Session, now: datetime, *, chain_id: int | None = None, address: str | None = None
) -> int:
    """Credit the UNATTRIBUTED deposits whose sending wallet a user has linked since (all, one
    chain's, or one address's: call it when a wallet is linked). Returns how many."""
    query = (
        select(Deposit, Wallet.user_id)
        .join(Wallet, Wallet.address == Deposit.sender)
        .where(Deposit.state == DepositState.UNATTRIBUTED)
        .with_for_update(of=Deposit)
    )
    if chain_id is not None:
        query = query.where(Deposit.chain_id == chain_id)
    if address is not None:
        query = query.where(Deposit.sender == address.lower())
    credited = 0
    for row, user_id in s.execute(query).all():
        _credit(s, row, user_id, DepositTrigger.LINKED, now)
        credited += 1
    return credited


# -- reads -----------------------------------------------------------------------------------------
def deposits_of_user(s: Session, user_id: str, *, limit: int) -> list[Deposit]:
    """Deposits credited to the user, reported by them, or sent from one of their wallets."""
    own_wallets = select(Wallet.address).where(Wallet.user_id == user_id)
    return list(
        s.scalars(
            select(Deposit)
            .where(
                or_(
                    Deposit.user_id == user_id,
                    Deposit.reported_by == user_id,
                    Deposit.sender.in_(own_wallets),
                )
            )
            .order_by(Deposit.created_at.desc(), Deposit.id)
            .limit(limit)
        )
    )


def deposits_in_state(s: Session, states: Iterable[DepositState] | None, *, limit: int) -> list[Deposit]:
    query = select(Deposit).order_by(Deposit.created_at.desc(), Deposit.id).limit(limit)
    if states is not None:
        query = query.where(Deposit.state.in_(list(states)))
    return list(s.scalars(query))
