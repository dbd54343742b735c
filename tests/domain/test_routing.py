"""Cache-aware routing: the cost model, delay scheduling, aging, prefetch, and a trace against the
cache-blind baseline."""

from __future__ import annotations

import json
import math
import random
import statistics
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmstation.bench import routing as routing_bench
from swarmstation.domain.routing import (
    Assign,
    ModelNeed,
    Prefetch,
    RoutableInstance,
    RoutableJob,
    RoutingConfig,
    estimate_start_seconds,
    plan_prefetch,
    plan_routes,
    route_ignoring_caches,
)

NOW = 10_000.0
GB = 10**9
MB = 10**6
CKPT = "checkpoints/sdxl.safetensors"
OTHER = "checkpoints/flux.safetensors"
LORA = "loras/style.safetensors"
CFG = RoutingConfig(max_delay_seconds=30.0, aging_seconds=300.0)


def job(
    job_id: str = "j1",
    *,
    pool: str = "p",
    age: float = 1.0,
    ckpt: str | None = CKPT,
    ckpt_size: int = 6 * GB,
    loras: Sequence[tuple[str, int]] = (),
    run: float = 10.0,
) -> RoutableJob:
    required = ([ModelNeed(ckpt, ckpt_size)] if ckpt is not None else []) + [
        ModelNeed(k, s) for k, s in loras
    ]
    return RoutableJob(job_id, pool, NOW - age, tuple(required), ckpt, run)


def inst(
    instance_id: str,
    *,
    pool: str = "p",
    free: int = 1,
    busy_until: float | None = None,
    cached: Sequence[str] = (),
    loaded: str | None = None,
    rate: float = 100 * MB,
    load: float = 5.0,
) -> RoutableInstance:
    return RoutableInstance(instance_id, pool, free, busy_until, frozenset(cached), loaded, rate, load)


def plan(jobs: Sequence[RoutableJob], instances: Sequence[RoutableInstance], **cfg: Any) -> list[Assign]:
    return plan_routes(jobs, instances, now=NOW, config=replace(CFG, **cfg) if cfg else CFG)


def placed(actions: Sequence[Assign]) -> dict[str, str]:
    return {a.job_id: a.instance_id for a in actions}


# -- the cost model ------------------------------------------------------------------------------


def test_estimate_is_wait_plus_download_plus_load() -> None:
    j = job(loras=[(LORA, 200 * MB)])
    cold = inst("a", rate=100 * MB, load=5.0)
    assert estimate_start_seconds(j, cold, now=NOW) == pytest.approx(60 + 2 + 5)
    warm = inst("a", cached=[CKPT, LORA], loaded=CKPT)
    assert estimate_start_seconds(j, warm, now=NOW) == 0.0
    busy = inst("a", free=0, busy_until=NOW + 12, cached=[CKPT], loaded=OTHER, load=7.0)
    assert estimate_start_seconds(j, busy, now=NOW) == pytest.approx(12 + 2 + 7)
    # the loaded checkpoint counts as cached; an overrun busy instance waits overrun_wait_seconds
    overrun = inst("a", free=0, busy_until=NOW - 5, cached=[LORA], loaded=CKPT)
    assert estimate_start_seconds(j, overrun, now=NOW, config=CFG) == pytest.approx(CFG.overrun_wait_seconds)
    assert math.isinf(estimate_start_seconds(j, inst("a", free=0), now=NOW))


def test_idle_instance_with_all_models_beats_one_that_must_download() -> None:
    j = job(loras=[(LORA, 100 * MB)])
    instances = [
        inst("a-cold", rate=1000 * MB),
        inst("b-warm", cached=[CKPT, LORA], loaded=CKPT, rate=10 * MB),
    ]
    [a] = plan([j], instances)
    assert a.instance_id == "b-warm"
    assert a.expected_start_seconds == 0.0
    assert "all models cached" in a.reason


