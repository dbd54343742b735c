"""Downloader against a real local HTTP server: probe, Range resume, parallel ranges, SHA-256."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from pathlib import Path

import httpx
import pytest

from swarmstation.worker.downloads import (
    Downloader,
    DownloadPlan,
    DownloadProgress,
    ModelFetchError,
    part_path,
    sidecar_path,
)
from tests.worker.file_server import FileServer

KiB = 1024


def blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_plan_probes_only_when_the_size_is_unknown_or_the_file_is_large(
    tmp_path: Path, server: FileServer
) -> None:
    data = blob(300 * KiB, seed=1)
    server.add("p.safetensors", data)
    url = server.url("p.safetensors")

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            d = Downloader(http, parallel_ranges=4, range_threshold=100 * KiB)
            assert await d.plan(url, "p", 50 * KiB) == DownloadPlan(total=50 * KiB, parallel=False)
            assert server.log == []  # small and of known size: no probe
            assert await d.plan(url, "p", None) == DownloadPlan(total=len(data), parallel=True)
            assert await d.plan(url, "p", len(data)) == DownloadPlan(total=len(data), parallel=True)
            assert [e["range"] for e in server.log] == ["bytes=0-0", "bytes=0-0"]
            with pytest.raises(ModelFetchError, match="the catalog says"):
                await d.plan(url, "p", len(data) + 1)
            server.ignore_range = True  # a 200 to the probe: the size, but no ranges
            assert await d.plan(url, "p", None) == DownloadPlan(total=len(data), parallel=False)
            with pytest.raises(ModelFetchError, match="HTTP 404"):
                await d.plan(server.url("missing.safetensors"), "missing", None)

    asyncio.run(main())


def test_leftover_part_is_resumed_with_range(tmp_path: Path, server: FileServer) -> None:
    data = blob(200 * KiB, seed=2)
    server.add("r.safetensors", data)
    target = tmp_path / "r.safetensors"
    kept = 70 * KiB
    part_path(target).write_bytes(data[:kept])

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            d = Downloader(http, parallel_ranges=1)
            plan = DownloadPlan(total=len(data), parallel=False)
            progress = DownloadProgress()
            assert await d.fetch(server.url("r.safetensors"), target, plan, sha(data), progress) == len(data)
            assert progress.resumed and progress.bytes_downloaded == len(data) - kept
            assert progress.ranges == 0 and d.bytes_downloaded == len(data) - kept

    asyncio.run(main())
    (req,) = server.log
    assert req["range"] == f"bytes={kept}-" and req["status"] == 206
    assert target.read_bytes() == data and not part_path(target).exists()


def test_cut_connection_keeps_the_part_for_the_next_try(tmp_path: Path, server: FileServer) -> None:
    data = blob(128 * KiB, seed=3)
    server.add("c.safetensors", data)
    target = tmp_path / "c.safetensors"
    server.cut_after, server.cuts_left = 40 * KiB, 1

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            d = Downloader(http)
            plan = DownloadPlan(total=len(data), parallel=False)
            with pytest.raises(ModelFetchError, match="partial file is kept"):
                await d.fetch(server.url("c.safetensors"), target, plan, sha(data), DownloadProgress())
            assert part_path(target).stat().st_size == 40 * KiB and not target.exists()
            await d.fetch(server.url("c.safetensors"), target, plan, sha(data), DownloadProgress())

    asyncio.run(main())
    assert [e["range"] for e in server.log] == [None, f"bytes={40 * KiB}-"]
    assert target.read_bytes() == data


def test_parallel_ranges_are_written_at_their_offsets(tmp_path: Path, server: FileServer) -> None:
    data = blob(256 * KiB + 5, seed=4)
    server.add("big.safetensors", data)
    target = tmp_path / "sub" / "big.safetensors"

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            d = Downloader(http, parallel_ranges=4, range_threshold=64 * KiB, chunk=16 * KiB)
            progress = DownloadProgress()
            plan = DownloadPlan(total=len(data), parallel=True)
            await d.fetch(server.url("big.safetensors"), target, plan, sha(data), progress)
            assert progress.ranges == 4 and progress.bytes_downloaded == len(data)
            assert not progress.resumed

    asyncio.run(main())
    step = -(-len(data) // 4)
    expected = [f"bytes={s}-{min(len(data), s + step) - 1}" for s in range(0, len(data), step)]
    assert sorted(e["range"] for e in server.log) == sorted(expected)
    assert all(e["status"] == 206 for e in server.log)
    assert target.read_bytes() == data
    assert not part_path(target).exists() and not sidecar_path(target).exists()


def test_parallel_download_resumes_each_range_from_its_sidecar(tmp_path: Path, server: FileServer) -> None:
    data = blob(240 * KiB, seed=5)
    server.add("s.safetensors", data)
    target = tmp_path / "s.safetensors"
    third = 80 * KiB
    # three ranges: the first finished, the second half done, the third not started
    ranges = [[0, third, third], [third, 2 * third, third + 40 * KiB], [2 * third, 3 * third, 2 * third]]
    part = bytearray(len(data))
    part[: third + 40 * KiB] = data[: third + 40 * KiB]
    part_path(target).write_bytes(bytes(part))
    sidecar_path(target).write_text(json.dumps({"size": len(data), "sha256": sha(data), "ranges": ranges}))

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            d = Downloader(http, parallel_ranges=3, range_threshold=64 * KiB, chunk=16 * KiB)
            progress = DownloadProgress()
            plan = DownloadPlan(total=len(data), parallel=True)
            await d.fetch(server.url("s.safetensors"), target, plan, sha(data), progress)
            assert progress.resumed and progress.ranges == 2
            assert progress.bytes_downloaded == len(data) - (third + 40 * KiB)

    asyncio.run(main())
    assert sorted(e["range"] for e in server.log) == [
        f"bytes={third + 40 * KiB}-{2 * third - 1}",
        f"bytes={2 * third}-{3 * third - 1}",
    ]
    assert target.read_bytes() == data and not sidecar_path(target).exists()


@pytest.mark.parametrize("parallel", [False, True])
def test_sha256_mismatch_deletes_the_download(tmp_path: Path, server: FileServer, parallel: bool) -> None:
    data = blob(192 * KiB, seed=6)
    server.add("bad.safetensors", data)
    server.corrupt = True
    target = tmp_path / "bad.safetensors"

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            d = Downloader(http, parallel_ranges=4, range_threshold=64 * KiB, chunk=16 * KiB)
            plan = DownloadPlan(total=len(data), parallel=parallel)
            with pytest.raises(ModelFetchError, match=r"sha256 mismatch.*corrupt and was deleted"):
                await d.fetch(server.url("bad.safetensors"), target, plan, sha(data), DownloadProgress())

    asyncio.run(main())
    assert len(server.log) == (4 if parallel else 1)
    assert not target.exists() and not part_path(target).exists() and not sidecar_path(target).exists()
