"""ModelCache against a real local HTTP server that honours (or ignores) Range, cuts, corrupts."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from swarmstation.worker.cache import FetchReport, ModelCache
from swarmstation.worker.downloads import ModelFetchError
from tests.helpers import async_test
from tests.worker.file_server import FileServer

KiB = 1024
REPO = Path(__file__).resolve().parents[2]


def blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def model(server: FileServer, name: str, data: bytes, folder: str = "loras") -> dict[str, Any]:
    return {"folder": folder, "name": name, **server.add(name, data)}


def counter_clock() -> Callable[[], float]:
    c = itertools.count(1)
    return lambda: float(next(c))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ hits and misses


@async_test
async def test_miss_then_hit(tmp_path: Path, server: FileServer) -> None:
    m = model(server, "a.safetensors", blob(40 * KiB))
    async with httpx.AsyncClient() as http:
        cache = ModelCache(tmp_path, http)
        first = await cache.ensure([m])
        cache.release([m])
        second = await cache.ensure([m])
        cache.release([m])
    target = tmp_path / "models" / "loras" / "a.safetensors"
    assert sha(target) == m["sha256"]
    assert (first.downloaded, first.hits, first.misses, first.bytes_downloaded) == (1, 0, 1, 40 * KiB)
    assert (second.downloaded, second.hits, second.misses, second.bytes_hit) == (0, 1, 0, 40 * KiB)
    assert second.bytes_downloaded == 0
    assert len(server.gets("a.safetensors")) == 1  # the hit asked nothing of the server
    st = cache.stats()
    assert st["requests"] == 2 and st["hits"] == 1 and st["hit_rate"] == 0.5
    assert st["bytes_requested"] == 80 * KiB and st["byte_hit_rate"] == 0.5
    assert not list(target.parent.glob("*.part*"))


@async_test
async def test_restart_sees_files_on_disk_as_hits(tmp_path: Path, server: FileServer) -> None:
    m = model(server, "sub/b.safetensors", blob(10 * KiB), folder="checkpoints")
    async with httpx.AsyncClient() as http:
        async with ModelCache(tmp_path, http).using([m]):
            pass
        restarted = ModelCache(tmp_path, http)
        inv = restarted.inventory()
        assert [(i["folder"], i["name"], i["size"], i["in_use"]) for i in inv] == [
            ("checkpoints", "sub/b.safetensors", 10 * KiB, False)
        ]
        async with restarted.using([m]) as report:
            assert report.hits == 1
            assert restarted.inventory()[0]["in_use"] is True
        assert restarted.inventory()[0]["in_use"] is False
    assert len(server.gets("sub/b.safetensors")) == 1


@async_test
async def test_model_without_url_is_left_to_comfyui(tmp_path: Path, server: FileServer) -> None:
    placed = tmp_path / "models" / "vae" / "v.safetensors"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"x" * 100)
    async with httpx.AsyncClient() as http:
        cache = ModelCache(tmp_path, http)
        report = await cache.ensure(
            [{"folder": "vae", "name": "v.safetensors"}, {"folder": "vae", "name": "missing.safetensors"}]
        )
    assert [i.status for i in report.items] == ["hit", "absent"]
    assert server.log == []


@async_test
async def test_unsafe_names_are_refused(tmp_path: Path, server: FileServer) -> None:
    async with httpx.AsyncClient() as http:
        cache = ModelCache(tmp_path, http)
        for folder, name in [("loras", "../../etc/passwd"), ("loras", "/abs.safetensors"), ("..", "x.pt")]:
            with pytest.raises(ModelFetchError, match="refusing model path"):
                await cache.ensure([{"folder": folder, "name": name, "url": server.url("x")}])
    assert server.log == []


@async_test
async def test_wrong_size_on_disk_is_fetched_again(tmp_path: Path, server: FileServer) -> None:
    m = model(server, "w.safetensors", blob(20 * KiB))
    stale = tmp_path / "models" / "loras" / "w.safetensors"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old" * 10)
    async with httpx.AsyncClient() as http:
        report = await ModelCache(tmp_path, http).ensure([m])
    assert report.downloaded == 1
    assert sha(stale) == m["sha256"]


# ------------------------------------------------------------------------------ one download


@async_test
async def test_concurrent_ensure_of_one_model_downloads_once(tmp_path: Path, server: FileServer) -> None:
    m = model(server, "shared.safetensors", blob(128 * KiB))
    server.delay = 0.01  # 16 blocks: ~0.16 s, long enough for every caller to arrive meanwhile
    async with httpx.AsyncClient() as http:
        cache = ModelCache(tmp_path, http)
        reports = await asyncio.gather(*(cache.ensure([m]) for _ in range(5)))
        assert cache.inventory()[0]["in_use"] is True
        for _ in reports:
            cache.release([m])
        assert cache.inventory()[0]["in_use"] is False
    assert len(server.gets("shared.safetensors")) == 1
    assert sum(r.downloaded for r in reports) == 1
    assert sum(r.bytes_downloaded for r in reports) == 128 * KiB
    assert sorted(r.items[0].shared for r in reports) == [False, True, True, True, True]
    assert sha(tmp_path / "models" / "loras" / "shared.safetensors") == m["sha256"]


# ------------------------------------------------------------------------------ resume


@async_test
async def test_cut_download_resumes_with_range_after_restart(tmp_path: Path, server: FileServer) -> None:
    data = blob(200 * KiB, seed=1)
    m = model(server, "r.safetensors", data)
    server.cut_after, server.cuts_left = 72 * KiB, 1
    part = tmp_path / "models" / "loras" / "r.safetensors.part"
    async with httpx.AsyncClient() as http:
        cache = ModelCache(tmp_path, http)
        with pytest.raises(ModelFetchError, match="partial file is kept"):
            await cache.ensure([m])
        assert cache.inventory() == []
        assert cache.inventory() == [] and cache._in_use == {}  # a failed ensure holds nothing
        kept = part.stat().st_size
        assert kept == 72 * KiB
        assert [p["key"] for p in cache.partials()] == ["loras/r.safetensors"]

        restarted = ModelCache(tmp_path, http)  # a new process
        report = await restarted.ensure([m])
    second = server.gets("r.safetensors")[1]
    assert second["range"] == f"bytes={kept}-" and second["status"] == 206
    assert second["sent"] == len(data) - kept
    assert report.items[0].resumed and report.bytes_downloaded == len(data) - kept
    assert restarted.stats()["resumed_downloads"] == 1
    assert sha(tmp_path / "models" / "loras" / "r.safetensors") == m["sha256"]
    assert not part.exists()


@async_test
async def test_resume_against_a_server_that_ignores_range_starts_over(
    tmp_path: Path, server: FileServer
) -> None:
    data = blob(100 * KiB, seed=2)
    m = model(server, "i.safetensors", data)
    part = tmp_path / "models" / "loras" / "i.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[: 30 * KiB])
    server.ignore_range = True
    async with httpx.AsyncClient() as http:
        report = await ModelCache(tmp_path, http).ensure([m])
    (req,) = server.gets("i.safetensors")
    assert req["range"] == f"bytes={30 * KiB}-" and req["status"] == 200
    assert not report.items[0].resumed and report.bytes_downloaded == len(data)
    assert sha(tmp_path / "models" / "loras" / "i.safetensors") == m["sha256"]


@async_test
async def test_part_that_is_already_whole_is_verified_without_downloading(
    tmp_path: Path, server: FileServer
) -> None:
    data = blob(50 * KiB, seed=3)
    m = model(server, "whole.safetensors", data)
    part = tmp_path / "models" / "loras" / "whole.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data)
    async with httpx.AsyncClient() as http:
        report = await ModelCache(tmp_path, http).ensure([m])
    assert server.log == [] and report.items[0].resumed
    assert sha(tmp_path / "models" / "loras" / "whole.safetensors") == m["sha256"]


KILLED_WORKER = """
import asyncio, sys
from pathlib import Path
import httpx
from swarmstation.worker.cache import ModelCache

