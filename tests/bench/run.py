"""Running `swarmstation bench …` as a user would, for the bench tests."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.e2e.conftest import BIN


def bench_json(cwd: Path, *args: str, timeout: float = 180) -> dict[str, Any]:
    """The JSON a `swarmstation bench` command printed (it must succeed)."""
    result = subprocess.run(
        [str(BIN), "bench", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures
