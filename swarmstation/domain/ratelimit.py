"""How many failed authentications a client may make: a token bucket per client.

Pure: the caller passes the time (seconds on any monotonic clock) and keeps the limiter behind
its own lock. Only failures spend tokens, so a client with a valid key is never slowed, and the
happy path of authentication does not touch the limiter at all.

The rule
--------
Each client starts with ``per_minute`` tokens (the burst) and earns them back at
``per_minute / 60`` per second, up to the burst. A failure spends one token. A client with less
than one token is *blocked*: its credentials are not even checked until a token is back, and
:meth:`FailureLimiter.retry_after` says in how many seconds that will be. ``per_minute == 0``
turns the limit off.

Memory is bounded: at most ``max_clients`` buckets are kept; a full bucket carries no information
and is dropped first, then the clients that failed longest ago.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Bucket", "FailureLimiter", "refill"]


@dataclass(frozen=True)
class Bucket:
    tokens: float
    updated: float  # when `tokens` was last brought up to date


def refill(bucket: Bucket, *, per_minute: int, now: float) -> Bucket:
    """The bucket at `now`: tokens earned since `updated`, capped at the burst. A clock that
    went backwards earns nothing."""
    earned = max(0.0, now - bucket.updated) * per_minute / 60.0
    return Bucket(min(float(per_minute), bucket.tokens + earned), max(now, bucket.updated))


class FailureLimiter:
    """Token buckets of failed authentications, keyed by client (e.g. its address)."""

    def __init__(self, per_minute: int, *, max_clients: int = 10_000) -> None:
        if per_minute < 0 or max_clients < 1:
            raise ValueError("per_minute must be >= 0 and max_clients >= 1")
        self.per_minute = per_minute
        self.max_clients = max_clients
        # Insertion order is the order of the clients' latest failures, oldest first.
        self._buckets: dict[str, Bucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def _wait(self, bucket: Bucket) -> float | None:
        if bucket.tokens >= 1.0:
            return None
        return (1.0 - bucket.tokens) * 60.0 / self.per_minute

    def retry_after(self, client: str, now: float) -> float | None:
        """Seconds until `client` may try again, or None when it may try now."""
        if self.per_minute == 0:
            return None
        bucket = self._buckets.get(client)
        if bucket is None:
            return None
        return self._wait(refill(bucket, per_minute=self.per_minute, now=now))

    def record_failure(self, client: str, now: float) -> float | None:
        """Spend one token of `client`'s; the answer is :meth:`retry_after` afterwards (not None:
        this failure used up its last token)."""
        if self.per_minute == 0:
            return None
        previous = self._buckets.pop(client, None)
        start = Bucket(float(self.per_minute), now) if previous is None else previous
        current = refill(start, per_minute=self.per_minute, now=now)
        spent = Bucket(max(0.0, current.tokens - 1.0), current.updated)
        self._buckets[client] = spent
        if len(self._buckets) > self.max_clients:
            self._forget(now)
        return self._wait(spent)

    def _forget(self, now: float) -> None:
        full = [
            c
            for c, b in self._buckets.items()
            if refill(b, per_minute=self.per_minute, now=now).tokens >= self.per_minute
        ]
        for client in full:
            del self._buckets[client]
        # Down to nine tenths, so that a crowd of failing clients costs one scan per many
        # failures rather than one per failure.
        keep = max(1, self.max_clients * 9 // 10)
        while len(self._buckets) > keep:
            del self._buckets[next(iter(self._buckets))]