def test_checkpoint_load_counts() -> None:
    j = job()
    # both hold the checkpoint; only one has it loaded
    [a] = plan([j], [inst("a", cached=[CKPT], loaded=OTHER, load=8.0), inst("b", cached=[CKPT], loaded=CKPT)])
    assert (a.instance_id, a.expected_start_seconds) == ("b", 0.0)
    # a loaded checkpoint plus a 100 MB LoRA (1 s) beats a 8 s load; a 0.5 s load beats the LoRA
    j = job(loras=[(LORA, 100 * MB)])
    lora_missing = inst("b", cached=[CKPT], loaded=CKPT)
    assert placed(plan([j], [inst("a", cached=[CKPT, LORA], loaded=OTHER, load=8.0), lora_missing])) == {
        "j1": "b"
    }
    assert placed(plan([j], [inst("a", cached=[CKPT, LORA], loaded=OTHER, load=0.5), lora_missing])) == {
        "j1": "a"
    }


def test_a_short_wait_for_a_busy_holder_beats_a_large_cold_download() -> None:
    j = job(ckpt_size=10 * GB)  # 100 s cold
    busy = inst("busy", free=0, busy_until=NOW + 8, cached=[CKPT], loaded=CKPT)
    assert plan([j], [inst("cold"), busy]) == []  # it waits for "busy"


def test_a_small_download_beats_a_long_wait() -> None:
    j = job(ckpt_size=500 * MB)  # 5 s + 5 s load cold
    busy = inst("busy", free=0, busy_until=NOW + 25, cached=[CKPT], loaded=CKPT)
    [a] = plan([j], [inst("cold"), busy])
    assert a.instance_id == "cold"
    assert a.expected_start_seconds == pytest.approx(10.0)


def test_delay_scheduling_is_bounded_by_max_delay() -> None:
    j = job(ckpt_size=20 * GB)  # 200 s cold
    busy = inst("busy", free=0, busy_until=NOW + 40, cached=[CKPT], loaded=CKPT)
    assert placed(plan([j], [inst("cold"), busy], max_delay_seconds=30.0)) == {"j1": "cold"}
    assert plan([j], [inst("cold"), busy], max_delay_seconds=60.0) == []
    assert placed(plan([j], [inst("cold"), busy], max_delay_seconds=0.0)) == {"j1": "cold"}
    # a busy instance without a known end is never waited for
    unknown = inst("busy", free=0, busy_until=None, cached=[CKPT], loaded=CKPT)
    assert placed(plan([j], [inst("cold"), unknown])) == {"j1": "cold"}


def test_aging_assigns_a_job_that_would_otherwise_wait() -> None:
    busy = inst("busy", free=0, busy_until=NOW + 8, cached=[CKPT], loaded=CKPT)
    assert plan([job(age=299.0, ckpt_size=10 * GB)], [inst("cold"), busy]) == []
    [a] = plan([job(age=300.0, ckpt_size=10 * GB)], [inst("cold"), busy])
    assert a.instance_id == "cold"
    assert a.reason.startswith("aged 300s")


def test_no_job_starves_behind_an_instance_that_keeps_overrunning() -> None:
    """Pass after pass, the busy holder looks 5 s away; delay scheduling would wait for ever, aging
    stops it: the job starts within aging_seconds (plus one pass) of being queued."""
    j = job(age=0.0, ckpt_size=10 * GB)
    queued_at = j.queued_at
    now = NOW
    while True:
        busy = inst("busy", free=0, busy_until=now + 5, cached=[CKPT], loaded=CKPT)
        actions = plan_routes([j], [inst("cold"), busy], now=now, config=CFG)
        if actions:
            break
        now += 7.0
        assert now - queued_at < CFG.aging_seconds + 7.0, "the job starved"
    assert actions[0].instance_id == "cold"
    assert CFG.aging_seconds <= now - queued_at < CFG.aging_seconds + 7.0


def test_aged_jobs_come_first_even_when_younger_jobs_are_warm() -> None:
    old = job("old", age=400.0, ckpt=OTHER)  # cold everywhere
    young = [job(f"y{n}", age=1.0 + n) for n in range(5)]  # warm on "w"
    acts = plan([*young, old], [inst("w", cached=[CKPT], loaded=CKPT)])
    assert placed(acts) == {"old": "w"}


def test_pools_are_isolated() -> None:
    j = job(pool="a")
    other = inst("b-warm", pool="b", cached=[CKPT], loaded=CKPT)
    busy_other = inst("b-busy", pool="b", free=0, busy_until=NOW + 1, cached=[CKPT], loaded=CKPT)
    assert plan([j], [other, busy_other]) == []
    [a] = plan([j], [other, busy_other, inst("a-cold", pool="a")])
    assert a.instance_id == "a-cold"  # not waiting for the other pool's busy holder either


