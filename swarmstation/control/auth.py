"""Sign-in use cases: SIWE nonces and sign-in, browser sessions, linked wallets, self-service keys.

A SIWE sign-in (or a wallet link) runs in this order, so that a refusal writes nothing and no
database lock is held while a chain is asked about a contract wallet:

1. `domain.siwe.check_message`: the message is for us, for an accepted chain, and valid now;
2. the signature proves the message's address: recovery for an externally owned account, or
   EIP-1271 `isValidSignature` through the chain's JSON-RPC when one is configured;
3. the nonce is consumed in one conditional UPDATE (issued here, unused, unexpired), so two
   requests carrying the same nonce, on any replicas, cannot both succeed;
4. the address's user is found, or created when open sign-up is on.

Each step raises; the caller's transaction then rolls back, nonce included.
"""

from __future__ import annotations

import secrets
import string
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from swarmstation.auth import API_KEY_PREFIX, display_prefix, hash_secret, new_secret
from swarmstation.config import Settings, reveal
from swarmstation.control import ledger
from swarmstation.domain.errors import Conflict, Forbidden, NotFound, Unavailable
from swarmstation.domain.siwe import (
    EOA_SIGNATURE_BYTES,
    SiweClaim,
    SiweExpectation,
    SiweMalformed,
    SiweNonceRefused,
    SiweSignatureInvalid,
    check_message,
    normalise_address,
    parse_signature,
    recover_signer,
)
from swarmstation.store.models import ApiKey, AuthNonce, BrowserSession, User, Wallet
from swarmstation.store.queries import user_for_address

# EIP-4361 asks for at least 8 alphanumeric characters; 20 of 62 symbols is about 119 bits.
NONCE_ALPHABET = string.ascii_letters + string.digits
NONCE_LENGTH = 20
EIP1271_MAGIC_VALUE = bytes.fromhex("1626ba7e")
EIP1271_ABI = [
    {
        "inputs": [
            {"internalType": "bytes32", "name": "hash", "type": "bytes32"},
            {"internalType": "bytes", "name": "signature", "type": "bytes"},
        ],
        "name": "isValidSignature",
        "outputs": [{"internalType": "bytes4", "name": "", "type": "bytes4"}],
        "stateMutability": "view",
        "type": "function",
    }
]
RPC_TIMEOUT_SECONDS = 10.0
# Enough for every program and device a person has; a bound keeps a leaked session from minting
# keys without end.
MAX_LIVE_KEYS_PER_USER = 100


class ChainUnavailable(Unavailable):
    """The chain's JSON-RPC did not answer an EIP-1271 check; the same sign-in may work later."""

    code = "chain_unavailable"
    what = "chain's JSON-RPC"


# (rpc_url, chain_id, address, eip191_digest, signature) -> whether the contract accepts it
ContractCheck = Callable[[str, int, str, bytes, bytes], bool]


@dataclass(frozen=True)
class SiweConfig:
    expectation: SiweExpectation
    rpc_urls: Mapping[int, str]  # chain id -> JSON-RPC URL, for EIP-1271
    nonce_ttl: timedelta
    session_ttl: timedelta
    open_signup: bool
    welcome_credits: int = 0  # granted to a user that a sign-in creates


def siwe_config(settings: Settings) -> SiweConfig:
    """What the settings say SIWE accepts: the domain (default: the host[:port] of public_url,
    else of host and port), the chains, and where to ask about contract wallets."""
    origin = urlsplit(settings.base_url)
    # The deposit chains are accepted too (a wallet that deposits must be able to prove itself),
    # each with its own RPC; SWARMSTATION_SIWE_RPC_URL serves the others (eip1271_accepts checks
    # that it is their chain's).
    chain_ids = set(settings.siwe_chain_ids) | {chain.chain_id for chain in settings.chains}
    rpc_urls: dict[int, str] = {}
    if settings.siwe_rpc_url:
        rpc_urls = {chain_id: settings.siwe_rpc_url for chain_id in chain_ids}
    for chain in settings.chains:
        rpc_urls[chain.chain_id] = reveal(chain.rpc_url) or ""
    return SiweConfig(
        expectation=SiweExpectation(
            domain=settings.siwe_domain or origin.netloc,
            scheme=origin.scheme or "http",
            chain_ids=frozenset(chain_ids),
        ),
        rpc_urls=rpc_urls,
        nonce_ttl=timedelta(seconds=settings.siwe_nonce_ttl_seconds),
        session_ttl=timedelta(hours=settings.session_hours),
        open_signup=bool(settings.open_signup),
        welcome_credits=settings.welcome_credits,
    )


