"""The bench package's one convention: each module's run(...) returns a JSON-ready dict that
print_result writes to stdout, and the CLI commands print exactly that."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from swarmstation.bench import control_plane, loras, print_result, routing
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
    result = subprocess.run(
        [str(BIN), "bench", "--workers", "1", "--jobs", "3", "--concurrency", "1"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout)
    assert figures["completed"] == 3 and figures["failed"] == 0