async def main():
    async with httpx.AsyncClient() as http:
        cache = ModelCache(Path(sys.argv[1]), http, parallel_ranges=int(sys.argv[5]),
                           range_threshold=64 * 1024, chunk=4096)
        await cache.ensure([{"folder": "checkpoints", "name": "k.safetensors", "url": sys.argv[2],
                             "size": int(sys.argv[3]), "sha256": sys.argv[4]}])

asyncio.run(main())
"""


def run_and_kill(tmp_path: Path, m: dict[str, Any], parallel: int, ready: Callable[[], bool]) -> None:
    """Run a download in another process and SIGKILL it once ``ready()``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_WORKER,
            str(tmp_path),
            m["url"],
            str(m["size"]),
            m["sha256"],
            str(parallel),
        ],
        env=env,
    )
    try:
        deadline = time.monotonic() + 15
        while not ready():
            assert proc.poll() is None, "the download finished before it could be killed"
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)


@async_test
async def test_download_killed_mid_file_resumes_after_restart(tmp_path: Path, server: FileServer) -> None:
    data = blob(256 * KiB, seed=4)
    m = model(server, "k.safetensors", data, folder="checkpoints")
    part = tmp_path / "models" / "checkpoints" / "k.safetensors.part"
    server.delay = 0.02  # 32 blocks of 8 KiB: ~0.6 s in all

    def ready() -> bool:
        return part.exists() and part.stat().st_size >= 48 * KiB

    run_and_kill(tmp_path, m, parallel=1, ready=ready)
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    assert not (tmp_path / "models" / "checkpoints" / "k.safetensors").exists()
    server.delay = 0
    async with httpx.AsyncClient() as http:
        cache = ModelCache(tmp_path, http, parallel_ranges=1)
        assert cache.inventory() == []
        report = await cache.ensure([m])
    second = server.gets("k.safetensors")[-1]
    assert second["range"] == f"bytes={kept}-" and second["sent"] == len(data) - kept
    assert report.bytes_downloaded == len(data) - kept
    assert sha(tmp_path / "models" / "checkpoints" / "k.safetensors") == m["sha256"]