def test_never_more_assignments_than_free_slots_and_oldest_first() -> None:
    jobs = [job(f"j{n}", age=100.0 - n, ckpt_size=100 * MB) for n in range(10)]
    acts = plan(jobs, [inst("a", free=2), inst("b", free=1), inst("c", free=0)])
    assert len(acts) == 3
    assert [a.job_id for a in acts] == ["j0", "j1", "j2"]
    assert Counter(a.instance_id for a in acts) == {"a": 2, "b": 1}


def test_a_second_job_on_a_multi_slot_instance_waits_for_the_first() -> None:
    first = job("j1", age=2.0, run=20.0)
    second = job("j2", age=1.0, run=20.0)
    acts = plan([first, second], [inst("a", free=2, cached=[CKPT], loaded=CKPT)])
    assert [(a.job_id, a.expected_start_seconds) for a in acts] == [("j1", 0.0), ("j2", 20.0)]


def test_waiting_jobs_queue_on_the_instance_they_reserve() -> None:
    """Two jobs want the one warm busy instance: the first waits for it (8 s); the second would
    then wait 8 + 15 s (the first job's run) there, so it takes the 20 s cold start instead. With a
    shorter first job (8 + 10 s) the second queues behind it as well."""
    j2 = job("j2", age=1.0, ckpt_size=1500 * MB, run=10.0)  # cold: 15 s + 5 s load
    busy = inst("busy", free=0, busy_until=NOW + 8, cached=[CKPT], loaded=CKPT)
    long_first = job("j1", age=2.0, ckpt_size=1500 * MB, run=15.0)
    assert placed(plan([long_first, j2], [inst("cold"), busy])) == {"j2": "cold"}
    short_first = job("j1", age=2.0, ckpt_size=1500 * MB, run=10.0)
    assert plan([short_first, j2], [inst("cold"), busy]) == []


def test_deterministic_and_independent_of_input_order() -> None:
    rng = random.Random(7)
    jobs, instances = _scenario(rng, n_instances=30, n_jobs=60, pools=2)
    first = plan_routes(jobs, instances, now=NOW, config=CFG)
    for _ in range(3):
        rng.shuffle(jobs)
        rng.shuffle(instances)
        assert plan_routes(jobs, instances, now=NOW, config=CFG) == first


def test_equal_queue_times_are_ordered_by_job_id() -> None:
    jobs = [replace(job(f"j{n}"), queued_at=NOW - 5) for n in (3, 1, 2)]
    acts = plan(jobs, [inst("a", free=2, cached=[CKPT], loaded=CKPT)])
    assert [a.job_id for a in acts] == ["j1", "j2"]


def test_jobs_without_models_or_checkpoint() -> None:
    bare = RoutableJob("bare", "p", NOW - 1)
    acts = plan([bare], [inst("a", busy_until=NOW + 3), inst("b")])
    assert placed(acts) == {"bare": "b"}
    assert acts[0].expected_start_seconds == 0.0


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        RoutingConfig(max_delay_seconds=-1)
    with pytest.raises(ValueError):
        RoutingConfig(default_download_bytes_per_second=0)
    with pytest.raises(ValueError):
        RoutingConfig(prefetch_top_k=-1)


def test_unknown_download_rate_uses_the_default() -> None:
    j = job(ckpt_size=GB)
    a = inst("a", rate=0.0, load=0.0)
    assert (
        estimate_start_seconds(j, a, now=NOW, config=RoutingConfig(default_download_bytes_per_second=GB))
        == 1.0
    )


# -- the cache-blind baseline ----------------------------------------------------------------------


