"""The scheduler pass's clock: a job is never assigned before it was submitted.

`swarmstation bench` once reported a negative submit→assign time: the pass read the clock, then
waited for SQLite's one connection while a submission committed, and stamped that job's
assignment with the older time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from swarmstation.api.app import build
from swarmstation.config import Settings
from swarmstation.store.db import transaction
from swarmstation.store.models import Job, utcnow
from tests.helpers import add_instance, add_user, submit


def test_a_pass_that_waits_for_the_database_stamps_assignments_after_the_submission(
    tmp_path: Path,
) -> None:
    cp = build(
        Settings(
            data_dir=tmp_path / "data",
            provider="none",
            scheduler_interval_seconds=60,
            control_interval_seconds=60,
        ),
        provider=None,
    )
    try:
        with transaction(cp.state.sessions) as s:
            user, _ = add_user(s, utcnow())
            add_instance(s, utcnow())
        holding = threading.Event()
        job_ids: list[str] = []

        def submit_slowly() -> None:
            with transaction(cp.state.sessions) as s:
                s.connection()  # SQLite: the one connection, and the write lock
                holding.set()
                time.sleep(0.3)
                job_ids.append(submit(s, user, utcnow()).id)

        writer = threading.Thread(target=submit_slowly)
        writer.start()
        assert holding.wait(5)
        result = cp.state.loops._run_pass(sweep=False)  # waits for the writer's commit
        writer.join()
        assert result.changed_jobs == set(job_ids)
        with transaction(cp.state.sessions) as s:
            job = s.get(Job, job_ids[0])
            assert job is not None and job.assigned_at is not None
            assert job.assigned_at >= job.created_at, (job.created_at, job.assigned_at)
    finally:
        cp.state.engine.dispose()