@async_test
async def test_killed_parallel_download_resumes_only_unfinished_ranges(
    tmp_path: Path, server: FileServer
) -> None:
    data = blob(512 * KiB, seed=5)
    m = model(server, "k.safetensors", data, folder="checkpoints")
    side = tmp_path / "models" / "checkpoints" / "k.safetensors.part.json"
    server.delay = 0.02

    def progress() -> int:
        try:
            ranges = json.loads(side.read_text())["ranges"]
        except (OSError, ValueError):
            return 0
        return sum(done - start for start, _end, done in ranges)

    run_and_kill(tmp_path, m, parallel=4, ready=lambda: progress() >= 64 * KiB)
    recorded = json.loads(side.read_text())["ranges"]
    done_before = progress()
    assert 0 < done_before < len(data)
    n_before = len(server.log)
    server.delay = 0
    async with httpx.AsyncClient() as http:
        cache = ModelCache(tmp_path, http, parallel_ranges=4, range_threshold=64 * KiB, chunk=4 * KiB)
        report = await cache.ensure([m])
    again = [e for e in server.log[n_before:] if e["range"] != "bytes=0-0"]  # less the probe
    assert sorted(e["range"] for e in again) == sorted(
        f"bytes={done}-{end - 1}" for _start, end, done in recorded if done < end
    )
    assert sum(e["sent"] for e in again) == len(data) - done_before
    assert report.items[0].resumed and report.bytes_downloaded == len(data) - done_before
    assert sha(tmp_path / "models" / "checkpoints" / "k.safetensors") == m["sha256"]
    assert not side.exists()


# ------------------------------------------------------------------------------ parallel ranges


