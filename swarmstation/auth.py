"""API keys and worker tokens: random secrets shown once, stored only as SHA-256 hashes.

The secrets carry 256 bits of randomness, so a fast hash is enough: there is nothing to guess.
"""

from __future__ import annotations

import hashlib
import secrets

API_KEY_PREFIX = "ss_"
WORKER_TOKEN_PREFIX = "sst_"


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    """The part of a key that may be shown again to tell keys apart."""
    return secret[:10]