def test_route_ignoring_caches_is_fifo_onto_the_least_loaded_instance() -> None:
    jobs = [job("j1", age=3.0), job("j2", age=2.0, ckpt=OTHER), job("j3", age=1.0)]
    instances = [
        inst("a-cold", free=2),
        inst("b-warm", cached=[CKPT], loaded=CKPT),
        inst("c-busy", free=0, busy_until=NOW + 1, cached=[CKPT], loaded=CKPT),
    ]
    acts = route_ignoring_caches(jobs, instances, now=NOW, config=CFG)
    # j1 goes to the instance with two free slots although "b-warm" has its checkpoint loaded; then
    # both have one free slot and "b-warm" no earlier work
    assert placed(acts) == {"j1": "a-cold", "j2": "b-warm", "j3": "a-cold"}
    assert acts[0].expected_start_seconds == pytest.approx(65.0)  # its estimate still counts downloads
    assert acts[2].expected_start_seconds == pytest.approx(75.0)  # behind j1 on the same instance


# -- prefetch ----------------------------------------------------------------------------------------


def test_prefetch_puts_popular_models_on_idle_instances_that_lack_them() -> None:
    recent = (
        [job(f"j{n}", loras=[(LORA, 100 * MB)]) for n in range(5)]
        + [job(f"l{n}", ckpt=None, loras=[(LORA, 100 * MB)]) for n in range(3)]
        + [job("k", ckpt=OTHER)]
    )
    instances = [
        inst("a-idle", rate=50 * MB),
        inst("b-idle-fast", rate=500 * MB, cached=[LORA]),
        inst("c-busy", free=0, busy_until=NOW + 50),
    ]
    acts = plan_prefetch(recent, instances, now=NOW, config=RoutingConfig(prefetch_per_instance=1))
    # CKPT is wanted 5 times with no copy, LORA 8 times with one, OTHER once (below prefetch_min_demand);
    # the most wanted per copy goes first, to the fastest idle instance lacking it
    assert acts == [Prefetch("b-idle-fast", CKPT), Prefetch("a-idle", LORA)]
    more = plan_prefetch(recent, instances, now=NOW, config=RoutingConfig(prefetch_per_instance=2))
    assert set(more) == {Prefetch("b-idle-fast", CKPT), Prefetch("a-idle", LORA), Prefetch("a-idle", CKPT)}
    assert all(p.instance_id != "c-busy" for p in more)


def test_prefetch_respects_the_byte_budget_and_existing_copies() -> None:
    recent = [job(f"j{n}", ckpt_size=30 * GB) for n in range(3)]
    small = RoutingConfig(prefetch_max_bytes_per_instance=10 * GB)
    assert plan_prefetch(recent, [inst("a")], now=NOW, config=small) == []
    # as many copies as jobs that want it: nothing to add
    full = [inst(f"h{n}", free=0, busy_until=NOW + 1, cached=[CKPT]) for n in range(3)]
    assert plan_prefetch(recent, [*full, inst("a")], now=NOW, config=RoutingConfig()) == []
    assert plan_prefetch(recent, [inst("a")], now=NOW, config=RoutingConfig(prefetch_top_k=0)) == []
    assert plan_prefetch(recent, [inst("a", pool="other")], now=NOW, config=RoutingConfig()) == []


# -- properties ----------------------------------------------------------------------------------------


