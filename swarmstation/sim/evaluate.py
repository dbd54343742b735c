"""Held-out evaluation and sensitivity: figures over several seeds (each seed a fresh trace and
fresh marketplace draws), reported as mean ± spread, never on the seeds the knobs were tuned on.

* :func:`parse_seeds` reads ``"11-15"`` or ``"1,2,7"``.
* :func:`evaluate` runs policies on each seed's trace and summarises each metric (mean, standard
  deviation, min, max) per policy.
* :func:`sensitivity` multiplies each :data:`~swarmstation.sim.market.ASSUMPTIONS` figure by each
  factor (x0.5, x2) and reports how ``ours``, ``managed`` and the whole-GPU reference move.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from swarmstation.sim import report
from swarmstation.sim.config import SimConfig
from swarmstation.sim.engine import simulate
from swarmstation.sim.market import ASSUMPTIONS, Assumption, scaled
from swarmstation.sim.trace import Trace

TraceFor = Callable[[int], Trace]
SUMMARISED = (
    "cost_usd",
    "cost_per_1000_images",
    "wait_p50_s",
    "wait_p95_s",
    "wait_p95_after_first_start_s",
    "gpu_utilisation",
)
SENSITIVITY_POLICIES = ("ours", "managed", "blocks-300s")


def parse_seeds(text: str) -> list[int]:
    """``"11-15"`` -> 11..15; ``"1,2,7"`` -> [1, 2, 7]; mixed: ``"1-3,9"``. ValueError when empty or
    not numbers."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if sep:
            a, b = int(lo), int(hi)
            if b < a:
                raise ValueError(f"empty range {part!r}")
            seeds.extend(range(a, b + 1))
        else:
            seeds.append(int(part))
    if not seeds:
        raise ValueError("no seeds")
    return list(dict.fromkeys(seeds))


@dataclass(frozen=True)
class Spread:
    mean: float
    sd: float
    lo: float
    hi: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "mean": round(self.mean, 4),
            "sd": round(self.sd, 4),
            "min": self.lo,
            "max": self.hi,
            "n": self.n,
        }

    def text(self, digits: int = 2) -> str:
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"


def spread(values: Iterable[float]) -> Spread:
    xs = list(values)
    if not xs:
        return Spread(0.0, 0.0, 0.0, 0.0, 0)
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return Spread(statistics.fmean(xs), sd, min(xs), max(xs), len(xs))


def evaluate(
    trace_for: TraceFor,
    config: SimConfig,
    seeds: Sequence[int],
    policies: Sequence[str],
    *,
    progress: Callable[[int, str], None] | None = None,
) -> dict[str, Any]:
    """Each policy on each seed's trace; ``{"per_seed": {seed: rows}, "summary": {policy: {metric:
    Spread.as_dict()}}, "targets": {seed: [...]}}``."""
    per_seed: dict[int, list[dict[str, Any]]] = {}
    targets: dict[int, list[str]] = {}
    for seed in seeds:
        tr = trace_for(seed)
        results = {}
        for name in policies:
            if progress is not None:
                progress(seed, name)
            results[name] = simulate(tr, name, config, seed=seed)
        rows = report.table(results)
        per_seed[seed] = rows
        targets[seed] = report.evaluate_targets(rows, tr.preset or "trace")
    return {"per_seed": per_seed, "summary": summarise(per_seed), "targets": targets}


def summarise(per_seed: dict[int, list[dict[str, Any]]]) -> dict[str, dict[str, dict[str, float | int]]]:
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    policies = [r["policy"] for r in next(iter(per_seed.values()), [])]
    for name in policies:
        rows = [r for rows in per_seed.values() for r in rows if r["policy"] == name]
        out[name] = {
            key: spread(float(r[key]) for r in rows if r.get(key) is not None).as_dict() for key in SUMMARISED
        }
    return out


def summary_markdown(summary: dict[str, dict[str, dict[str, float | int]]], seeds: Sequence[int]) -> str:
    lines = [
        f"Mean ± standard deviation over seeds {', '.join(map(str, seeds))} (min-max in brackets).",
        "",
        "| policy | $ / 1,000 images | p50 wait s | p95 wait s | p95 wait s (after first start) |",
        "|---|---|---|---|---|",
    ]
    for name, m in summary.items():
        cells = []
        for key in ("cost_per_1000_images", "wait_p50_s", "wait_p95_s", "wait_p95_after_first_start_s"):
            s = m[key]
            cells.append(f"{s['mean']:.2f} ± {s['sd']:.2f} [{s['min']:.2f}-{s['max']:.2f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def with_assumption(config: SimConfig, a: Assumption, factor: float) -> SimConfig:
    if a.target == "market":
        return replace(config, market=scaled(config.market, a.fields, factor, a.cap))
    return replace(config, managed=scaled(config.managed, a.fields, factor, a.cap))


def sensitivity(
    trace_for: TraceFor,
    config: SimConfig,
    seeds: Sequence[int],
    *,
    factors: Sequence[float] = (0.5, 2.0),
    policies: Sequence[str] = SENSITIVITY_POLICIES,
    assumptions: Sequence[Assumption] = ASSUMPTIONS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """For the base configuration and each assumption x factor: each policy's mean cost per 1,000
    images and mean p95 wait over ``seeds``."""
    traces = {s: trace_for(s) for s in seeds}

    def run(cfg: SimConfig) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for name in policies:
            rows = [report.metrics(simulate(tr, name, cfg, seed=s), None) for s, tr in traces.items()]
            out[name] = {
                "cost_per_1000_images": round(statistics.fmean(r["cost_per_1000_images"] for r in rows), 3),
                "wait_p95_s": round(statistics.fmean(r["wait_p95_s"] for r in rows), 2),
            }
        return out

    if progress is not None:
        progress("base")
    base = run(config)
    rows: list[dict[str, Any]] = []
    for a in assumptions:
        for f in factors:
            if progress is not None:
                progress(f"{a.name} x{f:g}")
            rows.append({"assumption": a.name, "factor": f, "source": a.source,
                         "results": run(with_assumption(config, a, f))})  # fmt: skip
    return {"seeds": list(seeds), "policies": list(policies), "base": base, "rows": rows}


def sensitivity_markdown(data: dict[str, Any]) -> str:
    policies = data["policies"]
    head = " | ".join(f"{p} $/1k, p95 s" for p in policies)
    lines = [f"| assumption | factor | {head} |", "|---|---|" + "---|" * len(policies)]

    def cells(res: dict[str, dict[str, float]]) -> str:
        return " | ".join(
            f"{res[p]['cost_per_1000_images']:.2f}, {res[p]['wait_p95_s']:.1f}" for p in policies
        )

    lines.append(f"| (base) | 1 | {cells(data['base'])} |")
    for row in data["rows"]:
        lines.append(f"| {row['assumption']} | x{row['factor']:g} | {cells(row['results'])} |")
    return "\n".join(lines) + "\n"


def assumptions_markdown() -> str:
    lines = ["| assumption | applies to | source |", "|---|---|---|"]
    for a in ASSUMPTIONS:
        lines.append(f"| {a.name} | {a.target} | {a.source} |")
    return "\n".join(lines) + "\n"
