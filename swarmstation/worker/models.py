"""Fetch the models a job needs into ComfyUI's model folders.

Each file is downloaded through a presigned URL to a temporary name with a non-model extension
(ComfyUI never lists it), its SHA-256 checked while streaming, then renamed into place, so
ComfyUI sees a model whole or not at all. Concurrent requests for one file share one download.
(Issue 5 grows this into a cache with a disk budget and eviction.)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import httpx

from swarmstation.domain.workflow import WorkflowError, normalise_model_name


class ModelFetchError(Exception):
    pass


class ModelFetcher:
    def __init__(self, comfy_dir: Path, http: httpx.AsyncClient) -> None:
        self.models_dir = comfy_dir / "models"
        self.http = http
        self._locks: dict[Path, asyncio.Lock] = {}
        self.bytes_downloaded = 0

    def path_for(self, folder: str, name: str) -> Path:
        try:
            rel = normalise_model_name(name)
            folder = normalise_model_name(folder)
        except WorkflowError as exc:
            raise ModelFetchError(f"refusing model path {folder}/{name}: {exc}") from exc
        return self.models_dir / folder / rel

    async def ensure(self, models: list[dict[str, Any]]) -> int:
        """Make sure every model with a URL is on disk; returns how many were downloaded."""
        fetched = 0
        for m in models:
            if not m.get("url"):
                continue  # ComfyUI must already have it; its validation says so if not
            if await self._ensure_one(m):
                fetched += 1
        return fetched

    async def _ensure_one(self, m: dict[str, Any]) -> bool:
        target = self.path_for(str(m["folder"]), str(m["name"]))
        lock = self._locks.setdefault(target, asyncio.Lock())
        async with lock:
            size = m.get("size")
            if target.is_file() and (size is None or target.stat().st_size == size):
                return False
            await self._download(str(m["url"]), target, m.get("sha256"))
            return True

    async def _download(self, url: str, target: Path, sha256: str | None) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        digest = hashlib.sha256()
        try:
            async with self.http.stream("GET", url) as resp:
                if resp.status_code >= 400:
                    raise ModelFetchError(f"download of {target.name} failed: HTTP {resp.status_code}")
                with part.open("wb") as out:
                    async for chunk in resp.aiter_bytes(1024 * 1024):
                        digest.update(chunk)
                        out.write(chunk)
                        self.bytes_downloaded += len(chunk)
        except httpx.HTTPError as exc:
            part.unlink(missing_ok=True)
            raise ModelFetchError(f"download of {target.name} failed: {type(exc).__name__}") from exc
        if sha256 and digest.hexdigest() != sha256.lower():
            part.unlink(missing_ok=True)
            raise ModelFetchError(f"{target.name}: sha256 mismatch, the download is corrupt")
        os.replace(part, target)
