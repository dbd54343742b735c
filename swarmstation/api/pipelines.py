"""Saved pipelines: save, version, list, search and share them (control/saved_pipelines.py)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["pipelines"])
