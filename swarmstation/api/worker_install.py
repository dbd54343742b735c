"""What the bootstrap of a rented instance fetches before it installs the worker
(providers/install.py): the control plane's lock file, as pip constraints."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from swarmstation.api.deps import CurrentInstance, State
from swarmstation.providers.install import constraints_from_lock, lock_path

router = APIRouter(prefix="/worker/v1", tags=["worker"])


@router.get("/constraints", response_class=PlainTextResponse)
async def constraints(state: State, _: CurrentInstance) -> PlainTextResponse:
    """The control plane's dependency pins (`name==version` a line, no hashes), for
    `pip install -c`. Empty when this control plane has no lock file (a wheel install without
    `worker_constraints_file`): the worker then gets swarmstation's own version pin only."""
    path = lock_path(state.settings.worker_constraints_file)
    text = await asyncio.to_thread(path.read_text) if path is not None else ""
    return PlainTextResponse(constraints_from_lock(text))