def _scenario(
    rng: random.Random, *, n_instances: int, n_jobs: int, pools: int = 1, max_slots: int = 2
) -> tuple[list[RoutableJob], list[RoutableInstance]]:
    """Random snapshot with continuous values (no exact ties between estimates). Some jobs have no
    checkpoint, no models, a checkpoint not listed in their models, a model listed twice, or a text
    encoder larger than their checkpoint (so the anchor is not the checkpoint)."""
    ckpts = [f"checkpoints/c{n}.safetensors" for n in range(4)]
    loras = [f"loras/l{n}.safetensors" for n in range(8)]
    encoders = [f"text_encoders/t{n}.safetensors" for n in range(2)]
    size = (
        {k: int(rng.uniform(0.5, 8) * GB) for k in ckpts}
        | {k: int(rng.uniform(5, 400) * MB) for k in loras}
        | {k: int(rng.uniform(3, 10) * GB) for k in encoders}
    )
    pool_names = [f"p{n}" for n in range(pools)]
    instances = []
    for n in range(n_instances):
        free = rng.randint(0, max_slots)
        held = rng.sample(ckpts, rng.randint(0, 3)) + rng.sample(loras, rng.randint(0, 5))
        held += rng.sample(encoders, rng.randint(0, 1))
        loaded = rng.choice([*[k for k in held if k in ckpts], None])
        if rng.random() < 0.1:
            loaded = rng.choice(ckpts)  # loaded but not listed in the cache
        busy = rng.random() < 0.7 if free else True
        instances.append(
            RoutableInstance(
                f"i{n:02d}",
                rng.choice(pool_names),
                free,
                NOW + rng.uniform(-5, 60) if busy and rng.random() < 0.9 else None,
                frozenset(held),
                loaded,
                rng.uniform(20, 400) * MB,
                rng.uniform(1, 15),
            )
        )
    jobs = []
    for n in range(n_jobs):
        ckpt: str | None = rng.choice(ckpts)
        keys = [ckpt, *rng.sample(loras, rng.randint(0, 3))]
        kind = rng.random()
        if kind < 0.08:
            keys = []  # nothing to download; maybe a checkpoint to load
            ckpt = rng.choice([ckpt, None])
        elif kind < 0.2:
            keys = keys[1:] or [rng.choice(loras)]
            ckpt = None
        elif kind < 0.3:
            keys.append(rng.choice(encoders))
        elif kind < 0.35:
            keys.append(keys[-1])
        jobs.append(
            RoutableJob(
                f"j{n:03d}",
                rng.choice(pool_names),
                NOW - rng.uniform(0, 600),
                tuple(ModelNeed(k, size[k]) for k in keys if k is not None),
                ckpt,
                rng.uniform(1, 60),
            )
        )
    return jobs, instances


@dataclass
class _Ref:
    pool: str
    free: int
    ready: float
    cached: set[str]
    loaded: str | None
    inv_rate: float
    load: float


def reference_plan(
    jobs: Sequence[RoutableJob], instances: Sequence[RoutableInstance], now: float, config: RoutingConfig
) -> list[tuple[str, str]]:
    """The policy as specified, by brute force over every instance for every job."""
    state: dict[str, _Ref] = {}
    for i in instances:
        if i.free_slots > 0:
            ready = max(now, i.busy_until) if i.busy_until is not None else now
        elif i.busy_until is None:
            ready = math.inf
        else:
            ready = i.busy_until if i.busy_until > now else now + config.overrun_wait_seconds
        cached = set(i.cached) | ({i.loaded_checkpoint} if i.loaded_checkpoint else set())
        rate = i.download_bytes_per_second if i.download_bytes_per_second > 0 else 50e6
        state[i.instance_id] = _Ref(
            i.pool, i.free_slots, ready, cached, i.loaded_checkpoint, 1 / rate, i.checkpoint_load_seconds
        )
    out = []
    for j in sorted(jobs, key=lambda j: (j.queued_at, j.job_id)):
        models = {m.key: m.size for m in j.required}
        anchor = max(models, key=lambda k: (models[k], k == j.checkpoint)) if models else None
        # (a missing checkpoint counts as held once loaded: it is added to the cache below)

        def cost(s: _Ref, models: dict[str, int] = models, ckpt: str | None = j.checkpoint) -> float:
            c = s.ready - now
            missing = sum(size for k, size in models.items() if k not in s.cached)
            if missing:
                c += missing * s.inv_rate
            if ckpt is not None and s.loaded != ckpt:
                c += s.load
            return c

        pool = sorted((iid, s) for iid, s in state.items() if s.pool == j.pool)
        free = [(cost(s), iid) for iid, s in pool if s.free > 0]
        if not free:
            continue
        best, best_id = min(free)
        aged = now - j.queued_at >= config.aging_seconds
        busy = [
            (cost(s), iid)
            for iid, s in pool
            if s.free == 0 and s.ready < math.inf and anchor is not None and anchor in s.cached
        ]
        chosen = best_id
        if busy and not aged:
            b, b_id = min(busy)
            if b < best and b <= config.max_delay_seconds:
                chosen, best = b_id, b
        s = state[chosen]
        if chosen == best_id:
            s.free -= 1
            out.append((j.job_id, chosen))
        s.ready = now + best + j.expected_run_seconds
        s.cached |= set(models) | ({j.checkpoint} if j.checkpoint else set())
        if j.checkpoint is not None:
            s.loaded = j.checkpoint
    return out


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n_instances=st.integers(0, 14),
    n_jobs=st.integers(0, 25),
    pools=st.integers(1, 2),
    max_delay=st.sampled_from([0.0, 10.0, 30.0, 90.0]),
)
def test_plan_matches_the_brute_force_reference(
    seed: int, n_instances: int, n_jobs: int, pools: int, max_delay: float
) -> None:
    jobs, instances = _scenario(random.Random(seed), n_instances=n_instances, n_jobs=n_jobs, pools=pools)
    config = RoutingConfig(max_delay_seconds=max_delay, aging_seconds=300.0)
    got = plan_routes(jobs, instances, now=NOW, config=config)
    assert [(a.job_id, a.instance_id) for a in got] == reference_plan(jobs, instances, NOW, config)


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n_instances=st.integers(0, 20),
    n_jobs=st.integers(0, 40),
    pools=st.integers(1, 3),
    max_slots=st.integers(0, 3),
)
def test_assignments_use_free_slots_of_the_jobs_pool_once(
    seed: int, n_instances: int, n_jobs: int, pools: int, max_slots: int
) -> None:
    jobs, instances = _scenario(
        random.Random(seed), n_instances=n_instances, n_jobs=n_jobs, pools=pools, max_slots=max_slots
    )
    by_job = {j.job_id: j for j in jobs}
    by_inst = {i.instance_id: i for i in instances}
    for policy in (plan_routes, route_ignoring_caches):
        acts = policy(jobs, instances, now=NOW, config=CFG)
        assert len({a.job_id for a in acts}) == len(acts)
        used = Counter(a.instance_id for a in acts)
        for a in acts:
            target = by_inst[a.instance_id]
            assert target.pool == by_job[a.job_id].pool
            assert used[a.instance_id] <= target.free_slots
            assert a.expected_start_seconds >= 0
        # aging: in each pool, the min(free slots, aged jobs) oldest aged jobs are all assigned
        assigned = {a.job_id for a in acts}
        for pool in {j.pool for j in jobs}:
            slots = sum(i.free_slots for i in instances if i.pool == pool)
            aged = sorted(
                (j for j in jobs if j.pool == pool and NOW - j.queued_at >= CFG.aging_seconds),
                key=lambda j: (j.queued_at, j.job_id),
            )
            assert all(j.job_id in assigned for j in aged[:slots])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n_instances=st.integers(1, 12), n_jobs=st.integers(1, 20))
