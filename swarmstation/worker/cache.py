"""The worker's model cache: ComfyUI's model folders, filled on demand, under a disk budget.

Layout. A model ``{"folder": "loras", "name": "sdxl/a.safetensors"}`` lives at
``<comfy_dir>/models/loras/sdxl/a.safetensors``; its key is that path relative to ``models/``
(``loras/sdxl/a.safetensors``). Folder and name are normalised first (no ``..``, no absolute
paths), see :func:`swarmstation.domain.workflow.normalise_model_name`.

Downloads (``ensure``/``preload``/``using``) are :class:`swarmstation.worker.downloads.Downloader`'s
(``.part`` + atomic rename, resume with Range, parallel ranges, SHA-256); this module decides
which models to fetch and makes room for them. One download per key however many jobs ask at
once: a per-key ``asyncio.Lock``; the jobs that waited find the file in place (reported as a
``shared`` miss, not downloaded again).

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
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from swarmstation.domain.cache import CachedModel, plan_eviction
from swarmstation.domain.workflow import WorkflowError, normalise_model_name
from swarmstation.worker.downloads import (
    PART_SUFFIX,
    SIDECAR_SUFFIX,
    Downloader,
    DownloadProgress,
    MiB,
    ModelFetchError,
    part_path,
    sidecar_path,
)

log = logging.getLogger(__name__)

# ComfyUI's weight extensions (protocols.md §1.9) plus .gguf (custom loaders). Files with other
# extensions under models/ (put_*_here markers, configs) are not cache entries on rescan.
MODEL_EXTENSIONS = frozenset(
    {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft", ".gguf"}
)


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
        self.downloader = Downloader(
            http, parallel_ranges=parallel_ranges, range_threshold=range_threshold, chunk=chunk
        )
        self.budget_bytes = budget_bytes
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
            part = part_path(self.models_dir / key)
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
            "bytes_downloaded": self.downloader.bytes_downloaded,
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
            progress = DownloadProgress()
            try:
                total = await self._download(str(url), key, target, size, sha256, progress)
            except BaseException:
                self.failed_downloads += 1
                raise
            fetch = ModelFetch(
                key,
                folder,
                name,
                "miss",
                total,
                bytes_downloaded=progress.bytes_downloaded,
                resumed=progress.resumed,
                ranges=progress.ranges,
            )
            self._entries[key] = _Entry(size=total, last_used=self.clock(), pinned=pin)
            if pin:
                self._pins.add(key)
            self.downloads += 1
            if fetch.resumed:
                self.resumed_downloads += 1
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
                part_path(self.models_dir / key).unlink(missing_ok=True)
                sidecar_path(self.models_dir / key).unlink(missing_ok=True)
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
        self,
        url: str,
        key: str,
        target: Path,
        size: int | None,
        sha256: str | None,
        progress: DownloadProgress,
    ) -> int:
        """Fetch ``url`` into ``target`` with the space reserved meanwhile; returns the file's size."""
        plan = await self.downloader.plan(url, target.name, size)
        self._reserve(key, plan.total or 0)
        try:
            return await self.downloader.fetch(url, target, plan, sha256, progress)
        finally:
            self._reserved.pop(key, None)
            part = part_path(target)
            if part.exists():
                self._parts[key] = part.stat().st_size
