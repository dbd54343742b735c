"""Metrics per policy, as Markdown, JSON and PNG plots (matplotlib, Agg backend; SVG by hand without it)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from swarmstation.domain.stats import percentile
from swarmstation.sim.engine import BOUNDS
from swarmstation.sim.result import PolicyResult

COLUMNS = (
    ("policy", "policy"),
    ("cost_per_1000_images", "$ / 1,000 images"),
    ("cost_ratio_to_oracle", "x oracle"),
    ("wait_p50_s", "p50 wait s"),
    ("wait_p95_s", "p95 wait s"),
    ("wait_p99_s", "p99 wait s"),
    ("wait_p95_after_first_start_s", "p95 wait s (after first start)"),
    ("cold_starts", "cold starts"),
    ("cache_hit_rate", "cache hit rate"),
    ("gpu_utilisation", "GPU utilisation"),
)


def metrics(result: PolicyResult, oracle_cost: float | None) -> dict[str, Any]:
    n = max(1, result.jobs)
    waits = sorted(result.waits)
    after = sorted(result.waits_after_first_start)
    return {
        "policy": result.policy,
        "jobs": result.jobs,
        "completed": result.completed,
        "cost_usd": round(result.cost, 4),
        "cost_per_1000_images": round(1000.0 * result.cost / n, 4),
        "cost_ratio_to_oracle": round(result.cost / oracle_cost, 3) if oracle_cost else None,
        "wait_p50_s": round(percentile(waits, 0.50), 2),
        "wait_p95_s": round(percentile(waits, 0.95), 2),
        "wait_p99_s": round(percentile(waits, 0.99), 2),
        "wait_p95_after_first_start_s": round(percentile(after, 0.95), 2),
        "cold_starts": result.cold_starts,
        "cache_hit_rate": round(result.cache_hits / result.cache_lookups, 3)
        if result.cache_lookups
        else None,
        "gpu_utilisation": round(result.run_seconds / result.instance_seconds, 3)
        if result.instance_seconds
        else None,
        "launches": result.launches,
        "never_ready": result.never_ready,
        "parks": result.parks,
        "resumes": result.resumes,
        "resume_failures": result.resume_failures,
        "outbids": result.outbids,
        "deaths": result.deaths,
        "requeued": result.requeued,
        "downloaded_gb": round(result.downloaded_bytes / 1e9, 2),
        "unattributed_cost_usd": round(result.unattributed_cost, 4),
        "simulated_seconds": round(result.sim_seconds, 1),
        "notes": result.notes,
    }


def table(results: Mapping[str, PolicyResult]) -> list[dict[str, Any]]:
    oracle = results.get("oracle")
    oracle_cost = oracle.cost if oracle is not None else None
    return [metrics(r, oracle_cost) for r in results.values()]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


def markdown(
    rows: list[dict[str, Any]], *, title: str = "Simulation", meta: Mapping[str, Any] | None = None
) -> str:
    lines = [f"# {title}", ""]
    for key, value in (meta or {}).items():
        lines.append(f"- {key}: {value}")
    if meta:
        lines.append("")
    lines.append("| " + " | ".join(label for _, label in COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key, _ in COLUMNS) + " |")
    lines.append("")
    return "\n".join(lines)


def write_report(
    results: Mapping[str, PolicyResult],
    out: str | Path,
    *,
    title: str = "Simulation",
    meta: Mapping[str, Any] | None = None,
    targets: list[str] | None = None,
) -> dict[str, Path]:
    """report.md, report.json, queue.png/instances.png/wait_cdf.png (or .svg) under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = table(results)
    md = markdown(rows, title=title, meta=meta)
    if targets:
        md += "\n## Targets\n\n" + "\n".join(f"- {t}" for t in targets) + "\n"
    paths = {"markdown": out / "report.md", "json": out / "report.json"}
    paths["markdown"].write_text(md, encoding="utf-8")
    payload = {"title": title, "meta": dict(meta or {}), "results": rows, "targets": targets or []}
    paths["json"].write_text(json.dumps(payload, indent=2), encoding="utf-8")
    paths.update(plot(results, out))
    return paths


def _downsample(points: list[tuple[float, int, int]], limit: int = 3000) -> list[tuple[float, int, int]]:
    if len(points) <= limit:
        return points
    step = len(points) / limit
    return [points[int(i * step)] for i in range(limit)]


