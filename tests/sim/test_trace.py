import json
import statistics

import pytest

from swarmstation.sim import trace as T


@pytest.fixture(scope="module")
def prior60() -> T.Trace:
    return T.generate("prior", days=60, seed=3)


def test_same_seed_same_trace() -> None:
    a = T.generate("prior", days=3, seed=7)
    b = T.generate("prior", days=3, seed=7)
    c = T.generate("prior", days=3, seed=8)
    assert a.jobs == b.jobs
    assert a.jobs != c.jobs


def test_prior_daily_volume(prior60: T.Trace) -> None:
    per_day = len(prior60.jobs) / 60
    assert 45 <= per_day <= 90  # about 65 a day (prior-system.md §5.10)


def test_prior_peak_and_quiet_hours(prior60: T.Trace) -> None:
    counts = T.hourly_counts(prior60)
    total = sum(counts)
    assert counts.index(max(counts)) in T.PEAK_HOURS
    assert sum(counts[h] for h in T.PEAK_HOURS) / total > 0.25
    assert sum(counts[h] for h in T.QUIET_HOURS) / total < 0.03


def test_prior_bursts(prior60: T.Trace) -> None:
    sizes = T.bursts(prior60)
    assert 2.5 <= len(sizes) / 60 <= 5.5  # 338 bursts in 90 days
    assert 10 <= statistics.mean(sizes) <= 22  # 15.4 on average
    assert max(sizes) <= 650


def test_burst_size_distribution_and_cap() -> None:
    import random

    rng = random.Random(1)
    sizes = [T.burst_size(T.PRESETS["large"], rng) for _ in range(20000)]
    assert 11 <= statistics.mean(sizes) <= 20
    assert max(sizes) == 600  # truncated at ~600


def test_large_is_100x_prior() -> None:
    large = T.generate("large", days=1, seed=1)
    assert 4500 <= len(large.jobs) <= 9000
    counts = T.hourly_counts(large)
    assert counts.index(max(counts)) in T.PEAK_HOURS


def test_models_zipf_and_sizes() -> None:
    tr = T.generate("large", days=0.5, seed=2)
    freq: dict[str, int] = {}
    for j in tr.jobs:
        assert j.checkpoint == j.models[0].key
        for m in j.models:
            assert m.size > 0
            freq[m.key] = freq.get(m.key, 0) + 1
    loras = sorted((n for k, n in freq.items() if k.startswith("loras/")), reverse=True)
    assert loras[0] > 10 * loras[len(loras) // 2]  # a heavy head


def test_save_load_roundtrip(tmp_path) -> None:
    tr = T.generate("prior", days=2, seed=4)
    path = tmp_path / "t.jsonl"
    T.save(tr, path)
    back = T.load(path)
    assert back.jobs == tr.jobs
    assert (back.seed, back.days, back.preset) == (4, 2, "prior")


def test_load_job_export(tmp_path) -> None:
    rows = [
        {
            "id": "b",
            "created_at": "2026-02-01T18:00:10Z",
            "tool": "sdxl",
            "required_models": [
                {"folder": "checkpoints", "name": "sdxl.safetensors", "size": 7_000_000_000},
                {"folder": "loras", "name": "a.safetensors", "size": 100},
            ],
            "timings": {"run_seconds": 9.0},
        },
        {"id": "a", "created_at": "2026-02-01T18:00:00", "tool": "sdxl", "required_models": []},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(rows))
    tr = T.load_job_export(path)
    assert [j.job_id for j in tr.jobs] == ["a", "b"]
    assert tr.jobs[0].t == 18 * 3600.0
    assert tr.jobs[0].run_seconds == 9.0  # the tool's median when the export has none
    assert tr.jobs[1].checkpoint == "checkpoints/sdxl.safetensors"
    assert tr.jobs[1].models[1].key == "loras/a.safetensors"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{**rows[0], "required_models": [{"folder": "..", "name": "x", "size": 1}]}]))
    with pytest.raises(ValueError):
        T.load_job_export(bad)
