"""The bench package's one convention: each module's run(...) returns a JSON-ready dict that
print_result writes to stdout, and the CLI commands print exactly that."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from swarmstation.bench import control_plane, loras, print_result, routing
from tests.bench.run import bench_json
from tests.e2e.conftest import BIN


def test_every_bench_module_has_a_run_entry() -> None:
    for module in (control_plane, loras, routing):
        assert callable(module.run), module.__name__


def test_print_result_writes_one_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    result = loras.run(prompts=5, loras=50, seed=1)
    print_result(result)
    assert json.loads(capsys.readouterr().out) == result
    assert 0 <= result["per_prompt_ms"]["p50"] <= result["per_prompt_ms"]["p99"]


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["bench-loras", "--prompts", "5", "--loras", "50"], "per_prompt_ms"),
        (
            ["bench-routing", "--instances", "20", "--jobs", "50", "--models", "10", "--passes", "1"],
            "pass_ms",
        ),
    ],
)
def test_cli_bench_commands_print_json(args: list[str], key: str) -> None:
    result = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert key in json.loads(result.stdout)


@pytest.mark.slow
def test_control_plane_bench_completes_its_jobs_as_a_charged_user(tmp_path: Path) -> None:
    """The bench's user is an ordinary user: its jobs are quoted, held and captured, so it needs
    credits (it once stopped at the first job with a 402)."""
    figures = bench_json(tmp_path, "--workers", "1", "--jobs", "3", "--concurrency", "1")
    assert figures["completed"] == 3 and figures["failed"] == 0
    assert figures["mode"] == "full" and figures["submit_to_assign_ms_min"] >= 0


@pytest.mark.slow
def test_lean_bench_plays_the_worker_protocol_and_reports_cpu_and_memory(tmp_path: Path) -> None:
    """`bench --lean`: lean instances in one process against a real serve process; every job
    completes, and the figures the issue asks for are there and plausible."""
    figures = bench_json(tmp_path, "--lean", "--workers", "3", "--jobs", "12", "--concurrency", "3")
    assert figures["mode"] == "lean"
    assert figures["completed"] == 12 and figures["failed"] == 0
    # No job is assigned before it was submitted (the scheduler's clock once ran behind).
    assert figures["submit_to_assign_ms_min"] >= 0
    assert 0 <= figures["overhead_ms"]["p50"] <= figures["overhead_ms"]["p99"]
    # the slowest jobs, slowest first, each broken into its phases, which add up to its time
    slowest = figures["slowest_jobs_ms"]
    assert len(slowest) == 5
    totals = [sum(phases.values()) for phases in slowest]
    assert totals == sorted(totals, reverse=True)
    assert abs(totals[0] - figures["overhead_ms"]["max"]) < 1.0  # the lean jobs take no run time
    assert all(v >= 0 for phases in slowest for v in phases.values())
    assert set(slowest[0]) == {"queued", "assigned", "started", "finished"}
    # a job's requests: the worker's poll, progress, outputs, upload and completion at least (and
    # its share of heartbeats and empty polls); the client's submission and its event stream
    requests = figures["requests_per_job"]
    assert requests["worker"] >= 5 and requests["client"] >= 2
    assert requests["total"] == pytest.approx(requests["worker"] + requests["client"], abs=0.02)
    assert figures["control_plane_cpu_ms_per_job"] > 0
    assert figures["bench_cpu_ms_per_job"] > 0
    rss = figures["control_plane_rss_mb"]
    assert 20 < rss["idle"] <= rss["peak"] and rss["after_burst"] <= rss["peak"]


@pytest.mark.slow
def test_idle_bench_counts_the_heartbeats_it_measures_over(tmp_path: Path) -> None:
    figures = bench_json(tmp_path, "--idle", "--workers", "3", "--idle-seconds", "6")
    assert figures["mode"] == "idle" and figures["instances"] == 3 and figures["queued"] == 0
    assert figures["heartbeats"] >= 3  # each instance heartbeats every 5 s or less
    assert 0 < figures["control_plane_cpu_percent_of_core"] < 100
    assert figures["control_plane_rss_mb"] > 20


@pytest.mark.slow
def test_memory_bench_seeds_the_database_and_reports_both_processes(tmp_path: Path) -> None:
    """`bench --memory`: the seeded jobs are in the database the control plane serves (the burst
    lists them), lean instances heartbeat, the real worker runs queued jobs; both memories are
    printed."""
    figures = bench_json(tmp_path, "--memory", "--workers", "2", "--finished", "120", "--queued", "30")
    assert figures["mode"] == "memory"
    assert (figures["finished_jobs"], figures["queued_jobs"], figures["instances_heartbeating"]) == (
        120,
        30,
        2,
    )
    assert figures["heartbeats"] >= 2
    assert 0 < figures["worker_jobs_completed"] <= 30
    rss = figures["control_plane_rss_mb"]
    assert 20 < rss["loaded_idle"] <= rss["burst_peak"] and rss["after_burst"] <= rss["burst_peak"]
    assert rss["after_burst_vs_idle"] == round(rss["after_burst"] / rss["loaded_idle"], 3)
    assert 10 < figures["worker_rss_mb"] < 1000


@pytest.mark.slow
def test_floor_bench_measures_each_kind_of_request(tmp_path: Path) -> None:
    """`bench --floor`: the control plane's CPU per request of each cheapest kind, each measured
    (a kind whose requests failed would have stopped the run)."""
    figures = bench_json(tmp_path, "--floor", "--requests", "50")
    assert figures["mode"] == "floor" and figures["requests_each"] == 50
    per_request = figures["control_plane_cpu_ms_per_request"]
    assert set(per_request) == {"healthz", "user_read", "worker_write"}
    assert all(0 < ms < 1000 for ms in per_request.values()), per_request
