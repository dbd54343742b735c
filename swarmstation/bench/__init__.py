"""Benchmarks that print JSON, one module each, run by the CLI (swarmstation/cli/bench.py):

* ``control_plane`` — ``swarmstation bench``: control-plane throughput and per-job overhead;
* ``loras`` — ``swarmstation bench-loras``: LoRA resolution per prompt on a large registry;
* ``routing`` — ``swarmstation bench-routing``: cache-aware routing passes on a large fleet.

The convention: a module's ``run(...)`` takes its options as arguments and returns its figures
as a JSON-ready dict; ``print_result`` writes it to stdout; percentiles come from
``swarmstation.domain.stats.percentile``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["print_result"]


def print_result(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