def test_a_job_past_aging_is_assigned_whenever_its_pool_has_a_free_slot(
    seed: int, n_instances: int, n_jobs: int
) -> None:
    rng = random.Random(seed)
    jobs, instances = _scenario(rng, n_instances=n_instances, n_jobs=n_jobs)
    instances[0] = replace(instances[0], pool="p0", free_slots=max(1, instances[0].free_slots))
    oldest = min(jobs, key=lambda j: (j.queued_at, j.job_id))
    queued_at = min(oldest.queued_at, NOW - CFG.aging_seconds) - rng.uniform(0, 100)
    aged = replace(oldest, pool="p0", queued_at=queued_at)
    jobs = [aged if j is oldest else j for j in jobs]
    assert aged.job_id in placed(plan_routes(jobs, instances, now=NOW, config=CFG))


# -- a trace: cache-aware against cache-blind ---------------------------------------------------------


@dataclass
class _SimInstance:
    instance_id: str
    rate: float
    load: float
    capacity: int
    cache: OrderedDict[str, int]
    loaded: str | None = None
    busy_until: float | None = None


def _zipf_pick(rng: random.Random, keys: list[str], exponent: float) -> str:
    return rng.choices(keys, weights=[1 / (r + 1) ** exponent for r in range(len(keys))])[0]


def _trace(seed: int, n_jobs: int) -> list[tuple[float, RoutableJob]]:
    rng = random.Random(seed)
    ckpts = [f"checkpoints/c{n}.safetensors" for n in range(8)]
    loras = [f"loras/l{n:02d}.safetensors" for n in range(40)]
    size = {k: int(rng.uniform(2, 6.5) * GB) for k in ckpts} | {
        k: int(rng.uniform(30, 250) * MB) for k in loras
    }
    t = 0.0
    out = []
    for n in range(n_jobs):
        t += rng.expovariate(0.35)
        ckpt = _zipf_pick(rng, ckpts, 1.2)
        extra = {_zipf_pick(rng, loras, 1.1) for _ in range(rng.randint(0, 2))}
        keys = [ckpt, *sorted(extra)]
        run = rng.uniform(4, 12)
        out.append(
            (t, RoutableJob(f"j{n:04d}", "p", t, tuple(ModelNeed(k, size[k]) for k in keys), ckpt, run))
        )
    return out


