"""The event streams' wake-ups (api/sse.py): a stream re-reads when any of its topics is woken,
including a wake that came while it was reading, without waiting for its poll.

The poll is set to a minute here, so a stream that missed a wake would hang, and the test's
own timeout fails it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from swarmstation.api import sse
from swarmstation.api.sse import Frame, event_stream
from swarmstation.control.notify import Notifier


class StillConnected:
    async def is_disconnected(self) -> bool:
        return False


async def next_frame(frames: AsyncIterator[str | bytes | memoryview]) -> str:
    async with asyncio.timeout(10):
        chunk = await anext(frames)
    return chunk if isinstance(chunk, str) else bytes(chunk).decode()


def test_a_wake_of_any_topic_and_a_wake_during_a_read_both_reach_the_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sse, "POLL_SECONDS", 60.0)

    async def scenario() -> None:
        notifier = Notifier()
        notifier.bind(asyncio.get_running_loop())
        reads = 0

        def read(after: int) -> tuple[list[Frame], int | None]:
            nonlocal reads
            reads += 1
            if reads == 2:  # something changes while this read runs: its wake must not be lost
                notifier.wake("conversation:1")
            return [Frame(reads, "n", {"read": reads})], 3

        response = await event_stream(
            StillConnected(),  # type: ignore[arg-type]
            notifier,
            ("conversation:1", "runs-of:alice"),
            read,
            after=0,
            what="a test stream",
        )
        frames = aiter(response.body_iterator)
        assert '"read": 1' in await next_frame(frames)
        await asyncio.sleep(0.05)  # the stream now waits
        notifier.wake("runs-of:alice")  # the second topic
        assert '"read": 2' in await next_frame(frames)
        assert '"read": 3' in await next_frame(frames)  # woken during read 2
        with pytest.raises(StopAsyncIteration):  # frame 3 was the last
            await next_frame(frames)
        assert reads == 3

    asyncio.run(scenario())


def test_a_listener_on_several_keys_is_woken_by_each_and_unregistered_after() -> None:
    async def scenario() -> None:
        notifier = Notifier()
        notifier.bind(asyncio.get_running_loop())
        with notifier.listening("a", "b") as woken:
            for key in ("a", "b"):
                woken.clear()
                notifier.wake(key)
                async with asyncio.timeout(5):
                    await woken.wait()
            woken.clear()
            notifier.wake("c")
            await asyncio.sleep(0.05)
            assert not woken.is_set()
        assert not notifier._events  # nothing left registered

    asyncio.run(scenario())
