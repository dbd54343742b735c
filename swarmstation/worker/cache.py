"""The worker's model cache: ComfyUI's model folders, filled on demand, under a disk budget.

Layout. A model ``{"folder": "loras", "name": "sdxl/a.safetensors"}`` lives at
``<comfy_dir>/models/loras/sdxl/a.safetensors``; its key is that path relative to ``models/``
(``loras/sdxl/a.safetensors``). Folder and name are normalised first (no ``..``, no absolute
paths), see :func:`swarmstation.domain.workflow.normalise_model_name`.

Downloads (``ensure``/``preload``/``using``):

- A model is written to ``<name>.part`` beside its final name (``.part`` is not a model
  extension, so ComfyUI never lists a half-written file), checked, then renamed into place with
  ``os.replace`` (atomic): ComfyUI sees the whole file or nothing.
- One download per key however many jobs ask at once: a per-key ``asyncio.Lock``; the jobs that
  waited find the file in place (reported as a ``shared`` miss, not downloaded again).
- Sequential downloads hash with SHA-256 while streaming. Resuming hashes the bytes already in
  the ``.part`` file first, then streams the rest.
- Resume: a leftover ``.part`` (a killed process, a cut connection) is continued with
  ``Range: bytes=<part size>-``. A 206 whose ``Content-Range`` starts there appends; a 200 (the
  server ignores ranges) starts over from that very response. A cut connection or an HTTP error
  keeps the ``.part`` for the next try.
- Parallel ranges: a file whose size is known (from the model's ``size`` or a probe) and at
  least ``range_threshold`` bytes, from a server that answers the probe ``Range: bytes=0-0`` with
  206, is fetched as ``parallel_ranges`` concurrent ranges written at their offsets into the
  ``.part`` file (pre-sized to the full length). ``<name>.part.json`` records each range and how
  far it got (saved every 16 chunks and whenever a range stops); it is written *before* the
  ``.part`` is sized, so a ``.part`` without one always holds a contiguous prefix. A restart
  continues every range from its recorded offset; a sequential ``.part`` left by an earlier try is
  taken as the finished range ``[0, size)``. Ranges are hashed after assembly, reading the file
  once (in a thread).
- Corruption: a SHA-256 mismatch, or more or fewer bytes than the model's size, deletes the
  ``.part`` (and its ``.part.json``) and raises :class:`ModelFetchError`; the caller retries and
  the retry fetches from scratch.

Budget and eviction: with ``budget_bytes`` set, the space counted is every cached model, every
leftover ``.part`` file and the full size of every download in flight. Before a download the
cache asks :func:`swarmstation.domain.cache.plan_eviction` (least recently used first, never a
model in use, never a pinned one) what to delete; leftover ``.part`` files of other models count
as the least recently used of all. If nothing is enough, :class:`ModelFetchError` says "disk
budget too small". With no budget (``None``) nothing is evicted: the disk is the limit. A model
without ``size`` takes its size from the probe; when the server does not say either, it reserves
nothing and the budget is restored by eviction after its download, when possible.

Hits: a model is a hit when its file is on disk with the expected ``size`` (any size when none is
given); its SHA-256 is not read again. A file of another size under that name is replaced.
Ranges are at least ``chunk`` bytes each, so a file under ``2 * chunk`` uses one range.

In use: ``ensure`` marks every model of the job in use (a count per key) before fetching any,
so a job's own models never evict each other, until ``release`` — or use
``async with cache.using(models) as report:``. ``preload`` downloads and pins.

``last_used`` comes from ``clock`` (``time.monotonic`` by default). At start (``rescan``) the
files on disk are ordered by their access/modification time and given ``last_used`` values
just below the clock's reading, so the oldest files on disk are evicted first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from swarmstation.domain.cache import CachedModel, plan_eviction
from swarmstation.domain.errors import SwarmError
from swarmstation.domain.workflow import WorkflowError, normalise_model_name

log = logging.getLogger(__name__)

MiB = 1024 * 1024
PART_SUFFIX = ".part"
SIDECAR_SUFFIX = ".part.json"
# ComfyUI's weight extensions (protocols.md §1.9) plus .gguf (custom loaders). Files with other
# extensions under models/ (put_*_here markers, configs) are not cache entries on rescan.
MODEL_EXTENSIONS = frozenset(
    {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft", ".gguf"}
)
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_SIDECAR_SAVE_EVERY = 16  # chunks


class ModelFetchError(SwarmError):
    """A model could not be made available; the job may be retried."""

    code = "model_fetch_failed"


@dataclass
class ModelFetch:
    """What ``ensure`` did for one model.

    ``status``: ``hit`` (on disk already), ``miss`` (not on disk when asked: downloaded by this
    call, or by a concurrent call it waited for — then ``shared``), ``absent`` (no URL and not on
    disk: left to ComfyUI, whose validation names it).
    """

    key: str
    folder: str
    name: str
    status: Literal["hit", "miss", "absent"]
    size: int | None
    bytes_downloaded: int = 0
    seconds: float = 0.0
    resumed: bool = False
    ranges: int = 0
    shared: bool = False


@dataclass
class FetchReport:
    items: list[ModelFetch] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def downloaded(self) -> int:
        """How many models this call downloaded itself."""
        return sum(1 for i in self.items if i.status == "miss" and not i.shared)

    @property
    def hits(self) -> int:
        return sum(1 for i in self.items if i.status == "hit")

    @property
    def misses(self) -> int:
        return sum(1 for i in self.items if i.status == "miss")

    @property
    def bytes_downloaded(self) -> int:
        return sum(i.bytes_downloaded for i in self.items)

    @property
    def bytes_hit(self) -> int:
        return sum(i.size or 0 for i in self.items if i.status == "hit")

    def to_dict(self) -> dict[str, Any]:
        return {
            "downloaded": self.downloaded,
            "hits": self.hits,
            "misses": self.misses,
            "bytes_downloaded": self.bytes_downloaded,
            "bytes_hit": self.bytes_hit,
            "seconds": round(self.seconds, 4),
            "items": [asdict(i) for i in self.items],
        }


@dataclass
class _Entry:
    size: int
    last_used: float
    pinned: bool = False


@dataclass
class _Range:
    start: int
    end: int  # exclusive
    done: int  # next offset to fetch; the range is finished when done == end


def _hash_file(path: Path, digest: Any, chunk: int) -> None:
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


class ModelCache:
    def __init__(
        self,
        comfy_dir: Path,
        http: httpx.AsyncClient,
        *,
        budget_bytes: int | None = None,
        parallel_ranges: int = 4,
        range_threshold: int = 64 * MiB,
        chunk: int = 1 * MiB,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if budget_bytes is not None and budget_bytes < 0:
            raise ValueError("budget_bytes must not be negative")
        self.models_dir = Path(comfy_dir) / "models"
        self.http = http
        self.budget_bytes = budget_bytes
        self.parallel_ranges = max(1, parallel_ranges)
        self.range_threshold = range_threshold
        self.chunk = max(1, chunk)
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._parts: dict[str, int] = {}  # key -> size of a leftover .part not being downloaded
        self._reserved: dict[str, int] = {}  # key -> bytes reserved by a download in flight
        self._in_use: dict[str, int] = {}  # key -> how many holders
        self._pins: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        # counters (stats())
        self.requests = 0
        self.request_hits = 0
        self.bytes_requested = 0
        self.bytes_hit = 0
        self.bytes_downloaded = 0
        self.downloads = 0
        self.resumed_downloads = 0
        self.failed_downloads = 0
        self.evictions = 0
        self.bytes_evicted = 0
        self.rescan()

    # ---------------------------------------------------------------- paths and views

    def resolve(self, folder: str, name: str) -> tuple[str, Path]:
        """``(key, path)`` for a model, or :class:`ModelFetchError` for a name that is unsafe."""
        try:
            rel = normalise_model_name(name)
            fold = normalise_model_name(folder)
        except WorkflowError as exc:
            raise ModelFetchError(f"refusing model path {folder}/{name}: {exc}") from exc
        key = f"{fold}/{rel}"
        return key, self.models_dir / key

    def path_for(self, folder: str, name: str) -> Path:
        return self.resolve(folder, name)[1]

    def rescan(self) -> None:
        """Rebuild the view from disk: model files are cached entries, ``.part`` files incomplete.

        Known keys keep their ``last_used`` and pins; in-use counts and downloads in flight are
        untouched. A ``.part.json`` with no ``.part`` beside it is deleted.
        """
        found: list[tuple[float, str, int]] = []
        parts: dict[str, int] = {}
        if self.models_dir.is_dir():
            for root, _dirs, files in os.walk(self.models_dir, followlinks=True):
                for fname in files:
                    path = Path(root) / fname
                    key = path.relative_to(self.models_dir).as_posix()
                    try:
                        st = path.stat()
                    except OSError:
                        continue
                    if fname.endswith(SIDECAR_SUFFIX):
                        if not path.with_name(fname[: -len(".json")]).exists():
                            path.unlink(missing_ok=True)
                        continue
                    if fname.endswith(PART_SUFFIX):
                        parts[key[: -len(PART_SUFFIX)]] = st.st_size
                        continue
                    if "/" not in key or path.suffix.lower() not in MODEL_EXTENSIONS:
                        continue
                    found.append((max(st.st_atime, st.st_mtime), key, st.st_size))
        found.sort()
        base = self.clock()
        entries: dict[str, _Entry] = {}
        for rank, (_t, key, size) in enumerate(found):
            old = self._entries.get(key)
            if old is not None:
                entries[key] = _Entry(size=size, last_used=old.last_used, pinned=old.pinned)
            else:
                entries[key] = _Entry(
                    size=size, last_used=base - (len(found) - rank), pinned=key in self._pins
                )
        # a model being downloaded has no entry yet; its .part is accounted as a reservation
        for key in self._entries.keys() - entries.keys():
            self._pins.discard(key)
        self._entries = entries
        self._parts = {k: v for k, v in parts.items() if k not in self._reserved}

    def inventory(self) -> list[dict[str, Any]]:
        """The complete models on disk (never ``.part`` files), least recently used first."""
        out = []
        for key, e in sorted(self._entries.items(), key=lambda kv: (kv[1].last_used, kv[0])):
            folder, _, name = key.partition("/")
            out.append(
                {
                    "key": key,
                    "folder": folder,
                    "name": name,
                    "size": e.size,
                    "last_used": e.last_used,
                    "in_use": self._in_use.get(key, 0) > 0,
                    "pinned": e.pinned,
                }
            )
        return out

    def partials(self) -> list[dict[str, Any]]:
        """Incomplete downloads on disk (``.part`` files), in flight or left over."""
        out = [{"key": k, "bytes": v, "in_flight": False} for k, v in self._parts.items()]
        for key in self._reserved:
            folder_path = self.models_dir / key
            part = folder_path.with_name(folder_path.name + PART_SUFFIX)
            size = part.stat().st_size if part.exists() else 0
            out.append({"key": key, "bytes": size, "in_flight": True})
        return sorted(out, key=lambda d: str(d["key"]))

    def used_bytes(self) -> int:
        return (
            sum(e.size for e in self._entries.values())
            + sum(self._parts.values())
            + sum(self._reserved.values())
        )

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "hits": self.request_hits,
            "misses": self.requests - self.request_hits,
            "hit_rate": (self.request_hits / self.requests) if self.requests else None,
            "bytes_requested": self.bytes_requested,
            "bytes_hit": self.bytes_hit,
            "byte_hit_rate": (self.bytes_hit / self.bytes_requested) if self.bytes_requested else None,
            "bytes_downloaded": self.bytes_downloaded,
            "downloads": self.downloads,
            "resumed_downloads": self.resumed_downloads,
            "failed_downloads": self.failed_downloads,
            "evictions": self.evictions,
            "bytes_evicted": self.bytes_evicted,
            "models": len(self._entries),
            "bytes_cached": sum(e.size for e in self._entries.values()),
            "bytes_used": self.used_bytes(),
            "budget_bytes": self.budget_bytes,
        }

    # ---------------------------------------------------------------- public operations

    async def ensure(self, models: list[dict[str, Any]]) -> FetchReport:
        """Make every model with a URL present; mark all of them in use until :meth:`release`.

        On failure the models are released again and :class:`ModelFetchError` is raised.
        """
        return await self._ensure(models, pin=False, hold=True)

    def release(self, models: list[dict[str, Any]]) -> None:
        """End one hold on each model (from :meth:`ensure`); unknown or unsafe names are ignored."""
        for m in models:
            try:
                key, _ = self.resolve(str(m["folder"]), str(m["name"]))
            except (ModelFetchError, KeyError):
                continue
            self._unhold(key)

    @contextlib.asynccontextmanager
    async def using(self, models: list[dict[str, Any]]) -> AsyncIterator[FetchReport]:
        report = await self.ensure(models)
        try:
            yield report
        finally:
            self.release(models)

    async def preload(self, models: list[dict[str, Any]]) -> FetchReport:
        """Download (as ``ensure``) and pin: pinned models are never evicted. Holds nothing."""
        return await self._ensure(models, pin=True, hold=False)

    def unpin(self, models: list[dict[str, Any]]) -> None:
        for m in models:
            try:
                key, _ = self.resolve(str(m["folder"]), str(m["name"]))
            except (ModelFetchError, KeyError):
                continue
            self._pins.discard(key)
            if key in self._entries:
                self._entries[key].pinned = False

    # ---------------------------------------------------------------- internals

    def _hold(self, key: str) -> None:
        self._in_use[key] = self._in_use.get(key, 0) + 1

    def _unhold(self, key: str) -> None:
        n = self._in_use.get(key, 0) - 1
        if n > 0:
            self._in_use[key] = n
        else:
            self._in_use.pop(key, None)

    async def _ensure(self, models: list[dict[str, Any]], *, pin: bool, hold: bool) -> FetchReport:
        t0 = time.perf_counter()
        resolved: list[tuple[dict[str, Any], str, Path]] = []
        for m in models:
            key, path = self.resolve(str(m["folder"]), str(m["name"]))
            resolved.append((m, key, path))
        held: list[str] = []
        if hold:
            for _, key, _ in resolved:
                self._hold(key)
                held.append(key)
        report = FetchReport()
        try:
            for m, key, path in resolved:
                report.items.append(await self._ensure_one(m, key, path, pin=pin))
        except BaseException:
            for key in held:
                self._unhold(key)
            raise
        report.seconds = time.perf_counter() - t0
        return report

    async def _ensure_one(self, m: dict[str, Any], key: str, target: Path, *, pin: bool) -> ModelFetch:
        t0 = time.perf_counter()
        folder, _, name = key.partition("/")
        url = m.get("url") or None
        size = int(m["size"]) if m.get("size") is not None else None
        sha256 = str(m["sha256"]).lower() if m.get("sha256") else None
        lock = self._locks.setdefault(key, asyncio.Lock())
        present_before = self._present(key, target, size)
        async with lock:
            if self._present(key, target, size):
                entry = self._entries[key]
                entry.last_used = self.clock()
                if pin:
                    entry.pinned = True
                    self._pins.add(key)
                status: Literal["hit", "miss"] = "hit" if present_before else "miss"
                self._count(status == "hit", entry.size)
                return ModelFetch(
                    key,
                    folder,
                    name,
                    status,
                    entry.size,
                    seconds=time.perf_counter() - t0,
                    shared=not present_before,
                )
            if url is None:
                return ModelFetch(key, folder, name, "absent", size, seconds=time.perf_counter() - t0)
            if target.exists():
                # a file of another size under this name: a stale or foreign copy, replaced
                log.warning("model %s on disk has the wrong size; fetching it again", key)
                target.unlink(missing_ok=True)
                self._entries.pop(key, None)
            fetch = ModelFetch(key, folder, name, "miss", size)
            try:
                total = await self._download(str(url), key, target, size, sha256, fetch)
            except BaseException:
                self.failed_downloads += 1
                raise
            self._entries[key] = _Entry(size=total, last_used=self.clock(), pinned=pin)
            if pin:
                self._pins.add(key)
            self.downloads += 1
            if fetch.resumed:
                self.resumed_downloads += 1
            fetch.size = total
            self._count(False, total)
            if size is None:
                self._enforce_budget()
            fetch.seconds = time.perf_counter() - t0
            return fetch

    def _present(self, key: str, target: Path, size: int | None) -> bool:
        if key not in self._entries:
            # adopt a file that appeared since the last rescan (copied in by hand, another tool)
            try:
                st = target.stat()
            except OSError:
                return False
            if not target.is_file():
                return False
            self._entries[key] = _Entry(size=st.st_size, last_used=self.clock())
        entry = self._entries[key]
        if not target.is_file():
            self._entries.pop(key, None)  # deleted behind our back
            return False
        return size is None or entry.size == size

    def _count(self, hit: bool, size: int) -> None:
        self.requests += 1
        self.bytes_requested += size
        if hit:
            self.request_hits += 1
            self.bytes_hit += size

    # budget ---------------------------------------------------------------------------

    def _cache_view(self, exclude: str | None = None) -> list[CachedModel]:
        view = [
            CachedModel(
                key=k,
                size=e.size,
                last_used=e.last_used,
                in_use=self._in_use.get(k, 0) > 0,
                pinned=e.pinned,
            )
            for k, e in self._entries.items()
        ]
        # leftover .part files of other models: idle, and older than any model
        view += [
            CachedModel(key=PART_SUFFIX + ":" + k, size=v, last_used=float("-inf"), in_use=False)
            for k, v in self._parts.items()
            if k != exclude
        ]
        view += [
            CachedModel(key="reserved:" + k, size=v, last_used=float("inf"), in_use=True)
            for k, v in self._reserved.items()
        ]
        return view

    def _reserve(self, key: str, incoming: int) -> None:
        """Make room for ``incoming`` bytes under ``key`` and reserve them. No await inside."""
        if self.budget_bytes is not None:
            view = self._cache_view(exclude=key)
            plan = plan_eviction(view, budget_bytes=self.budget_bytes, incoming_bytes=incoming)
            if plan is None:
                held = sum(m.size for m in view if not m.evictable)
                raise ModelFetchError(
                    f"disk budget too small: need {incoming} bytes for {key}, the budget is "
                    f"{self.budget_bytes} bytes and {held} bytes are held by models in use, pinned "
                    f"or being downloaded"
                )
            self._evict(plan)
        self._parts.pop(key, None)
        self._reserved[key] = incoming

    def _enforce_budget(self) -> None:
        if self.budget_bytes is None:
            return
        plan = plan_eviction(self._cache_view(), budget_bytes=self.budget_bytes, incoming_bytes=0)
        if plan is None:
            log.warning(
                "model cache is over its budget of %d bytes and nothing more can be evicted",
                self.budget_bytes,
            )
            return
        self._evict(plan)

    def _evict(self, keys: list[str]) -> None:
        for k in keys:
            if k.startswith(PART_SUFFIX + ":"):
                key = k[len(PART_SUFFIX) + 1 :]
                path = self.models_dir / key
                path.with_name(path.name + PART_SUFFIX).unlink(missing_ok=True)
                path.with_name(path.name + SIDECAR_SUFFIX).unlink(missing_ok=True)
                self.bytes_evicted += self._parts.pop(key, 0)
                log.info("evicted the incomplete download of %s", key)
                continue
            entry = self._entries.pop(k)
            assert self._in_use.get(k, 0) == 0 and not entry.pinned
            (self.models_dir / k).unlink(missing_ok=True)
            self.evictions += 1
            self.bytes_evicted += entry.size
            log.info("evicted %s (%d bytes)", k, entry.size)

    # downloads ------------------------------------------------------------------------

    async def _download(
        self, url: str, key: str, target: Path, size: int | None, sha256: str | None, fetch: ModelFetch
    ) -> int:
        """Fetch ``url`` into ``target`` (through ``.part``); returns the file's size."""
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + PART_SUFFIX)
        side = target.with_name(target.name + SIDECAR_SUFFIX)
        total = size
        ranges_ok = False
        if total is None or (self.parallel_ranges > 1 and total >= self.range_threshold):
            probed, ranges_ok = await self._probe(url, target.name)
            if total is None:
                total = probed
            elif probed is not None and probed != total:
                raise ModelFetchError(
                    f"{target.name}: the server has {probed} bytes, the catalog says {total}"
                )
        self._reserve(key, total or 0)
        try:
            if ranges_ok and total is not None and self.parallel_ranges > 1 and total >= self.range_threshold:
                await self._download_parallel(url, part, side, total, sha256, fetch)
            else:
                await self._download_sequential(url, part, side, total, sha256, fetch)
            final = part.stat().st_size
            os.replace(part, target)
            side.unlink(missing_ok=True)
            return final
        finally:
            self._reserved.pop(key, None)
            if part.exists():
                self._parts[key] = part.stat().st_size

    async def _probe(self, url: str, label: str) -> tuple[int | None, bool]:
        """``(total size or None, ranges supported)`` from ``GET`` with ``Range: bytes=0-0``."""
        try:
            async with self.http.stream("GET", url, headers={"Range": "bytes=0-0"}) as resp:
                if resp.status_code == 206:
                    m = _CONTENT_RANGE.match(resp.headers.get("content-range", ""))
                    if m and m.group(3) != "*":
                        return int(m.group(3)), True
                    return None, False
                if resp.status_code >= 400:
                    raise ModelFetchError(f"download of {label} failed: HTTP {resp.status_code}")
                length = resp.headers.get("content-length")
                return (int(length) if length and length.isdigit() else None), False
        except httpx.HTTPError as exc:
            raise ModelFetchError(f"download of {label} failed: {type(exc).__name__}: {exc}") from exc

    def _corrupt(self, part: Path, side: Path, message: str) -> ModelFetchError:
        part.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        return ModelFetchError(
            f"{message}; the download is corrupt and was deleted, a retry fetches it again"
        )

    def _verify(
        self, part: Path, side: Path, total: int | None, got: int, digest: Any, sha256: str | None
    ) -> None:
        if total is not None and got != total:
            raise self._corrupt(
                part, side, f"{part.name[: -len(PART_SUFFIX)]}: got {got} bytes, expected {total}"
            )
        if sha256 and digest.hexdigest() != sha256:
            raise self._corrupt(part, side, f"{part.name[: -len(PART_SUFFIX)]}: sha256 mismatch")

    async def _download_sequential(
        self, url: str, part: Path, side: Path, total: int | None, sha256: str | None, fetch: ModelFetch
    ) -> None:
        label = part.name[: -len(PART_SUFFIX)]
        if side.exists():  # a parallel download's .part has holes: it cannot be continued in order
            side.unlink()
            part.unlink(missing_ok=True)
        offset = part.stat().st_size if part.exists() else 0
        if total is not None and offset > total:
            part.unlink()
            offset = 0
        digest = hashlib.sha256()
        if total is not None and offset == total and offset > 0:
            await asyncio.to_thread(_hash_file, part, digest, self.chunk)  # whole already
            fetch.resumed = True
            self._verify(part, side, total, offset, digest, sha256)
            return
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        written = 0
        try:
            async with self.http.stream("GET", url, headers=headers) as resp:
                if offset and resp.status_code == 206:
                    m = _CONTENT_RANGE.match(resp.headers.get("content-range", ""))
                    if not m or int(m.group(1)) != offset:
                        raise ModelFetchError(f"download of {label}: the server resumed at the wrong offset")
                    await asyncio.to_thread(_hash_file, part, digest, self.chunk)
                    fetch.resumed = True
                    mode = "ab"
                    written = offset
                elif offset and resp.status_code == 416:
                    # nothing after the part's end: the part may be whole (size unknown here)
                    await asyncio.to_thread(_hash_file, part, digest, self.chunk)
                    fetch.resumed = True
                    self._verify(part, side, total, offset, digest, sha256)
                    return
                elif resp.status_code == 200:
                    mode = "wb"  # a fresh download, or a server that ignores Range: start over
                else:
                    raise ModelFetchError(f"download of {label} failed: HTTP {resp.status_code}")
                with part.open(mode) as out:
                    async for data in resp.aiter_bytes():
                        if total is not None and written + len(data) > total:
                            raise self._corrupt(
                                part, side, f"{label}: the server sent more than {total} bytes"
                            )
                        digest.update(data)
                        out.write(data)
                        written += len(data)
                        fetch.bytes_downloaded += len(data)
                        self.bytes_downloaded += len(data)
        except httpx.HTTPError as exc:
            raise ModelFetchError(
                f"download of {label} failed after {written} bytes: {type(exc).__name__}: {exc}"
                " (the partial file is kept and a retry resumes it)"
            ) from exc
        self._verify(part, side, total, written, digest, sha256)

    def _load_sidecar(self, side: Path, total: int, sha256: str | None) -> list[_Range] | None:
        try:
            data = json.loads(side.read_text())
            if data.get("size") != total or data.get("sha256") != sha256:
                return None
            ranges = [_Range(int(s), int(e), int(d)) for s, e, d in data["ranges"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not all(r.start <= r.done <= r.end for r in ranges):
            return None
        return ranges

    def _save_sidecar(self, side: Path, total: int, sha256: str | None, ranges: list[_Range]) -> None:
        tmp = side.with_name(side.name + ".tmp")
        tmp.write_text(
            json.dumps(
                {"size": total, "sha256": sha256, "ranges": [[r.start, r.end, r.done] for r in ranges]}
            )
        )
        os.replace(tmp, side)

    def _plan_ranges(self, start: int, total: int) -> list[_Range]:
        remaining = total - start
        n = max(1, min(self.parallel_ranges, -(-remaining // self.chunk)))
        step = -(-remaining // n)
        out = []
        pos = start
        while pos < total:
            end = min(total, pos + step)
            out.append(_Range(pos, end, pos))
            pos = end
        return out

    async def _download_parallel(
        self, url: str, part: Path, side: Path, total: int, sha256: str | None, fetch: ModelFetch
    ) -> None:
        label = part.name[: -len(PART_SUFFIX)]
        ranges = self._load_sidecar(side, total, sha256) if side.exists() and part.exists() else None
        if ranges is not None:
            fetch.resumed = any(r.done > r.start for r in ranges)
        else:
            if side.exists():  # stale or unreadable: the part's content is unknown
                side.unlink()
                part.unlink(missing_ok=True)
            prefix = part.stat().st_size if part.exists() else 0  # a sequential try left a prefix
            if prefix > total:
                part.unlink()
                prefix = 0
            fetch.resumed = prefix > 0
            ranges = ([_Range(0, prefix, prefix)] if prefix else []) + self._plan_ranges(prefix, total)
            self._save_sidecar(side, total, sha256, ranges)  # before sizing the part, see module doc
        with part.open("ab") as f:
            f.truncate(total)
        todo = [r for r in ranges if r.done < r.end]
        fetch.ranges = len(todo)
        fd = os.open(part, os.O_WRONLY)
        try:
            async with asyncio.TaskGroup() as tg:
                for r in todo:
                    tg.create_task(self._fetch_range(url, fd, r, ranges, side, total, sha256, fetch, label))
        except BaseExceptionGroup as eg:
            first = eg.exceptions[0]
            if isinstance(first, ModelFetchError):
                raise first from None
            raise ModelFetchError(f"download of {label} failed: {type(first).__name__}: {first}") from first
        finally:
            os.close(fd)
            self._save_sidecar(side, total, sha256, ranges)
        digest = hashlib.sha256()
        await asyncio.to_thread(_hash_file, part, digest, self.chunk)
        self._verify(part, side, total, part.stat().st_size, digest, sha256)

    async def _fetch_range(
        self,
        url: str,
        fd: int,
        r: _Range,
        ranges: list[_Range],
        side: Path,
        total: int,
        sha256: str | None,
        fetch: ModelFetch,
        label: str,
    ) -> None:
        unsaved = 0
        try:
            headers = {"Range": f"bytes={r.done}-{r.end - 1}"}
            async with self.http.stream("GET", url, headers=headers) as resp:
                if resp.status_code != 206:
                    raise ModelFetchError(
                        f"download of {label}: a range request was answered HTTP {resp.status_code}"
                    )
                m = _CONTENT_RANGE.match(resp.headers.get("content-range", ""))
                if not m or int(m.group(1)) != r.done:
                    raise ModelFetchError(f"download of {label}: the server answered the wrong range")
                async for data in resp.aiter_bytes():
                    if r.done + len(data) > r.end:
                        raise ModelFetchError(f"download of {label}: the server sent more than the range")
                    _pwrite_all(fd, data, r.done)
                    r.done += len(data)
                    fetch.bytes_downloaded += len(data)
                    self.bytes_downloaded += len(data)
                    unsaved += len(data)
                    if unsaved >= _SIDECAR_SAVE_EVERY * self.chunk:
                        self._save_sidecar(side, total, sha256, ranges)
                        unsaved = 0
            if r.done != r.end:
                raise ModelFetchError(f"download of {label}: a range ended early at {r.done} of {r.end}")
        except httpx.HTTPError as exc:
            raise ModelFetchError(
                f"download of {label} failed: {type(exc).__name__}: {exc} (progress is kept; a retry resumes)"
            ) from exc
        finally:
            self._save_sidecar(side, total, sha256, ranges)