@async_test
async def test_large_file_downloads_in_parallel_ranges(tmp_path: Path, server: FileServer) -> None:
    big = model(server, "big.safetensors", blob(1024 * KiB + 123, seed=6), folder="checkpoints")
    small = model(server, "small.safetensors", blob(32 * KiB, seed=7))
    async with httpx.AsyncClient() as http:
        cache = ModelCache(tmp_path, http, parallel_ranges=4, range_threshold=256 * KiB, chunk=16 * KiB)
        report = await cache.ensure([big, small])
    big_reqs = server.gets("big.safetensors")
    ranged = [e for e in big_reqs if e["range"] != "bytes=0-0"]
    assert len(big_reqs) == 5 and len(ranged) == 4  # one probe, four ranges
    assert all(e["status"] == 206 for e in big_reqs)
    assert sum(e["sent"] for e in ranged) == big["size"]
    assert report.items[0].ranges == 4 and report.items[0].bytes_downloaded == big["size"]
    assert sha(tmp_path / "models" / "checkpoints" / "big.safetensors") == big["sha256"]
    (small_req,) = server.gets("small.safetensors")  # under the threshold: one plain GET
    assert small_req["range"] is None and small_req["status"] == 200
    assert not list((tmp_path / "models").rglob("*.part*"))


@async_test
async def test_large_file_from_a_server_without_ranges_downloads_in_one_piece(
    tmp_path: Path, server: FileServer
) -> None:
    big = model(server, "big.safetensors", blob(512 * KiB, seed=8))
    server.ignore_range = True
    async with httpx.AsyncClient() as http:
        cache = ModelCache(tmp_path, http, parallel_ranges=4, range_threshold=64 * KiB)
        report = await cache.ensure([big])
    assert [e["status"] for e in server.gets("big.safetensors")] == [200, 200]  # probe, then the file
    assert report.items[0].ranges == 0
    assert sha(tmp_path / "models" / "loras" / "big.safetensors") == big["sha256"]


@async_test
async def test_unknown_size_is_learned_from_the_probe(tmp_path: Path, server: FileServer) -> None:
    data = blob(300 * KiB, seed=9)
    server.files["u.safetensors"] = data
    m = {"folder": "loras", "name": "u.safetensors", "url": server.url("u.safetensors")}
    async with httpx.AsyncClient() as http:
        cache = ModelCache(tmp_path, http, parallel_ranges=3, range_threshold=100 * KiB, chunk=16 * KiB)
        report = await cache.ensure([m])
    assert report.items[0].size == len(data) and report.items[0].ranges == 3
    assert (tmp_path / "models" / "loras" / "u.safetensors").read_bytes() == data


# ------------------------------------------------------------------------------ corruption


@pytest.mark.parametrize("parallel", [1, 4])
@async_test
async def test_corrupt_download_is_detected_and_fetched_again(
    tmp_path: Path, server: FileServer, parallel: int
) -> None:
    m = model(server, "c.safetensors", blob(256 * KiB, seed=10))
    target = tmp_path / "models" / "loras" / "c.safetensors"
    server.corrupt = True
    async with httpx.AsyncClient() as http:
        cache = ModelCache(tmp_path, http, parallel_ranges=parallel, range_threshold=64 * KiB, chunk=16 * KiB)
        with pytest.raises(ModelFetchError, match="sha256 mismatch"):
            await cache.ensure([m])
        assert not target.exists() and not list(target.parent.glob("*.part*"))
        assert cache.inventory() == [] and cache.stats()["failed_downloads"] == 1
        n_before = len(server.log)
        server.corrupt = False
        report = await cache.ensure([m])
    retry = [e for e in server.log[n_before:] if e["range"] != "bytes=0-0"]
    assert sum(e["sent"] for e in retry) == m["size"]  # from scratch, nothing reused
    if parallel == 1:
        assert [e["range"] for e in retry] == [None]
    else:
        assert sorted(int(e["range"][6:].split("-")[0]) for e in retry) == [0, 64 * KiB, 128 * KiB, 192 * KiB]
    assert report.downloaded == 1 and not report.items[0].resumed
    assert sha(target) == m["sha256"]


