"""The traffic split: which executor runs a job, our pool or ComfyUI Deploy.

Words: an *executor* is where a job runs (`pool`: our instances; `comfydeploy`: the managed
service); the *traffic split* is a tool's share of jobs sent to ComfyUI Deploy
(`Tool.comfydeploy_percent`). The job's column and API field keep their first name, `backend`,
and hold an `Executor`.

The choice is a pure function of the job id and the tool's split, so it is sticky: the same job
always goes the same way, whichever replica asks and however often.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Executor = Literal["pool", "comfydeploy"]
EXECUTORS: tuple[Executor, ...] = ("pool", "comfydeploy")


def choose_executor(job_id: str, comfydeploy_percent: int) -> Executor:
    """`comfydeploy_percent` of jobs (by a hash of their id, uniform) go to ComfyUI Deploy."""
    if comfydeploy_percent <= 0:
        return "pool"
    if comfydeploy_percent >= 100:
        return "comfydeploy"
    bucket = int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big") % 100
    return "comfydeploy" if bucket < comfydeploy_percent else "pool"
