"""The e2e conftest shows the logs of a failing test's processes with its report (and a passing
test's not at all), so that tests need no try/except to print them. Run as a real pytest
subprocess, with the conftest loaded as a plugin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# the markers are split in the source, so that a traceback quoting it does not show them
TESTS = """
from pathlib import Path


def _logged(up_factory, folder: Path, text: str):
    up = up_factory(folder)
    log = folder / "up.log"
    log.write_text(text)
    up.logs.append(log)
    return up


def test_fails(up_factory, tmp_path: Path) -> None:
    _logged(up_factory, tmp_path, "the control plane said: MARKER" + "-OF-THE-FAILURE")
    assert 1 + 1 == 3


def test_passes(up_factory, tmp_path: Path) -> None:
    _logged(up_factory, tmp_path, "QUIET-WHEN-PASSING")


def test_fails_with_a_log_of_its_own(failure_logs) -> None:
    failure_logs.add("the fake's machines", lambda: "MARKER" + "-OF-THE-FAKE")
    failure_logs.add("a log that is gone", lambda: (_ for _ in ()).throw(OSError("gone")))
    raise RuntimeError("boom")
"""


def test_a_failing_test_shows_its_processes_logs_and_a_passing_one_does_not(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(TESTS)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.e2e.conftest", "-p", "no:cacheprovider", "-q",
         "--rootdir", str(tmp_path), str(tmp_path / "test_sample.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert "2 failed, 1 passed" in out, out
    assert "MARKER-OF-THE-FAILURE" in out and "swarmstation up on port" in out
    assert "MARKER-OF-THE-FAKE" in out and "the fake's machines" in out
    assert "cannot read: OSError('gone')" in out  # and the failure is still reported
    assert "RuntimeError: boom" in out and "assert (1 + 1) == 3" in out
    assert "QUIET-WHEN-PASSING" not in out
    assert out.count("MARKER-OF-THE-FAILURE") == 1  # once, not again for the teardown
