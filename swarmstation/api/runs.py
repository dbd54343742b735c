"""Pipelines as runs: validate a pipeline, start a run, watch, cancel and retry it (control/runs.py)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["pipelines"])
