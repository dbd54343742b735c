"""Idempotency keys: a client that retries a creating request with the same `Idempotency-Key` gets
the result of its first request instead of a second one (a retry after a timeout, a 503 or a lost
reply must not submit a job twice).

A key belongs to a user and a scope (the operation) and is kept for `keep` (at least 24 hours);
the same key with a different request is refused. The claim is a row inserted in the request's own
transaction, so it exists exactly when the result does: a request that fails or is rolled back
leaves no key behind, and of two concurrent requests with one key the second waits for the first
and then answers its result.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from swarmstation.domain.errors import Conflict, InvalidInput
from swarmstation.store.models import IdempotencyKey


class KeyReused(InvalidInput):
    """The key was used for a different request."""

    code = "idempotency_key_reused"

    def __init__(self, key: str) -> None:
        super().__init__(
            "Idempotency-Key: already used for a different request; send a new key for a new job"
        )
        self.key = key


class KeyInFlight(Conflict):
    """The key's first request has not produced its result (it cannot be answered yet)."""

    code = "idempotency_key_in_flight"

    def __init__(self, key: str) -> None:
        super().__init__("Idempotency-Key: its first request is still running; retry")
        self.key = key


@dataclass(frozen=True)
class Replay:
    """The key answered before: this is the job (scope "jobs.create") or the run ("runs.create")
    its first request created."""

    job_id: str | None = None
    run_id: str | None = None


def request_hash(payload: Any) -> str:
    """A digest of the request as the API understood it (after validation and defaults), so that
    key order or whitespace in the JSON make no difference."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim(
    s: Session, *, user_id: str, scope: str, key: str, digest: str, now: datetime, keep: timedelta
) -> IdempotencyKey | Replay:
    """Claim `key` for this request (the returned row: set its result, `job_id` or `run_id`,
    before committing), or the earlier result that answers it. Raises KeyReused or KeyInFlight."""
    # Expired keys of this user go as a side effect: cheap (the primary key starts with user_id).
    s.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id, IdempotencyKey.created_at < now - keep
        )
    )
    existing = s.get(IdempotencyKey, (user_id, scope, key))
    if existing is None:
        row = IdempotencyKey(
            user_id=user_id,
            scope=scope,
            key=key,
            request_hash=digest,
            job_id=None,
            run_id=None,
            created_at=now,
        )
        try:
            # On PostgreSQL an INSERT of a key that a concurrent transaction holds waits for it,
            # then fails here if it committed; the savepoint keeps this transaction usable.
            with s.begin_nested():
                s.add(row)
            return row
        except IntegrityError:
            existing = s.get(IdempotencyKey, (user_id, scope, key), populate_existing=True)
            if existing is None:
                raise
    if existing.request_hash != digest:
        raise KeyReused(key)
    if existing.job_id is None and existing.run_id is None:
        raise KeyInFlight(key)
    return Replay(job_id=existing.job_id, run_id=existing.run_id)
