"""Downloading one model file: probe, sequential or parallel ranges, resume, SHA-256.

A :class:`Downloader` knows nothing of budgets, entries or which job wants a file; the cache
(:class:`swarmstation.worker.cache.ModelCache`) decides *whether* to download and reserves the
space between :meth:`Downloader.plan` and :meth:`Downloader.fetch`.

- A model is written to ``<name>.part`` beside its final name (``.part`` is not a model
  extension, so ComfyUI never lists a half-written file), checked, then renamed into place with
  ``os.replace`` (atomic): ComfyUI sees the whole file or nothing.
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
  once (in a thread). Ranges are at least ``chunk`` bytes each, so a file under ``2 * chunk``
  uses one range.
- Corruption: a SHA-256 mismatch, or more or fewer bytes than the model's size, deletes the
  ``.part`` (and its ``.part.json``) and raises :class:`ModelFetchError`; the caller retries and
  the retry fetches from scratch.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from swarmstation.domain.errors import SwarmError

MiB = 1024 * 1024
PART_SUFFIX = ".part"
SIDECAR_SUFFIX = ".part.json"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_SIDECAR_SAVE_EVERY = 16  # chunks


class ModelFetchError(SwarmError):
    """A model could not be made available; the job may be retried."""

    code = "model_fetch_failed"


def part_path(target: Path) -> Path:
    """Where the download of ``target`` is written until it is whole and checked."""
    return target.with_name(target.name + PART_SUFFIX)


def sidecar_path(target: Path) -> Path:
    """The record of a parallel download's ranges, beside its ``.part``."""
    return target.with_name(target.name + SIDECAR_SUFFIX)


@dataclass
class DownloadProgress:
    """What one download did, filled in as the bytes arrive (so a failed one still tells)."""

    bytes_downloaded: int = 0
    resumed: bool = False
    ranges: int = 0  # parallel ranges fetched by this try; 0 for a sequential download


@dataclass(frozen=True)
class DownloadPlan:
    """How to fetch a file: its size when the catalog or the probe knows it, and whether in ranges."""

    total: int | None
    parallel: bool


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


class Downloader:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        parallel_ranges: int = 4,
        range_threshold: int = 64 * MiB,
        chunk: int = 1 * MiB,
    ) -> None:
        self.http = http
        self.parallel_ranges = max(1, parallel_ranges)
        self.range_threshold = range_threshold
        self.chunk = max(1, chunk)
        self.bytes_downloaded = 0  # by every download, counted as the bytes arrive

    async def plan(self, url: str, label: str, size: int | None) -> DownloadPlan:
        """Probe the server when the size is unknown or the file is large enough for ranges."""
        total = size
        ranges_ok = False
        if total is None or (self.parallel_ranges > 1 and total >= self.range_threshold):
            probed, ranges_ok = await self.probe(url, label)
            if total is None:
                total = probed
            elif probed is not None and probed != total:
                raise ModelFetchError(f"{label}: the server has {probed} bytes, the catalog says {total}")
        parallel = (
            ranges_ok and total is not None and self.parallel_ranges > 1 and total >= self.range_threshold
        )
        return DownloadPlan(total=total, parallel=parallel)

    async def fetch(
        self, url: str, target: Path, plan: DownloadPlan, sha256: str | None, progress: DownloadProgress
    ) -> int:
        """Fetch ``url`` into ``target`` (through ``.part``) as ``plan`` says; returns the file's size."""
        target.parent.mkdir(parents=True, exist_ok=True)
        part = part_path(target)
        side = sidecar_path(target)
        if plan.parallel and plan.total is not None:
            await self._download_parallel(url, part, side, plan.total, sha256, progress)
        else:
            await self._download_sequential(url, part, side, plan.total, sha256, progress)
        final = part.stat().st_size
        os.replace(part, target)
        side.unlink(missing_ok=True)
        return final

    async def probe(self, url: str, label: str) -> tuple[int | None, bool]:
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

    # ---------------------------------------------------------------- checks

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

    def _received(self, progress: DownloadProgress, n: int) -> None:
        progress.bytes_downloaded += n
        self.bytes_downloaded += n

    # ---------------------------------------------------------------- sequential

    async def _download_sequential(
        self,
        url: str,
        part: Path,
        side: Path,
        total: int | None,
        sha256: str | None,
        progress: DownloadProgress,
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
            progress.resumed = True
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
                    progress.resumed = True
                    mode = "ab"
                    written = offset
                elif offset and resp.status_code == 416:
                    # nothing after the part's end: the part may be whole (size unknown here)
                    await asyncio.to_thread(_hash_file, part, digest, self.chunk)
                    progress.resumed = True
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
                        self._received(progress, len(data))
        except httpx.HTTPError as exc:
            raise ModelFetchError(
                f"download of {label} failed after {written} bytes: {type(exc).__name__}: {exc}"
                " (the partial file is kept and a retry resumes it)"
            ) from exc
        self._verify(part, side, total, written, digest, sha256)

    # ---------------------------------------------------------------- parallel ranges

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
        self, url: str, part: Path, side: Path, total: int, sha256: str | None, progress: DownloadProgress
    ) -> None:
        label = part.name[: -len(PART_SUFFIX)]
        ranges = self._load_sidecar(side, total, sha256) if side.exists() and part.exists() else None
        if ranges is not None:
            progress.resumed = any(r.done > r.start for r in ranges)
        else:
            if side.exists():  # stale or unreadable: the part's content is unknown
                side.unlink()
                part.unlink(missing_ok=True)
            prefix = part.stat().st_size if part.exists() else 0  # a sequential try left a prefix
            if prefix > total:
                part.unlink()
                prefix = 0
            progress.resumed = prefix > 0
            ranges = ([_Range(0, prefix, prefix)] if prefix else []) + self._plan_ranges(prefix, total)
            self._save_sidecar(side, total, sha256, ranges)  # before sizing the part, see module doc
        with part.open("ab") as f:
            f.truncate(total)
        todo = [r for r in ranges if r.done < r.end]
        progress.ranges = len(todo)
        fd = os.open(part, os.O_WRONLY)
        try:
            async with asyncio.TaskGroup() as tg:
                for r in todo:
                    tg.create_task(
                        self._fetch_range(url, fd, r, ranges, side, total, sha256, progress, label)
                    )
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
        progress: DownloadProgress,
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
                    self._received(progress, len(data))
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
