"""Workload traces for the simulator: a seeded generator, JSON-lines files and job-export replay.

A trace is a list of :class:`TraceJob`: when a job arrives (seconds from the start of the trace,
which is midnight UTC of day 0), the tool it runs, the models it needs (keys ``folder/name`` with
sizes in bytes), its checkpoint and how long it runs on the GPU once everything is loaded.

Generator (:func:`generate`)
----------------------------
* Daily cycle: bursts start at a rate proportional to an hourly weight (peak 18-21 UTC, quiet
  04-09 UTC, see :data:`HOURLY_WEIGHTS`).
* Bursts: the prior system's usage is bursty (338 bursts in 90 days, 15.4 requests on average, at
  most 588; median inter-request 0.6-0.7 min, prior-system.md §5.10). A burst's size is a
  log-normal truncated at ``max_burst``; requests in a burst follow each other after log-normal gaps
  (median ``burst_gap_median_s``). Single requests outside bursts arrive as a Poisson stream with the
  same daily cycle.
* Models: a few checkpoints per base model and many LoRAs, each family drawn with Zipf popularity
  (``P(rank k) ∝ k^-s``). LoRA sizes are log-normal (median ~150 MB).
* Tools: each has a base model, a share of traffic, a LoRA probability and a log-normal run time.

Presets: ``prior`` (fitted to §5.10, about 65 generations a day) and ``large`` (100x the bursts and
singles of ``prior``, 10x the LoRA catalogue).

Files
-----
:func:`save` / :func:`load` write and read JSON lines: a header ``{"type": "header", "name", "seed",
"days", "preset"}`` and then one object per job ``{"id", "t", "tool", "run_seconds", "checkpoint",
"models": [[key, size], ...]}``.

Job export (:func:`load_job_export`)
------------------------------------
A job log exported from a running swarmstation (``swarmstation jobs export``) is a JSON list of job
objects (or an object ``{"jobs": [...]}``)::

    {"id": "j_123",                          # optional, else the position in the list
     "created_at": "2026-02-01T18:03:11Z",   # ISO 8601; naive times are UTC
     "tool": "sdxl-txt2img",
     "required_models": [{"folder": "checkpoints", "name": "sdxl.safetensors", "size": 6938000000},
                         {"folder": "loras", "name": "style.safetensors", "size": 151000000}],
     "timings": {"run_seconds": 9.4}}         # optional, else the tool's median in the export

The checkpoint is the first model in ``checkpoints``, ``unet`` or ``diffusion_models``. Times are
shifted so that midnight UTC of the first job's day is ``t = 0`` (the daily cycle is kept).
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from swarmstation.domain.routing import ModelNeed

DAY = 86400.0

# Relative rate of traffic per UTC hour: peak 18-21, quiet 04-09.
HOURLY_WEIGHTS: tuple[float, ...] = (
    0.8, 0.6, 0.4, 0.2, 0.03, 0.03, 0.03, 0.03, 0.03, 0.2, 0.5, 0.7,
    0.8, 0.9, 1.0, 1.0, 1.1, 1.3, 3.0, 3.0, 3.0, 1.5, 1.1, 0.9,
)  # fmt: skip
PEAK_HOURS = (18, 19, 20)
QUIET_HOURS = (4, 5, 6, 7, 8)

CHECKPOINT_FOLDERS = ("checkpoints", "unet", "diffusion_models")


@dataclass(frozen=True, slots=True)
class TraceJob:
    job_id: str
    t: float
    tool: str
    run_seconds: float
    models: tuple[ModelNeed, ...] = ()
    checkpoint: str | None = None


@dataclass
class Trace:
    name: str
    seed: int
    days: float
    jobs: list[TraceJob] = field(default_factory=list)
    preset: str = ""

    @property
    def duration(self) -> float:
        end = self.jobs[-1].t if self.jobs else 0.0
        return max(self.days * DAY, end)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    base: str
    share: float
    run_median_s: float
    run_sigma: float
    lora_prob: float = 0.0


@dataclass(frozen=True)
class TracePreset:
    name: str
    bursts_per_day: float
    singles_per_day: float
    burst_mu: float  # log-normal burst size (before truncation)
    burst_sigma: float
    max_burst: int
    burst_gap_median_s: float
    burst_gap_sigma: float
    checkpoints_per_base: int
    loras_per_base: int
    zipf_s: float
    tools: tuple[ToolSpec, ...]


BASE_CHECKPOINT_BYTES = {"sd15": 2_130_000_000, "sdxl": 6_940_000_000, "flux": 11_900_000_000}

_TOOLS = (
    ToolSpec("sdxl-txt2img", "sdxl", 0.45, 9.0, 0.35, lora_prob=0.7),
    ToolSpec("flux-txt2img", "flux", 0.25, 22.0, 0.35, lora_prob=0.6),
    ToolSpec("sd15-txt2img", "sd15", 0.15, 4.0, 0.35, lora_prob=0.8),
    ToolSpec("sdxl-upscale", "sdxl", 0.10, 14.0, 0.4),
    ToolSpec("flux-img2img", "flux", 0.05, 26.0, 0.4, lora_prob=0.5),
)

PRESETS: dict[str, TracePreset] = {
    "prior": TracePreset(
        name="prior",
        bursts_per_day=338 / 90,
        singles_per_day=6.0,
        burst_mu=1.85,
        burst_sigma=1.4,
        max_burst=600,
        burst_gap_median_s=39.0,
        burst_gap_sigma=0.9,
        checkpoints_per_base=3,
        loras_per_base=60,
        zipf_s=1.1,
        tools=_TOOLS,
    ),
}
PRESETS["large"] = TracePreset(
    **{
        **PRESETS["prior"].__dict__,
        "name": "large",
        "bursts_per_day": 100 * 338 / 90,
        "singles_per_day": 600.0,
        "loras_per_base": 600,
    }
)


def _zipf_weights(n: int, s: float) -> list[float]:
    return [1.0 / (k**s) for k in range(1, n + 1)]


@dataclass(frozen=True)
class Catalogue:
    checkpoints: dict[str, list[ModelNeed]]
    loras: dict[str, list[ModelNeed]]
    ckpt_weights: list[float]
    lora_weights: list[float]


def build_catalogue(preset: TracePreset, rng: random.Random) -> Catalogue:
    ckpts: dict[str, list[ModelNeed]] = {}
    loras: dict[str, list[ModelNeed]] = {}
    for base, size in BASE_CHECKPOINT_BYTES.items():
        ckpts[base] = [
            ModelNeed(f"checkpoints/{base}-{i:02d}.safetensors", int(size * rng.uniform(0.95, 1.05)))
            for i in range(preset.checkpoints_per_base)
        ]
        loras[base] = [
            ModelNeed(
                f"loras/{base}-lora-{i:04d}.safetensors",
                int(min(1.5e9, max(10e6, rng.lognormvariate(math.log(150e6), 0.8)))),
            )
            for i in range(preset.loras_per_base)
        ]
    return Catalogue(
        ckpts,
        loras,
        _zipf_weights(preset.checkpoints_per_base, preset.zipf_s),
        _zipf_weights(preset.loras_per_base, preset.zipf_s),
    )


def _draw_hour_time(rng: random.Random, day: int) -> float:
    hour = rng.choices(range(24), weights=HOURLY_WEIGHTS)[0]
    return day * DAY + hour * 3600.0 + rng.random() * 3600.0


def burst_size(preset: TracePreset, rng: random.Random) -> int:
    return max(2, min(preset.max_burst, round(rng.lognormvariate(preset.burst_mu, preset.burst_sigma))))


def generate(preset: str | TracePreset = "prior", *, days: float = 1.0, seed: int = 0) -> Trace:
    """A reproducible trace: the same preset, days and seed give the same jobs."""
    p = PRESETS[preset] if isinstance(preset, str) else preset
    rng = random.Random(f"trace:{p.name}:{seed}")
    cat = build_catalogue(p, rng)
    tools = p.tools
    tool_weights = [t.share for t in tools]
    arrivals: list[float] = []
    whole_days = math.ceil(days)
    horizon = days * DAY
    for day in range(whole_days):
        frac = min(1.0, days - day)
        n_bursts = _poisson(rng, p.bursts_per_day * frac)
        for _ in range(n_bursts):
            t = _draw_hour_time(rng, day)
            for _ in range(burst_size(p, rng)):
                arrivals.append(t)
                t += rng.lognormvariate(math.log(p.burst_gap_median_s), p.burst_gap_sigma)
        for _ in range(_poisson(rng, p.singles_per_day * frac)):
            arrivals.append(_draw_hour_time(rng, day))
    arrivals = sorted(t for t in arrivals if t < horizon)
    jobs: list[TraceJob] = []
    for idx, t in enumerate(arrivals):
        tool = rng.choices(tools, weights=tool_weights)[0]
        ckpt = rng.choices(cat.checkpoints[tool.base], weights=cat.ckpt_weights)[0]
        models = [ckpt]
        if tool.lora_prob and rng.random() < tool.lora_prob:
            for _ in range(1 if rng.random() < 0.7 else 2):
                lora = rng.choices(cat.loras[tool.base], weights=cat.lora_weights)[0]
                if lora not in models:
                    models.append(lora)
        run = rng.lognormvariate(math.log(tool.run_median_s), tool.run_sigma)
        jobs.append(TraceJob(f"j{idx:07d}", round(t, 3), tool.name, round(run, 3), tuple(models), ckpt.key))
    return Trace(name=f"{p.name}-{days:g}d-seed{seed}", seed=seed, days=days, jobs=jobs, preset=p.name)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 50:  # normal approximation, deterministic from the rng
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, prod = math.exp(-lam), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k


# -- statistics used by tests and reports -----------------------------------------------------------


def bursts(trace: Trace, gap_s: float = 300.0) -> list[int]:
    """Sizes of runs of requests separated by less than ``gap_s`` (how §5.10 counts bursts)."""
    sizes: list[int] = []
    last = -math.inf
    for job in trace.jobs:
        if job.t - last < gap_s:
            sizes[-1] += 1
        else:
            sizes.append(1)
        last = job.t
    return [s for s in sizes if s >= 2]


def hourly_counts(trace: Trace) -> list[int]:
    counts = [0] * 24
    for job in trace.jobs:
        counts[int(job.t // 3600) % 24] += 1
    return counts


# -- files ------------------------------------------------------------------------------------------


def save(trace: Trace, path: str | Path) -> None:
    with Path(path).open("w", encoding="utf-8") as fh:
        header = {"type": "header", "name": trace.name, "seed": trace.seed, "days": trace.days}
        fh.write(json.dumps({**header, "preset": trace.preset}) + "\n")
        for j in trace.jobs:
            row = {
                "id": j.job_id,
                "t": j.t,
                "tool": j.tool,
                "run_seconds": j.run_seconds,
                "checkpoint": j.checkpoint,
                "models": [[m.key, m.size] for m in j.models],
            }
            fh.write(json.dumps(row, separators=(",", ":")) + "\n")


def load(path: str | Path) -> Trace:
    trace = Trace(name=Path(path).stem, seed=0, days=0.0)
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("type") == "header":
                trace.name = str(row.get("name", trace.name))
                trace.seed = int(row.get("seed", 0))
                trace.days = float(row.get("days", 0.0))
                trace.preset = str(row.get("preset", ""))
                continue
            trace.jobs.append(
                TraceJob(
                    str(row["id"]),
                    float(row["t"]),
                    str(row["tool"]),
                    float(row["run_seconds"]),
                    tuple(ModelNeed(str(k), int(s)) for k, s in row.get("models", [])),
                    row.get("checkpoint"),
                )
            )
    trace.jobs.sort(key=lambda j: (j.t, j.job_id))
    if not trace.days and trace.jobs:
        trace.days = math.ceil((trace.jobs[-1].t + 1) / DAY)
    return trace


def _parse_time(value: str) -> datetime:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def load_job_export(path: str | Path) -> Trace:
    """A trace from a job export (format in the module docstring)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    rows: Sequence[dict[str, object]] = data["jobs"] if isinstance(data, dict) else data
    parsed: list[tuple[datetime, str, str, float | None, tuple[ModelNeed, ...], str | None]] = []
    for idx, row in enumerate(rows):
        created = _parse_time(str(row["created_at"]))
        models: list[ModelNeed] = []
        ckpt: str | None = None
        raw_models = row.get("required_models") or []
        assert isinstance(raw_models, list)
        for m in raw_models:
            folder = str(m["folder"]).strip("/")
            name = str(m["name"]).lstrip("/")
            if ".." in folder.split("/") or ".." in name.split("/"):
                raise ValueError(f"job {idx}: invalid model path {folder}/{name}")
            key = f"{folder}/{name}"
            models.append(ModelNeed(key, int(m.get("size") or 0)))
            if ckpt is None and folder in CHECKPOINT_FOLDERS:
                ckpt = key
        timings = row.get("timings") or {}
        assert isinstance(timings, dict)
        run = timings.get("run_seconds")
        parsed.append(
            (
                created,
                str(row.get("id", f"x{idx:07d}")),
                str(row.get("tool", "unknown")),
                float(run) if run is not None else None,
                tuple(models),
                ckpt,
            )
        )
    if not parsed:
        return Trace(name=Path(path).stem, seed=0, days=0.0)
    parsed.sort(key=lambda r: (r[0], r[1]))
    first = parsed[0][0].astimezone(UTC)
    origin = first.replace(hour=0, minute=0, second=0, microsecond=0)
    medians: dict[str, list[float]] = {}
    for _, _, tool, run, _, _ in parsed:
        if run is not None:
            medians.setdefault(tool, []).append(run)
    med = {k: statistics.median(v) for k, v in medians.items()}
    jobs = [
        TraceJob(
            job_id,
            (created - origin).total_seconds(),
            tool,
            run if run is not None else med.get(tool, 30.0),
            models,
            ckpt,
        )
        for created, job_id, tool, run, models, ckpt in parsed
    ]
    days = math.ceil((jobs[-1].t + 1) / DAY)
    return Trace(name=Path(path).stem, seed=0, days=days, jobs=jobs, preset="export")
