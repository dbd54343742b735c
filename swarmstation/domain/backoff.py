"""Retry delays: exponential backoff with "full jitter", the one formula every retry loop uses.

The delay before retry ``attempt`` (0 for the first retry) is uniform in
``[0, min(cap, base * 2**attempt)]``. Full jitter spreads the retries of many clients that
failed together (a control plane restart, a provider's 429 storm) over the whole window, which
is what keeps them from failing together again; see "Exponential Backoff And Jitter" (AWS
Architecture Blog, 2015), where it does the least work of the variants compared.

Pure: the randomness is passed in (``random.Random().random`` in production, a constant in tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import count

__all__ = ["backoff_delay", "backoff_delays"]


def backoff_delay(attempt: int, *, base: float, cap: float, rand: Callable[[], float]) -> float:
    """The delay before retry ``attempt`` (0-based); ``rand`` returns a float in [0, 1)."""
    if attempt < 0 or base < 0 or cap < 0:
        raise ValueError("attempt, base and cap must not be negative")
    # min() first: 2.0**attempt overflows a float past attempt 1023, long after the cap applies.
    ceiling = cap if attempt >= 64 else min(cap, base * 2.0**attempt)
    return rand() * ceiling


def backoff_delays(*, base: float, cap: float, rand: Callable[[], float]) -> Iterator[float]:
    """The delays before retry 0, 1, 2, …, without end: the caller decides when to give up."""
    for attempt in count():
        yield backoff_delay(attempt, base=base, cap=cap, rand=rand)
