"""The eviction policy of an instance's model cache: which idle models to delete to make room.

Pure: no I/O, no clock reads. The caller (``swarmstation.worker.cache.ModelCache``) describes its
cache as :class:`CachedModel` values and deletes the files this policy names.

The rule (:func:`plan_eviction`)
--------------------------------
``used`` is the sum of the sizes of every model given (in use, pinned or not); the room needed is
``need = used + incoming_bytes - budget_bytes``.

1. ``need <= 0``: nothing is evicted (``[]``).
2. Only *evictable* models are candidates: not in use and not pinned. They are ordered
   least-recently-used first (``last_used`` ascending, ties broken by ``key``).
3. If all candidates together free less than ``need``, the answer is ``None``: the budget is too
   small for this download however much is evicted.
4. Otherwise take the shortest LRU prefix of the candidates that frees at least ``need`` bytes.
   This is plain LRU: nothing more recent than the model that closes the gap is touched.
5. Trim the overshoot: walk that prefix from its newest model back to its oldest (skipping the
   newest, which closes the gap and is always needed) and keep any model whose eviction is not
   needed, i.e. the models still chosen free ``need`` bytes without it. Example: a 100 MB LoRA
   that was used an hour ago and a 6 GB checkpoint used ten minutes ago, with 5 GB needed —
   plain LRU deletes both; the trim keeps the LoRA, since the checkpoint alone makes room.

Properties: the result never names an in-use or pinned model; when it is not ``None`` the
models left plus the incoming file fit the budget; every model named lies within the LRU prefix
of step 4 (so an older idle model is preferred to a newer one unless the older is not needed);
and no model named is redundant: dropping any one of them from the plan would leave too little
room. The result is listed oldest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CachedModel:
    """One file in an instance's cache.

    ``key`` is ``folder/name``; ``last_used`` is any number that orders uses (a monotonic clock
    reading, a timestamp, a counter); ``in_use``: a running job needs it; ``pinned``: preloaded
    at instance start and kept.
    """

    key: str
    size: int
    last_used: float
    in_use: bool
    pinned: bool = False

    @property
    def evictable(self) -> bool:
        return not self.in_use and not self.pinned


def lru_order(models: Sequence[CachedModel]) -> list[CachedModel]:
    """The evictable models, least recently used first (ties broken by key)."""
    return sorted((m for m in models if m.evictable), key=lambda m: (m.last_used, m.key))


def plan_eviction(
    models: Sequence[CachedModel], *, budget_bytes: int, incoming_bytes: int
) -> list[str] | None:
    """The keys of the models to delete so that ``sum(sizes) + incoming_bytes <= budget_bytes``.

    ``[]`` when everything already fits; ``None`` when even deleting every idle, unpinned model
    is not enough. See the module docstring for the exact rule.
    """
    if budget_bytes < 0 or incoming_bytes < 0:
        raise ValueError("budget_bytes and incoming_bytes must not be negative")
    if any(m.size < 0 for m in models):
        raise ValueError("model sizes must not be negative")
    need = sum(m.size for m in models) + incoming_bytes - budget_bytes
    if need <= 0:
        return []
    candidates = lru_order(models)
    prefix: list[CachedModel] = []
    freed = 0
    for m in candidates:
        if freed >= need:
            break
        prefix.append(m)
        freed += m.size
    if freed < need:
        return None
    chosen = list(prefix)
    # The newest model of the prefix closes the gap: without it the (shorter) prefix frees too
    # little, so it stays. Older ones are kept off the list when the rest still makes room.
    for m in reversed(prefix[:-1]):
        if freed - m.size >= need:
            chosen.remove(m)
            freed -= m.size
    return [m.key for m in chosen]


def minimal_lru_prefix(models: Sequence[CachedModel], *, budget_bytes: int, incoming_bytes: int) -> list[str]:
    """Step 4 of the rule alone (plain LRU), for reports and tests; ``[]`` when nothing is needed."""
    need = sum(m.size for m in models) + incoming_bytes - budget_bytes
    out: list[str] = []
    freed = 0
    for m in lru_order(models):
        if freed >= need:
            break
        out.append(m.key)
        freed += m.size
    return out