@async_test
async def test_more_bytes_than_the_catalog_size_is_corrupt(tmp_path: Path, server: FileServer) -> None:
    m = model(server, "long.safetensors", blob(20 * KiB, seed=11))
    m["size"] = 10 * KiB
    m.pop("sha256")
    async with httpx.AsyncClient() as http:
        with pytest.raises(ModelFetchError, match="more than"):
            await ModelCache(tmp_path, http).ensure([m])
    assert not list((tmp_path / "models" / "loras").iterdir())


# ------------------------------------------------------------------------------ budget and eviction


@async_test
async def test_full_disk_evicts_the_lru_idle_model_never_one_in_use(
    tmp_path: Path, server: FileServer
) -> None:
    size = 100 * KiB
    a, b, c = (model(server, f"{n}.safetensors", blob(size, seed=i)) for i, n in enumerate("abc"))
    folder = tmp_path / "models" / "loras"
    async with httpx.AsyncClient() as http:
        cache = ModelCache(tmp_path, http, budget_bytes=2 * size + size // 2, clock=counter_clock())
        async with cache.using([a]):  # a: used first (least recently), and still in use
            async with cache.using([b]):
                pass
            report = await cache.ensure([c])  # room for c: b goes, a is in use though older
            cache.release([c])
            assert report.downloaded == 1
            assert sorted(p.name for p in folder.iterdir()) == ["a.safetensors", "c.safetensors"]
            inv = {i["name"]: i for i in cache.inventory()}
            assert inv["a.safetensors"]["in_use"] and not inv["c.safetensors"]["in_use"]
        # now a is idle and the least recently used: fetching b again evicts a, not c
        async with cache.using([b]):
            pass
    assert sorted(p.name for p in folder.iterdir()) == ["b.safetensors", "c.safetensors"]
    st = cache.stats()
    assert st["evictions"] == 2 and st["bytes_evicted"] == 2 * size
    assert st["bytes_cached"] <= cache.budget_bytes


@async_test
async def test_eviction_accounts_for_size(tmp_path: Path, server: FileServer) -> None:
    lora = model(server, "lora.safetensors", blob(10 * KiB, seed=1))
    ckpt = model(server, "ckpt.safetensors", blob(200 * KiB, seed=2), folder="checkpoints")
    new = model(server, "new.safetensors", blob(150 * KiB, seed=3), folder="checkpoints")
    async with httpx.AsyncClient() as http:
        cache = ModelCache(tmp_path, http, budget_bytes=300 * KiB, clock=counter_clock())
        for m in (lora, ckpt, new):  # lora oldest; evicting the checkpoint alone makes room
            async with cache.using([m]):
                pass
    assert sorted(i["name"] for i in cache.inventory()) == ["lora.safetensors", "new.safetensors"]


@async_test
async def test_budget_too_small_is_a_clear_error(tmp_path: Path, server: FileServer) -> None:
    a = model(server, "a.safetensors", blob(100 * KiB, seed=1))
    b = model(server, "b.safetensors", blob(100 * KiB, seed=2))
    huge = model(server, "huge.safetensors", blob(300 * KiB, seed=3))
    async with httpx.AsyncClient() as http:
        cache = ModelCache(tmp_path, http, budget_bytes=150 * KiB)
        with pytest.raises(ModelFetchError, match=rf"disk budget too small: need {300 * KiB} bytes"):
            await cache.ensure([huge])
        async with cache.using([a]):
            with pytest.raises(ModelFetchError, match=r"disk budget too small.*in use"):
                await cache.ensure([b])  # a is in use and cannot make room
        assert server.gets("huge.safetensors") == [] and server.gets("b.safetensors") == []
        assert [i["name"] for i in cache.inventory()] == ["a.safetensors"]
        # a job whose own models do not fit together fails, and holds nothing afterwards
        with pytest.raises(ModelFetchError, match="disk budget too small"):
            await cache.ensure([a, b])
        assert cache.inventory()[0]["in_use"] is False
        async with cache.using([b]):  # a idle now: evicted for b
            pass
    assert [i["name"] for i in cache.inventory()] == ["b.safetensors"]


@async_test
async def test_leftover_part_files_count_and_are_evicted_first(tmp_path: Path, server: FileServer) -> None:
    a = model(server, "a.safetensors", blob(100 * KiB, seed=1))
    b = model(server, "b.safetensors", blob(100 * KiB, seed=2))
    stale = tmp_path / "models" / "loras" / "old.safetensors.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"z" * 60 * KiB)
    async with httpx.AsyncClient() as http:
        cache = ModelCache(tmp_path, http, budget_bytes=210 * KiB, clock=counter_clock())
        assert cache.used_bytes() == 60 * KiB
        async with cache.using([a]):
            pass
        async with cache.using([b]):  # 60 + 100 + 100 > 210: the stale part goes, a stays
            pass
    assert not stale.exists()
    assert sorted(i["name"] for i in cache.inventory()) == ["a.safetensors", "b.safetensors"]


@async_test
async def test_preload_pins(tmp_path: Path, server: FileServer) -> None:
    p = model(server, "p.safetensors", blob(100 * KiB, seed=1), folder="checkpoints")
    a = model(server, "a.safetensors", blob(100 * KiB, seed=2))
    b = model(server, "b.safetensors", blob(100 * KiB, seed=3))
    async with httpx.AsyncClient() as http:
        cache = ModelCache(tmp_path, http, budget_bytes=250 * KiB, clock=counter_clock())
        report = await cache.preload([p])
        assert report.downloaded == 1
        inv = cache.inventory()
        assert inv[0]["pinned"] and not inv[0]["in_use"]
        async with cache.using([a]):
            pass
        async with cache.using([b]):  # p is the oldest, but pinned: a goes
            pass
        assert sorted(i["name"] for i in cache.inventory()) == ["b.safetensors", "p.safetensors"]
        with pytest.raises(ModelFetchError, match="disk budget too small"):
            await cache.ensure([model(server, "x.safetensors", blob(200 * KiB, seed=4))])
        cache.unpin([p])
        async with cache.using([a]):  # unpinned, p is the least recently used now
            pass
    assert sorted(i["name"] for i in cache.inventory()) == ["a.safetensors", "b.safetensors"]


# ------------------------------------------------------------------------------ inventory


def test_inventory_lists_models_never_part_files(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "loras" / "sdxl").mkdir(parents=True)
    (models / "checkpoints").mkdir(parents=True)
    (models / "loras" / "sdxl" / "a.safetensors").write_bytes(b"a" * 10)
    (models / "checkpoints" / "c.ckpt").write_bytes(b"c" * 20)
    (models / "checkpoints" / "half.safetensors.part").write_bytes(b"h" * 5)
    (models / "checkpoints" / "put_checkpoints_here").write_bytes(b"")
    (models / "checkpoints" / "orphan.safetensors.part.json").write_text("{}")
    os.utime(models / "checkpoints" / "c.ckpt", (1_000, 1_000))  # older on disk: evicted first

    async def main() -> ModelCache:
        async with httpx.AsyncClient() as http:
            return ModelCache(tmp_path, http)

    cache = asyncio.run(main())
    inv = cache.inventory()
    assert [(i["folder"], i["name"], i["size"]) for i in inv] == [
        ("checkpoints", "c.ckpt", 20),
        ("loras", "sdxl/a.safetensors", 10),
    ]
    assert inv[0]["last_used"] < inv[1]["last_used"]
    assert cache.partials() == [{"key": "checkpoints/half.safetensors", "bytes": 5, "in_flight": False}]
    assert not (models / "checkpoints" / "orphan.safetensors.part.json").exists()
    (models / "loras" / "sdxl" / "a.safetensors").unlink()
    cache.rescan()
    assert [i["name"] for i in cache.inventory()] == ["c.ckpt"]


def test_fetch_report_to_dict() -> None:
    r = FetchReport()
    assert r.to_dict()["downloaded"] == 0 and r.to_dict()["items"] == []
