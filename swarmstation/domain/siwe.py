"""Sign-In with Ethereum (EIP-4361): what a signed message must say before anyone is trusted.

The checks here are pure: they read the message text, the signature and what the server expects
(`SiweExpectation`), and the time the caller passes in. Storing and consuming the nonce, asking a
chain about a contract wallet (EIP-1271) and creating users happen in `control/auth.py`.

A message is accepted only when

- it parses as EIP-4361 (the `siwe` package's ABNF grammar; the address in EIP-55 form),
- its domain is ours, its URI is on our origin, its scheme (if given) is ours,
- its chain id is one we accept,
- it was not issued in the future (beyond `CLOCK_SKEW`), has not expired, and is valid already
  (`Not Before`),
- and the signature is 0x-prefixed hex (65 bytes for an externally owned account, recovered with
  `eth_account` from the exact text that was signed).

Nothing trusts an address that was not signed for: the address a caller gets back is the one the
signature proves (or, for a contract wallet, the one the chain vouched for).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from eth_account import Account
from eth_account.messages import encode_defunct

from swarmstation.domain.errors import InvalidInput, Unauthorized

__all__ = [
    "CLOCK_SKEW",
    "EOA_SIGNATURE_BYTES",
    "MAX_MESSAGE_CHARS",
    "MAX_SIGNATURE_BYTES",
    "SiweClaim",
    "SiweExpectation",
    "SiweMalformed",
    "SiweNonceRefused",
    "SiweRefused",
    "SiweSignatureInvalid",
    "check_message",
    "normalise_address",
    "parse_signature",
    "recover_signer",
]

# Wallets and servers disagree on the time by a little; a message "issued" this far in the future
# is still taken (EIP-4361 leaves the tolerance to the relying party).
CLOCK_SKEW = timedelta(seconds=60)
# A SIWE message is a few hundred characters; the bound keeps the grammar's parser cheap.
MAX_MESSAGE_CHARS = 4096
# r, s and v: what personal_sign of an externally owned account produces.
EOA_SIGNATURE_BYTES = 65
# Contract wallets (EIP-1271) may sign with more (e.g. several owners' signatures).
MAX_SIGNATURE_BYTES = 2048

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_HEX = re.compile(r"0x(?:[0-9a-fA-F]{2})+")


class SiweMalformed(InvalidInput):
    """The message or signature cannot be read at all (422)."""

    code = "siwe_malformed"


class SiweRefused(Unauthorized):
    """A readable message that does not sign anyone in here (401): another domain or chain,
    expired, not yet valid."""

    code = "siwe_refused"


class SiweNonceRefused(SiweRefused):
    """The nonce was never issued here, has expired, or was used already."""

    code = "siwe_nonce_refused"


class SiweSignatureInvalid(SiweRefused):
    """The signature does not prove the message's address."""

    code = "siwe_signature_invalid"


@dataclass(frozen=True)
class SiweExpectation:
    """What this server accepts: `domain` is an RFC 3986 authority (host[:port]), `scheme` the
    scheme of our origin (http or https)."""

    domain: str
    scheme: str
    chain_ids: frozenset[int]


@dataclass(frozen=True)
class SiweClaim:
    """A message that passed every check but the signature and the nonce's freshness (those need
    the caller: recovery may need a chain, the nonce is in the database)."""

    address: str  # lowercase 0x + 40 hex
    chain_id: int
    nonce: str
    text: str  # exactly what was signed


def normalise_address(text: str) -> str:
    """An address as stored: lowercase `0x` + 40 hex digits."""
    if not _ADDRESS.fullmatch(text.strip()):
        raise InvalidInput.at("address", "must be 0x followed by 40 hex digits")
    return text.strip().lower()


def parse_signature(text: str) -> bytes:
    """The signature's bytes: 0x-prefixed hex, at most MAX_SIGNATURE_BYTES."""
    value = text.strip()
    if not _HEX.fullmatch(value):
        raise SiweMalformed.at("signature", "must be 0x-prefixed hex (an even number of digits)")
    raw = bytes.fromhex(value[2:])
    if len(raw) > MAX_SIGNATURE_BYTES:
        raise SiweMalformed.at("signature", f"is longer than {MAX_SIGNATURE_BYTES} bytes")
    return raw


def _parse(text: str) -> Any:
    # Imported here: the siwe package pulls in web3, which the rest of the domain does not need.
    from siwe import SiweMessage

    if len(text) > MAX_MESSAGE_CHARS:
        raise SiweMalformed.at("message", f"is longer than {MAX_MESSAGE_CHARS} characters")
    try:
        return SiweMessage.from_message(text)
    except Exception as exc:  # the grammar's and pydantic's errors: all "not an EIP-4361 message"
        # The parser's first line says where it stopped; a bare exception name says nothing to a
        # person, so then the message is left without one.
        reason = str(exc).strip().splitlines()
        detail = f" ({reason[0]})" if reason else ""
        raise SiweMalformed.at("message", f"is not an EIP-4361 message{detail}") from exc


def _timestamp(value: Any, field: str) -> datetime:
    from siwe.siwe import datetime_from_iso8601_string

    try:
        when: datetime = datetime_from_iso8601_string(str(value))
    except ValueError as exc:
        raise SiweMalformed.at("message", f"{field} is not an ISO 8601 time") from exc
    if when.tzinfo is None:
        raise SiweMalformed.at("message", f"{field} has no time zone")
    return when


def check_message(text: str, expected: SiweExpectation, now: datetime) -> SiweClaim:
    """Parse `text` and check everything but the signature and the nonce's state; raises
    SiweMalformed (unreadable) or SiweRefused (readable, but not for us or not now)."""
    message = _parse(text)
    if message.domain != expected.domain:
        raise SiweRefused(f"the message is for '{message.domain}', not for '{expected.domain}'")
    if message.scheme is not None and message.scheme != expected.scheme:
        raise SiweRefused(f"the message's scheme is '{message.scheme}', not '{expected.scheme}'")
    uri = urlsplit(str(message.uri))
    if uri.scheme not in ("http", "https") or uri.netloc != expected.domain:
        raise SiweRefused(f"the message's URI '{message.uri}' is not on {expected.domain}")
    chain_id = int(message.chain_id)
    if chain_id not in expected.chain_ids:
        accepted = ", ".join(str(c) for c in sorted(expected.chain_ids))
        raise SiweRefused(f"chain id {chain_id} is not accepted here (accepted: {accepted})")
    issued_at = _timestamp(message.issued_at, "Issued At")
    if issued_at > now + CLOCK_SKEW:
        raise SiweRefused("the message was issued in the future; check the device's clock")
    if message.expiration_time is not None and now >= _timestamp(message.expiration_time, "Expiration Time"):
        raise SiweRefused("the message has expired")
    if message.not_before is not None and now + CLOCK_SKEW < _timestamp(message.not_before, "Not Before"):
        raise SiweRefused("the message is not valid yet (Not Before)")
    return SiweClaim(
        address=str(message.address).lower(), chain_id=chain_id, nonce=str(message.nonce), text=text
    )


def recover_signer(text: str, signature: bytes) -> str | None:
    """The lowercase address whose key signed `text` with personal_sign (EIP-191), or None when
    the signature is not one an externally owned account makes."""
    if len(signature) != EOA_SIGNATURE_BYTES:
        return None
    try:
        signer = Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception:  # a bad v or an s out of range: not a valid ECDSA signature, so no signer
        return None
    return str(signer).lower()
