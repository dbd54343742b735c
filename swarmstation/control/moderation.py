"""LoRA moderation use cases: import, approve, reject, and the background staging of approved files.

Every change of a LoRA's moderation state goes through the table in domain/moderation.py.

Approval answers at once: it moves the LoRA to `staging`, and `LoraStager` (a leader loop,
registered in api/app.py) downloads, verifies and stores the file, writing its progress on the
LoRA (`staging_bytes_done` / `staging_bytes_total`), then moves it to `approved`, or to
`deployment_failed` with the reason in `failure_reason`. Staging is content-addressed and so
idempotent: a LoRA found in `staging` with nobody working on it (the leader restarted, or
another replica took over) is simply staged again from the start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from swarmstation.config import Settings, reveal
from swarmstation.control import loras as registry
from swarmstation.control.leader import LeaderLock
from swarmstation.domain.errors import NotFound
from swarmstation.domain.moderation import MODERATION, ModerationState, ModerationTrigger
from swarmstation.loras.sources import CivitaiClient, HuggingFaceClient, ImportedLora, fetch_metadata
from swarmstation.loras.staging import StagedFile, StagingError, stage_file
from swarmstation.objectstore.base import ObjectStore
from swarmstation.store import lora_queries
from swarmstation.store.db import transaction
from swarmstation.store.models import Lora, User

log = logging.getLogger(__name__)

# Stagings run side by side, each in a thread of its own, up to this many.
MAX_CONCURRENT_STAGINGS = 4
# Progress is written to the LoRA at most this often (a 4 GiB download is thousands of chunks).
PROGRESS_INTERVAL_SECONDS = 0.25
# How long `stop` waits for running stagings to notice and end.
STOP_TIMEOUT_SECONDS = 10.0


def _lora(s: Session, slug: str) -> Lora:
    lora = lora_queries.lora_by_slug(s, slug)
    if lora is None:
        raise NotFound(f"unknown LoRA '{slug}'")
    return lora


# -- use cases -----------------------------------------------------------------------------------
def fetch_import(settings: Settings, url: str) -> ImportedLora:
    """The metadata a Civitai or Hugging Face URL names (outbound I/O: call it off the event loop)."""
    policy = registry.outbound_policy(settings)
    civitai = CivitaiClient(settings.civitai_base_url, reveal(settings.civitai_token), policy=policy)
    hf = HuggingFaceClient(settings.huggingface_base_url, reveal(settings.huggingface_token), policy=policy)
    try:
        return fetch_metadata(url, civitai=civitai, huggingface=hf)
    finally:
        civitai.close()
        hf.close()


def import_lora(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    url: str,
    owner_id: str,
    visibility: str,
    clock: Callable[[], datetime],
) -> Lora:
    """Fetch a LoRA's metadata, then record it `pending_review`. No transaction is open while the
    source is asked. LoraImportError (422) for a URL that cannot become a LoRA, Conflict when it
    was imported before."""
    meta = fetch_import(settings, url)
    with transaction(sessions) as s:
        owner = s.get(User, owner_id)
        if owner is None:
            raise NotFound("the importing user no longer exists")
        lora = registry.create_imported(s, meta, owner=owner, visibility=visibility, now=clock())
        s.flush()
        return lora


def approve(s: Session, slug: str, *, admin_id: str, visibility: str | None, now: datetime) -> Lora:
    """An admin approves: the LoRA moves to `staging` (a failed one is retried) and the stager
    takes it from there; approving a LoRA that is staging or approved changes nothing but its
    visibility. IllegalTransition (409) for a rejected one."""
    lora = _lora(s, slug)
    before = MODERATION.apply(lora, ModerationTrigger.APPROVE)
    if before != lora.state:
        lora.staging_bytes_done, lora.staging_bytes_total = 0, lora.file_size
        lora.failure_reason = ""
        lora.reviewed_by, lora.reviewed_at = admin_id, now
    if visibility is not None:
        # Others see a LoRA only once it is approved, so setting this before staging ends is safe.
        lora.visibility = visibility
    lora.updated_at = now
    registry.bump_version(s)
    return lora


def reject(s: Session, slug: str, *, admin_id: str, reason: str, now: datetime) -> Lora:
    """An admin rejects, from any state; a staging under way is abandoned (the stager sees it)."""
    lora = _lora(s, slug)
    MODERATION.apply(lora, ModerationTrigger.REJECT)
    lora.moderation_reason = reason
    lora.reviewed_by, lora.reviewed_at, lora.updated_at = admin_id, now, now
    registry.bump_version(s)
    return lora


# -- background staging ----------------------------------------------------------------------------
class _Abandoned(Exception):
    """Raised from the progress callback to end a download: the LoRA left `staging` (rejected),
    or this replica is stopping or no longer leads (the next leader stages it again)."""


class LoraStager:
    """Stages every LoRA in `staging`, each in a thread of its own. `tick` runs on the leader
    (ControlLoops.extra); it only starts threads, so it returns at once."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        store: ObjectStore,
        clock: Callable[[], datetime],
        leader: LeaderLock | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = store
        self.clock = clock
        self.leader = leader
        self._lock = threading.Lock()
        self._active: dict[str, threading.Thread] = {}
        self._stopping = threading.Event()

    @property
    def active(self) -> set[str]:
        with self._lock:
            return set(self._active)

    def tick(self) -> None:
        if self._stopping.is_set():
            return
        with transaction(self.sessions) as s:
            waiting = [lora.id for lora in lora_queries.loras_in_state(s, ModerationState.STAGING)]
        with self._lock:
            for lora_id in waiting:
                if lora_id in self._active or len(self._active) >= MAX_CONCURRENT_STAGINGS:
                    continue
                thread = threading.Thread(
                    target=self._run, args=(lora_id,), name=f"lora-staging-{lora_id[:8]}", daemon=True
                )
                self._active[lora_id] = thread
                thread.start()

    def start(self) -> None:
        """Allow stagings again (after a `stop`: the app's lifespan may run more than once)."""
        self._stopping.clear()

    def stop(self) -> None:
        """End running stagings (they stay `staging`, for the next leader) and wait for them."""
        self._stopping.set()
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        with self._lock:
            running = list(self._active.values())
        for thread in running:
            thread.join(max(0.0, deadline - time.monotonic()))

    def should_stop(self) -> bool:
        return self._stopping.is_set() or (self.leader is not None and not self.leader.held)

    def _run(self, lora_id: str) -> None:
        try:
            self.stage(lora_id)
        except Exception:
            log.exception("staging LoRA %s failed unexpectedly", lora_id)
        finally:
            with self._lock:
                self._active.pop(lora_id, None)

    def stage(self, lora_id: str) -> None:
        """Stage one LoRA now, in this thread (the loop's threads call this; tests may too)."""
        with transaction(self.sessions) as s:
            lora = s.get(Lora, lora_id)
            if lora is None or lora.state != ModerationState.STAGING:
                return
            url, sha, kind, declared = lora.source_url, lora.file_sha256, lora.source_kind, lora.file_size
            lora.staging_bytes_done, lora.staging_bytes_total = 0, declared
        if not url:
            self._finish(lora_id, failure="no download URL")
            return
        progress = _ProgressWriter(self, lora_id, declared)
        try:
            staged = stage_file(
                url,
                self.store,
                expected_sha256=sha,
                max_bytes=self.settings.lora_max_bytes,
                policy=registry.outbound_policy(self.settings),
                credentials=registry.staging_credentials(self.settings, kind),
                progress=progress,
            )
        except _Abandoned:
            log.info("staging LoRA %s abandoned (rejected, or this replica stops leading)", lora_id)
            return
        except StagingError as exc:
            self._finish(lora_id, failure=str(exc))
            return
        except Exception as exc:
            # An object store outage or a bug: end in a state an admin can retry, never loop.
            log.warning("staging LoRA %s failed: %s: %s", lora_id, type(exc).__name__, exc)
            self._finish(lora_id, failure=f"staging failed: {type(exc).__name__}: {exc}")
            return
        self._finish(lora_id, staged=staged)

    def _finish(self, lora_id: str, *, staged: StagedFile | None = None, failure: str = "") -> None:
        with transaction(self.sessions) as s:
            lora = s.get(Lora, lora_id, with_for_update=True)
            if lora is None or lora.state != ModerationState.STAGING:
                return  # rejected meanwhile, or another replica finished first: keep what it says
            if staged is None:
                MODERATION.apply(lora, ModerationTrigger.STAGING_FAILED)
                lora.failure_reason = failure
            else:
                MODERATION.apply(lora, ModerationTrigger.STAGED)
                lora.failure_reason = ""
                lora.object_key, lora.file_sha256, lora.file_size = staged.key, staged.sha256, staged.size
                lora.final_url = staged.final_url
                lora.staging_bytes_done = lora.staging_bytes_total = staged.size
            lora.updated_at = self.clock()
            registry.bump_version(s)

    def write_progress(self, lora_id: str, done: int, total: int | None) -> bool:
        """Record progress; False when the LoRA is no longer `staging` (the download should end)."""
        with transaction(self.sessions) as s:
            result = s.execute(
                update(Lora)
                .where(Lora.id == lora_id, Lora.state == ModerationState.STAGING)
                .values(staging_bytes_done=done, staging_bytes_total=total)
            )
            return bool(getattr(result, "rowcount", 0))


class _ProgressWriter:
    """stage_file's progress callback: writes to the LoRA now and then, and ends the download
    (raising _Abandoned) when the stager stops or the LoRA left `staging`."""

    def __init__(self, stager: LoraStager, lora_id: str, declared_total: int | None) -> None:
        self.stager = stager
        self.lora_id = lora_id
        self.declared_total = declared_total
        self._last = time.monotonic()

    def __call__(self, done: int, total: int | None) -> None:
        if self.stager.should_stop():
            raise _Abandoned()
        now = time.monotonic()
        if now - self._last < PROGRESS_INTERVAL_SECONDS:
            return
        self._last = now
        if not self.stager.write_progress(self.lora_id, done, total or self.declared_total):
            raise _Abandoned()
