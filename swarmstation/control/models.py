"""The model catalog: where each model file can be fetched from, for workers and preloads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from swarmstation.store.models import Lora, Model


def model_sources(s: Session, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(folder, name) → {key | url, sha256, size} for the models the catalog (or, for LoRAs, the
    registry) can supply. Models it cannot supply are left out: ComfyUI must already have them."""
    pairs = sorted(set(wanted))
    if not pairs:
        return {}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for m in s.scalars(select(Model).where(tuple_(Model.folder, Model.name).in_(pairs))):
        source: dict[str, Any] = {"key": m.object_key} if m.source_kind == "object" else {"source_url": m.url}
        out[(m.folder, m.name)] = {**source, "sha256": m.sha256, "size": m.size}
    lora_names = [name for folder, name in pairs if folder == "loras" and (folder, name) not in out]
    if lora_names:
        for lo in s.scalars(select(Lora).where(Lora.file_name.in_(lora_names), Lora.object_key.is_not(None))):
            out[("loras", lo.file_name)] = {
                "key": lo.object_key,
                "sha256": lo.file_sha256,
                "size": lo.file_size,
            }
    return out