Policy = Callable[..., list[Assign]]


def _simulate(
    policy: Policy, trace: list[tuple[float, RoutableJob]], n_instances: int = 6
) -> dict[str, float]:
    """Virtual clock: passes at every arrival, every end of a job and every 2 s while jobs wait."""
    rng = random.Random(99)
    fleet = [
        _SimInstance(f"i{n}", rng.uniform(100, 250) * MB, rng.uniform(4, 8), 14 * GB, OrderedDict())
        for n in range(n_instances)
    ]
    queue: dict[str, tuple[float, RoutableJob]] = {}
    latencies: list[float] = []
    downloaded = 0
    nxt = 0
    now = 0.0
    while nxt < len(trace) or queue:
        candidates = [trace[nxt][0]] if nxt < len(trace) else []
        candidates += [i.busy_until for i in fleet if i.busy_until is not None and i.busy_until > now]
        if queue:
            candidates.append(now + 2.0)
        now = min(candidates)
        for i in fleet:
            if i.busy_until is not None and i.busy_until <= now:
                i.busy_until = None
        while nxt < len(trace) and trace[nxt][0] <= now:
            queue[trace[nxt][1].job_id] = trace[nxt]
            nxt += 1
        snapshot = [
            RoutableInstance(
                i.instance_id,
                "p",
                1 if i.busy_until is None else 0,
                i.busy_until,
                frozenset(i.cache),
                i.loaded,
                i.rate,
                i.load,
            )
            for i in fleet
        ]
        by_id = {i.instance_id: i for i in fleet}
        for action in policy([j for _, j in queue.values()], snapshot, now=now, config=CFG):
            arrived, j = queue.pop(action.job_id)
            i = by_id[action.instance_id]
            needed = {m.key: m.size for m in j.required}
            missing = {k: s for k, s in needed.items() if k not in i.cache}
            for k in needed:
                if k in i.cache:
                    i.cache.move_to_end(k)
            for k, s in missing.items():
                while sum(i.cache.values()) + s > i.capacity:
                    victim = next(v for v in i.cache if v not in needed)
                    del i.cache[victim]
                i.cache[k] = s
            start = now + sum(missing.values()) / i.rate + (i.load if i.loaded != j.checkpoint else 0.0)
            i.loaded = j.checkpoint
            i.busy_until = start + j.expected_run_seconds
            downloaded += sum(missing.values())
            latencies.append(start - arrived)
    latencies.sort()
    return {
        "mean_wait_s": statistics.fmean(latencies),
        "p95_wait_s": latencies[int(0.95 * (len(latencies) - 1))],
        "downloaded_gb": downloaded / GB,
        "jobs": len(latencies),
    }


def test_cache_aware_routing_beats_the_cache_blind_policy_on_a_zipf_trace() -> None:
    trace = _trace(seed=3, n_jobs=300)
    aware = _simulate(plan_routes, trace)
    blind = _simulate(route_ignoring_caches, trace)
    assert aware["jobs"] == blind["jobs"] == 300
    assert aware["mean_wait_s"] < 0.5 * blind["mean_wait_s"], (aware, blind)
    assert aware["downloaded_gb"] < 0.5 * blind["downloaded_gb"], (aware, blind)


# -- the benchmark runs and reports JSON -----------------------------------------------------------------


def test_routing_bench_reports_json_figures() -> None:
    result = routing_bench.run(instances=200, jobs=2000, models=100, seed=1, passes=2)
    json.dumps(result)
    assert result["assignments_per_pass"] > 0
    assert result["assignments_per_pass"] <= result["free_slots"]
    assert result["us_per_assignment"]["p50"] > 0
    assert result["cache_aware"]["download_gb"] < result["cache_blind"]["download_gb"]
