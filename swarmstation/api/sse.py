"""Server-sent event streams of stored events (a job's, a run's): one loop for both.

A stream sends the rows after the client's `Last-Event-ID`, then waits on the notifier's topic
(woken by every change, polling each second regardless) and sends what is new, with a comment
every 15 idle seconds so proxies keep the connection. It ends after the event the reader names
as the last (the final state event of a finished job or run), at once for a client that resumes
after it. A database outage after the response started cannot be a 503: the stream asks the
client to retry later and ends, and the client resumes with `Last-Event-ID`."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from swarmstation.api.errors import database_unavailable
from swarmstation.control.notify import Notifier, wait_set
from swarmstation.domain.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

KEEP_ALIVE_SECONDS = 15.0
#: A stream re-reads at least this often, woken or not (a wake from another replica may be lost).
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Frame:
    """One event to send: its id (the row's), type and data."""

    id: int
    type: str
    data: dict[str, Any]


#: Reads the frames after an id, and the id of the stream's last frame once it is known (else
#: None). Synchronous (it runs in a thread); its first call may raise NotFound before streaming.
Reader = Callable[[int], tuple[list[Frame], int | None]]


def encode(frame: Frame) -> str:
    return f"id: {frame.id}\nevent: {frame.type}\ndata: {json.dumps(frame.data, default=str)}\n\n"


async def event_stream(
    request: Request,
    notifier: Notifier,
    topic: str | Sequence[str],
    read: Reader,
    *,
    after: int,
    what: str,
) -> StreamingResponse:
    """The stream of `read`'s frames after `after`, woken by a wake of `topic` (or of any of
    several). The first read happens here, so that an unknown job or run answers 404 rather than
    an empty stream."""
    topics = (topic,) if isinstance(topic, str) else tuple(topic)
    first = await asyncio.to_thread(read, after)

    async def frames() -> AsyncIterator[str]:
        cursor = after
        batch, last = first
        if last is not None and last <= cursor:
            return  # resumed after the end
        idle = 0.0
        # listening for the whole stream (cleared before each read): a change during a read
        # wakes the next wait rather than being missed until the next poll
        with notifier.listening(*topics) as woken:
            while True:
                for frame in batch:
                    cursor = frame.id
                    yield encode(frame)
                    if frame.id == last:
                        return
                if await request.is_disconnected():
                    return
                woke = await wait_set(woken, POLL_SECONDS)
                idle = 0.0 if woke else idle + POLL_SECONDS
                if idle >= KEEP_ALIVE_SECONDS:
                    idle = 0.0
                    yield ": keep-alive\n\n"
                woken.clear()
                try:
                    batch, last = await asyncio.to_thread(read, cursor)
                except Exception as exc:
                    if not database_unavailable(exc):
                        raise
                    log.warning("database unavailable on the events of %s: %s", what, type(exc).__name__)
                    yield f"retry: {DatabaseUnavailable.retry_after_seconds * 1000}\n\n"
                    return

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