# -- nonces ---------------------------------------------------------------------------------------
def issue_nonce(s: Session, config: SiweConfig, now: datetime) -> AuthNonce:
    # Expired nonces (used or not) are of no use to anyone: each issue sweeps them, so the table
    # stays as small as the number of sign-ins in flight.
    s.execute(delete(AuthNonce).where(AuthNonce.expires_at <= now))
    nonce = "".join(secrets.choice(NONCE_ALPHABET) for _ in range(NONCE_LENGTH))
    row = AuthNonce(nonce=nonce, created_at=now, expires_at=now + config.nonce_ttl, used_at=None)
    s.add(row)
    s.flush()
    return row


def consume_nonce(s: Session, nonce: str, now: datetime) -> None:
    """Mark `nonce` used, atomically: of two transactions using the same nonce, the second waits
    for the first (a row lock on PostgreSQL, the write lock on SQLite) and then matches nothing."""
    used = s.execute(
        update(AuthNonce)
        .where(AuthNonce.nonce == nonce, AuthNonce.used_at.is_(None), AuthNonce.expires_at > now)
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if used.rowcount == 1:  # type: ignore[attr-defined]
        return
    row = s.get(AuthNonce, nonce)
    if row is None:
        raise SiweNonceRefused("unknown or expired nonce: get a fresh one from GET /v1/auth/nonce")
    if row.used_at is not None:
        raise SiweNonceRefused("this nonce was used already: get a fresh one from GET /v1/auth/nonce")
    raise SiweNonceRefused("the nonce has expired: get a fresh one from GET /v1/auth/nonce")


# -- signatures -----------------------------------------------------------------------------------
def eip1271_accepts(rpc_url: str, chain_id: int, address: str, digest: bytes, signature: bytes) -> bool:
    """Ask the contract at `address` on chain `chain_id` (EIP-1271) whether `signature` signs
    `digest`. An RPC of another chain answers no: the same address may be another contract (or
    nobody's) there, so a wallet is trusted only on the chain its message names."""
    import requests
    from web3 import HTTPProvider, Web3
    from web3.exceptions import BadFunctionCallOutput, ContractLogicError, Web3Exception

    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": RPC_TIMEOUT_SECONDS}))
    contract = w3.eth.contract(address=Web3.to_checksum_address(address), abi=EIP1271_ABI)
    try:
        if w3.eth.chain_id != chain_id:
            return False
        answer = contract.functions.isValidSignature(digest, signature).call()
    except (BadFunctionCallOutput, ContractLogicError):
        return False  # no contract there, or one that refuses: not a valid signature
    except (Web3Exception, requests.RequestException, OSError) as exc:
        raise ChainUnavailable(f"EIP-1271 check failed: {type(exc).__name__}") from exc
    return bytes(answer) == EIP1271_MAGIC_VALUE


def verify_signature(
    config: SiweConfig, claim: SiweClaim, signature: bytes, contract_check: ContractCheck = eip1271_accepts
) -> None:
    """The signature proves `claim.address`, or SiweSignatureInvalid (SiweMalformed when it could
    not be a signature here at all)."""
    if recover_signer(claim.text, signature) == claim.address:
        return
    rpc_url = config.rpc_urls.get(claim.chain_id)
    if rpc_url is None:
        if len(signature) != EOA_SIGNATURE_BYTES:
            raise SiweMalformed.at(
                "signature",
                f"must be {EOA_SIGNATURE_BYTES} bytes (no JSON-RPC is configured for chain "
                f"{claim.chain_id} to check a contract wallet)",
            )
        raise SiweSignatureInvalid("the signature does not match the message's address")
    from eth_account.messages import defunct_hash_message

    digest = bytes(defunct_hash_message(text=claim.text))
    if not contract_check(rpc_url, claim.chain_id, claim.address, digest, signature):
        raise SiweSignatureInvalid(
            "the signature does not match the message's address (nor its contract wallet)"
        )


def verified_claim(
    config: SiweConfig,
    message: str,
    signature: str,
    now: datetime,
    contract_check: ContractCheck = eip1271_accepts,
) -> SiweClaim:
    """Steps 1 and 2 of the module's docstring: no database access."""
    claim = check_message(message, config.expectation, now)
    verify_signature(config, claim, parse_signature(signature), contract_check)
    return claim


# -- sign-in ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SignIn:
    user: User
    address: str
    created: bool  # the user was created by this sign-in


def _name_for(s: Session, address: str) -> str:
    name = address
    while s.scalar(select(User.id).where(User.name == name)) is not None:
        name = f"{address}-{secrets.token_hex(2)}"
    return name


def sign_in(s: Session, config: SiweConfig, claim: SiweClaim, now: datetime) -> SignIn:
    """Steps 3 and 4: the address's user, after the nonce is consumed. A new address makes a new
    user (role "user": no address ever carries the admin role) only when sign-up is open."""
    consume_nonce(s, claim.nonce, now)
    user = user_for_address(s, claim.address)
    if user is not None:
        return SignIn(user, claim.address, created=False)
    if not config.open_signup:
        raise Forbidden(
            "no account has this address and sign-up is closed here: sign in with an API key and "
            "link the wallet (POST /v1/account/wallets), or ask an admin"
        )
    user = User(id=str(uuid.uuid4()), name=_name_for(s, claim.address), role="user", created_at=now)
    s.add(user)
    s.flush()
    s.add(Wallet(address=claim.address, user_id=user.id, linked_at=now))
    s.flush()
    ledger.welcome(s, user_id=user.id, amount=config.welcome_credits, now=now)
    return SignIn(user, claim.address, created=True)


# -- browser sessions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewSession:
    row: BrowserSession
    token: str  # goes in the httpOnly cookie
    csrf_token: str  # goes in the readable cookie; echoed in X-CSRF-Token


def start_session(
    s: Session, user: User, *, address: str | None, now: datetime, ttl: timedelta
) -> NewSession:
    token = secrets.token_urlsafe(32)
    csrf_token = secrets.token_urlsafe(32)
    row = BrowserSession(
        id=str(uuid.uuid4()),
        token_hash=hash_secret(token),
        csrf_hash=hash_secret(csrf_token),
        user_id=user.id,
        address=address,
        created_at=now,
        expires_at=now + ttl,
        revoked_at=None,
    )
    s.add(row)
    s.flush()
    return NewSession(row, token, csrf_token)


def session_user(s: Session, token_hash: str, now: datetime) -> tuple[User, BrowserSession] | None:
    """The live session with this token hash and its user (None: unknown, revoked or expired)."""
    row = s.execute(
        select(User, BrowserSession)
        .join(BrowserSession, BrowserSession.user_id == User.id)
        .where(BrowserSession.token_hash == token_hash)
    ).first()
    if row is None or row[1].revoked_at is not None or row[1].expires_at <= now:
        return None
    return row[0], row[1]


def end_session(s: Session, session_id: str, now: datetime) -> None:
    s.execute(
        update(BrowserSession)
        .where(BrowserSession.id == session_id, BrowserSession.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )


# -- wallets ----------------------------------------------------------------------------------------
def link_wallet(s: Session, user: User, claim: SiweClaim, now: datetime) -> tuple[Wallet, bool]:
    """Link the proven address to `user` (True: newly linked). An address belongs to one user: one
    linked to someone else is a Conflict, which rolls the nonce back with everything else."""
    consume_nonce(s, claim.nonce, now)
    existing = s.get(Wallet, claim.address)
    if existing is not None:
        if existing.user_id == user.id:
            return existing, False
        raise Conflict(f"the address {claim.address} is linked to another account")
    wallet = Wallet(address=claim.address, user_id=user.id, linked_at=now)
    s.add(wallet)
    s.flush()
    return wallet, True


def wallets_of(s: Session, user: User) -> list[Wallet]:
    return list(s.scalars(select(Wallet).where(Wallet.user_id == user.id).order_by(Wallet.linked_at)))


def _live_keys(s: Session, user: User) -> int:
    return (
        s.scalar(
            select(func.count())
            .select_from(ApiKey)
            .where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
        )
        or 0
    )


def unlink_wallet(s: Session, user: User, address: str) -> None:
    """Unlink one of the user's wallets; the last way to sign in (no other wallet, no live API
    key) is kept, so that nobody locks themselves out by accident."""
    address = normalise_address(address)
    wallet = s.get(Wallet, address)
    if wallet is None or wallet.user_id != user.id:
        raise NotFound(f"the wallet {address} is not linked to this account")
    others = sum(1 for w in wallets_of(s, user) if w.address != address)
    if others == 0 and _live_keys(s, user) == 0:
        raise Conflict(
            "this wallet is the account's only way to sign in: create an API key or link another wallet first"
        )
    s.delete(wallet)


# -- API keys ---------------------------------------------------------------------------------------
def create_api_key(s: Session, user: User, name: str, now: datetime) -> tuple[ApiKey, str]:
    """A new key for `user`; the secret is returned once and stored only as its hash."""
    if _live_keys(s, user) >= MAX_LIVE_KEYS_PER_USER:
        raise Conflict(f"this account has {MAX_LIVE_KEYS_PER_USER} live API keys; revoke one first")
    secret = new_secret(API_KEY_PREFIX)
    key = ApiKey(
        id=str(uuid.uuid4()),
        user_id=user.id,
        name=name,
        prefix=display_prefix(secret),
        key_hash=hash_secret(secret),
        created_at=now,
        revoked_at=None,
    )
    s.add(key)
    s.flush()
    return key, secret


def api_keys_of(s: Session, user: User) -> list[ApiKey]:
    return list(s.scalars(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at)))


def revoke_api_key(s: Session, user: User, key_id: str, now: datetime) -> ApiKey:
    """Revoke one of the user's keys (again: a no-op). Another user's key answers as a missing one."""
    key = s.get(ApiKey, key_id)
    if key is None or key.user_id != user.id:
        raise NotFound(f"API key {key_id} not found")
    if key.revoked_at is None:
        key.revoked_at = now
        s.flush()
    return key
