"""Which execution backend runs a job: the self-hosted pool or ComfyUI Deploy (a traffic split).

The choice is a pure function of the job id and the tool's split, so it is sticky: the same job
always goes the same way, whichever replica asks and however often.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Backend = Literal["pool", "comfydeploy"]
BACKENDS: tuple[Backend, ...] = ("pool", "comfydeploy")


def choose_backend(job_id: str, comfydeploy_percent: int) -> Backend:
    """`comfydeploy_percent` of jobs (by a hash of their id, uniform) go to ComfyUI Deploy."""
    if comfydeploy_percent <= 0:
        return "pool"
    if comfydeploy_percent >= 100:
        return "comfydeploy"
    bucket = int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big") % 100
    return "comfydeploy" if bucket < comfydeploy_percent else "pool"