def plot(results: Mapping[str, PolicyResult], out: Path) -> dict[str, Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - exercised only without matplotlib
        return _plot_svg(results, out)
    paths: dict[str, Path] = {}
    timed = {k: r for k, r in results.items() if r.series}
    for name, column, ylabel in (("queue", 1, "queued jobs"), ("instances", 2, "live instances")):
        fig, ax = plt.subplots(figsize=(10, 4))
        for policy, r in timed.items():
            pts = _downsample(r.series)
            ax.step([p[0] / 3600.0 for p in pts], [p[column] for p in pts], where="post", label=policy, lw=1)
        ax.set_xlabel("hours")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel} over time")
        ax.legend()
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths[name] = path
    fig, ax = plt.subplots(figsize=(8, 5))
    for policy, r in results.items():
        waits = sorted(r.waits)
        if not waits:
            continue
        xs = [max(w, 0.1) for w in waits]
        ys = [(i + 1) / len(waits) for i in range(len(waits))]
        ax.step(xs, ys, where="post", label=policy, lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("wait, queued → start (s, log; 0 drawn at 0.1)")
    ax.set_ylabel("fraction of jobs")
    ax.set_title("wait-time CDF")
    ax.legend()
    fig.tight_layout()
    path = out / "wait_cdf.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths["wait_cdf"] = path
    return paths


def _plot_svg(results: Mapping[str, PolicyResult], out: Path) -> dict[str, Path]:
    """Minimal hand-written SVG line charts (fallback without matplotlib)."""
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    paths: dict[str, Path] = {}

    def chart(name: str, series: dict[str, list[tuple[float, float]]]) -> None:
        w, h = 800, 300
        xs = [x for pts in series.values() for x, _ in pts] or [0.0, 1.0]
        ys = [y for pts in series.values() for _, y in pts] or [0.0, 1.0]
        x0, x1 = min(xs), max(xs) or 1.0
        y1 = max(ys) or 1.0
        body = []
        for i, (label, pts) in enumerate(series.items()):
            coords = " ".join(f"{(x - x0) / ((x1 - x0) or 1) * w:.1f},{h - y / y1 * h:.1f}" for x, y in pts)
            c = colours[i % len(colours)]
            body.append(f'<polyline fill="none" stroke="{c}" points="{coords}"/>')
            body.append(f'<text x="5" y="{15 + 15 * i}" fill="{c}">{label}</text>')
        svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}">{"".join(body)}</svg>'
        path = out / f"{name}.svg"
        path.write_text(svg, encoding="utf-8")
        paths[name] = path

    timed = {k: r for k, r in results.items() if r.series}
    chart("queue", {k: [(t, float(q)) for t, q, _ in _downsample(r.series)] for k, r in timed.items()})
    chart("instances", {k: [(t, float(n)) for t, _, n in _downsample(r.series)] for k, r in timed.items()})
    cdf = {}
    for k, r in results.items():
        w = sorted(r.waits)
        cdf[k] = [(x, (i + 1) / len(w)) for i, x in enumerate(w)]
    chart("wait_cdf", cdf)
    return paths


def evaluate_targets(rows: list[dict[str, Any]], preset: str) -> list[str]:
    """The issue's targets, checked on a result table, each with the reason when it is missed."""
    by = {r["policy"]: r for r in rows}
    ours = by.get("ours")
    if ours is None:
        return []
    out: list[str] = []

    def why(r: dict[str, Any]) -> str:
        util = r.get("gpu_utilisation") or 0.0
        return (
            f"GPU utilisation is {util:.0%} (GPU time is billed from `running`: boot, downloads and idle "
            f"time before scale-down are paid; {r['launches']} launches, {r['never_ready']} never ready) "
            f"and {r['cold_starts']} cold starts (minutes of marketplace provisioning plus checkpoint "
            "downloads)"
        )

    m = by.get("managed")
    if preset == "large" and m is not None:
        ratio = ours["cost_usd"] / m["cost_usd"] if m["cost_usd"] else None
        ok = ratio is not None and ratio <= 1 / 3 and ours["wait_p95_s"] <= m["wait_p95_s"]
        line = (
            f"large: cost <= 1/3 of managed and p95 wait <= managed's — {'MET' if ok else 'MISSED'} "
            f"(ours ${ours['cost_usd']:.2f} = {ratio or 0:.2f}x managed ${m['cost_usd']:.2f}; "
            f"p95 {ours['wait_p95_s']} s vs managed {m['wait_p95_s']} s)"
        )
        if not ok:
            gap = []
            if ratio is None or ratio > 1 / 3:
                gap.append(f"cost {((ratio or 0) * 3 - 1):.0%} over the 1/3 line")
            if ours["wait_p95_s"] > m["wait_p95_s"]:
                gap.append(f"p95 {ours['wait_p95_s'] - m['wait_p95_s']:.1f} s over managed's")
            line += f"; by {', '.join(gap)}; why: {why(ours)}"
        out.append(line)
    if preset == "prior" and m is not None:
        p95 = ours["wait_p95_after_first_start_s"]
        ok = ours["cost_usd"] < m["cost_usd"] and p95 <= 60
        line = (
            f"prior: cheaper than managed at p95 wait <= 60 s (after the first start) — "
            f"{'MET' if ok else 'MISSED'} (ours ${ours['cost_usd']:.2f} vs managed ${m['cost_usd']:.2f}, "
            f"p95 {p95} s; managed p95 {m['wait_p95_after_first_start_s']} s)"
        )
        if not ok:
            line += f"; why: {why(ours)}"
        out.append(line)
    worse = [
        name
        for name, r in by.items()
        if name != "ours"
        and name not in BOUNDS
        and r["wait_p95_s"] <= ours["wait_p95_s"]
        and r["cost_usd"] <= ours["cost_usd"]
    ]
    out.append(
        f"{preset}: ahead of every other policy on cost at equal or better p95 wait — "
        + ("MET" if not worse else f"MISSED (as cheap or cheaper at equal or better p95: {', '.join(worse)})")
    )
    return out
