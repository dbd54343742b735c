"""GPU offers on a marketplace: which ones a pool accepts, and in what order to try them.

Pure: the provider client searches, this module filters and ranks, the client tries the offers
in order (an offer taken between search and create → the next one).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OfferFilters:
    """A pool's requirements of a rented machine."""

    gpu_names: tuple[str, ...] = ()  # e.g. ("RTX 4090", "RTX 3090"); empty = any
    min_vram_gb: float = 0.0
    max_price_per_hour: float | None = None
    min_reliability: float = 0.0  # 0..1
    verified_only: bool = True
    min_cuda: float | None = None
    excluded_regions: tuple[str, ...] = ()  # country codes or region names to avoid
    num_gpus: int = 1
    disk_gb: float = 40.0
