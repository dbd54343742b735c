"""Fetch the models a job needs into ComfyUI's model folders.

The cache itself (downloads through ``.part`` + SHA-256 + rename, resume, parallel ranges, a disk
budget with LRU eviction) is :class:`swarmstation.worker.cache.ModelCache`. This module keeps the
older names importable: :class:`ModelFetchError`, and :class:`ModelFetcher`, a ``ModelCache``
whose ``ensure`` returns how many models it downloaded and holds nothing in use afterwards.
"""

from __future__ import annotations

from typing import Any

from swarmstation.worker.cache import FetchReport, ModelCache, ModelFetchError

__all__ = ["FetchReport", "ModelCache", "ModelFetchError", "ModelFetcher"]


class ModelFetcher(ModelCache):
    """The old interface: ``await ensure(models) -> int`` (models downloaded by this call)."""

    async def ensure(self, models: list[dict[str, Any]]) -> int:  # type: ignore[override]
        report = await self._ensure(models, pin=False, hold=False)
        return report.downloaded
