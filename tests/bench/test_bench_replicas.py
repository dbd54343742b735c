"""`bench --lean --replicas N`: serve replicas on one PostgreSQL behind the bench's proxy, one
leader, no job assigned twice, the ratio to one replica behind the same proxy."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from swarmstation.bench.control_plane import assignment_counts
from tests.bench.run import bench_json
from tests.conftest import POSTGRES_URL
from tests.e2e.conftest import BIN


def test_an_assignment_counts_twice_only_without_a_return_to_the_queue() -> None:
    events = [
        ("a", "QUEUED", None),  # submitted
        ("a", "ASSIGNED", "ASSIGN"),
        ("a", "RUNNING", "START"),
        ("a", "QUEUED", "LEASE_EXPIRED"),  # a legitimate retry
        ("a", "ASSIGNED", "ASSIGN"),
        ("a", "COMPLETED", "COMPLETE"),
        ("b", "QUEUED", None),
        ("b", "ASSIGNED", "ASSIGN"),
        ("b", "ASSIGNED", "ASSIGN"),  # two schedulers handed out the same queued job
        ("c", "QUEUED", None),
        ("c", "ASSIGNED", "ASSIGN"),
    ]
    assert assignment_counts(events) == (1, 1)
    assert assignment_counts([]) == (0, 0)


def test_replicas_need_postgresql_and_the_lean_load(tmp_path: Path) -> None:
    for args, message in [
        (["--lean", "--replicas", "2"], "PostgreSQL"),
        (["--replicas", "2", "--database-url", "postgresql://127.0.0.1/x"], "--lean"),
        (["--lean", "--users", "4"], "--replicas"),
        (["--floor", "--idle"], "separate"),
    ]:
        result = subprocess.run(
            [str(BIN), "bench", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert result.returncode == 2, result.stderr[-2000:]
        assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.postgres
def test_two_replicas_one_leader_no_job_twice_and_the_ratio(tmp_path: Path) -> None:
    if os.environ.get("SWARMSTATION_SKIP_POSTGRES") == "1":
        pytest.skip("SWARMSTATION_SKIP_POSTGRES=1")
    args = [
        "--lean",
        "--replicas",
        "2",
        "--workers",
        "3",
        "--jobs",
        "12",
        "--concurrency",
        "3",
        "--users",
        "2",
    ]
    figures = bench_json(tmp_path, *args, "--database-url", POSTGRES_URL, timeout=300)
    one = figures["one_replica"]
    assert figures["mode"] == "replicas" and figures["replicas"] == 2 and one["replicas"] == 1
    assert figures["users"] == 2
    for run in (figures, one):
        assert run["completed"] == 12 and run["failed"] == 0
        assert run["leaders"] == 1, run["scheduler_passes"]
        assert run["jobs_assigned_twice"] == 0
        assert run["control_plane_cpu_ms_per_job"]["total"] > 0
        assert 0 < run["machine_cpu_busy_percent"] <= 100
    assert len(figures["control_plane_cpu_ms_per_job"]["per_replica"]) == 2
    assert all(cpu > 0 for cpu in figures["control_plane_cpu_ms_per_job"]["per_replica"])
    assert figures["ratio_to_one_replica"] == pytest.approx(
        figures["jobs_per_second"] / one["jobs_per_second"], abs=0.01
    )


def bench_schemas() -> set[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            return set(conn.scalars(text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\\_%'")))
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_one_process_on_postgresql_runs_on_a_fresh_schema_each_time(tmp_path: Path) -> None:
    """Two runs in a row on one database: the second would find the first's instances and its
    replica registry ("another control-plane replica is running") without a schema of its own."""
    if os.environ.get("SWARMSTATION_SKIP_POSTGRES") == "1":
        pytest.skip("SWARMSTATION_SKIP_POSTGRES=1")
    before = bench_schemas()
    for _ in range(2):
        figures = bench_json(
            tmp_path, "--lean", "--workers", "2", "--jobs", "6", "--database-url", POSTGRES_URL
        )
        assert figures["database"] == "postgresql" and figures["completed"] == 6
    assert bench_schemas() == before  # dropped afterwards
