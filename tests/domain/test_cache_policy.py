"""The cache eviction policy: LRU first, size-aware, never a model in use or pinned."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmstation.domain.cache import CachedModel, lru_order, minimal_lru_prefix, plan_eviction

GB = 1_000_000_000
MB = 1_000_000


def m(key: str, size: int, last_used: float, in_use: bool = False, pinned: bool = False) -> CachedModel:
    return CachedModel(key=key, size=size, last_used=last_used, in_use=in_use, pinned=pinned)


def test_nothing_evicted_when_it_fits() -> None:
    models = [m("a", 4, 1), m("b", 4, 2)]
    assert plan_eviction(models, budget_bytes=10, incoming_bytes=2) == []
    assert plan_eviction([], budget_bytes=0, incoming_bytes=0) == []


def test_least_recently_used_goes_first() -> None:
    models = [m("new", 4, 3), m("old", 4, 1), m("mid", 4, 2)]
    assert plan_eviction(models, budget_bytes=12, incoming_bytes=4) == ["old"]
    assert plan_eviction(models, budget_bytes=12, incoming_bytes=8) == ["old", "mid"]


def test_in_use_and_pinned_models_are_never_evicted() -> None:
    models = [m("busy", 4, 1, in_use=True), m("pin", 4, 2, pinned=True), m("idle", 4, 3)]
    assert plan_eviction(models, budget_bytes=12, incoming_bytes=4) == ["idle"]
    assert plan_eviction(models, budget_bytes=12, incoming_bytes=8) is None


def test_none_when_the_incoming_file_alone_is_larger_than_the_budget() -> None:
    assert plan_eviction([m("a", 1, 1)], budget_bytes=10, incoming_bytes=11) is None
    assert plan_eviction([m("a", 1, 1)], budget_bytes=10, incoming_bytes=10) == ["a"]


def test_overshoot_is_trimmed_an_old_small_lora_survives_a_big_checkpoint_eviction() -> None:
    models = [m("lora", 100 * MB, 1), m("ckpt", 6 * GB, 2), m("recent", 2 * GB, 3)]
    budget = 8 * GB + 100 * MB
    # plain LRU would delete lora and ckpt; the checkpoint alone makes room for 5 GB
    assert minimal_lru_prefix(models, budget_bytes=budget, incoming_bytes=5 * GB) == ["lora", "ckpt"]
    assert plan_eviction(models, budget_bytes=budget, incoming_bytes=5 * GB) == ["ckpt"]


def test_ties_are_broken_by_key() -> None:
    models = [m("b", 5, 1), m("a", 5, 1)]
    assert plan_eviction(models, budget_bytes=10, incoming_bytes=5) == ["a"]


def test_negative_inputs_are_rejected() -> None:
    with pytest.raises(ValueError):
        plan_eviction([], budget_bytes=-1, incoming_bytes=0)
    with pytest.raises(ValueError):
        plan_eviction([m("a", -1, 1)], budget_bytes=1, incoming_bytes=0)


cached_models = st.lists(
    st.builds(
        CachedModel,
        key=st.text("abcdefgh", min_size=1, max_size=4),
        size=st.integers(0, 100),
        last_used=st.integers(0, 20).map(float),
        in_use=st.booleans(),
        pinned=st.booleans(),
    ),
    max_size=12,
    unique_by=lambda c: c.key,
)


@settings(max_examples=400, deadline=None)
@given(models=cached_models, budget=st.integers(0, 600), incoming=st.integers(0, 200))
def test_plan_eviction_properties(models: list[CachedModel], budget: int, incoming: int) -> None:
    plan = plan_eviction(models, budget_bytes=budget, incoming_bytes=incoming)
    by_key = {c.key: c for c in models}
    total = sum(c.size for c in models)
    need = total + incoming - budget
    evictable_bytes = sum(c.size for c in models if c.evictable)
    if plan is None:
        # only when even evicting everything evictable is not enough
        assert evictable_bytes < need
        return
    assert len(plan) == len(set(plan))
    chosen = [by_key[k] for k in plan]
    # never a model in use, never a pinned one
    assert all(not c.in_use and not c.pinned for c in chosen)
    # what is left fits with the incoming file
    freed = sum(c.size for c in chosen)
    assert total - freed + incoming <= budget
    if need <= 0:
        assert plan == []
        return
    # LRU first: everything evicted lies within the shortest LRU prefix that makes room, and the
    # newest model of that prefix (the one that closes the gap) is always evicted
    prefix = minimal_lru_prefix(models, budget_bytes=budget, incoming_bytes=incoming)
    assert set(plan) <= set(prefix)
    assert prefix[-1] in plan
    # listed oldest first
    order = [c.key for c in lru_order(models)]
    assert plan == sorted(plan, key=order.index)
    # size-aware: nothing evicted is redundant (without any one of them there is too little room)
    assert all(freed - c.size < need for c in chosen)


@settings(max_examples=200, deadline=None)
@given(
    stamps=st.lists(st.integers(0, 50), min_size=1, max_size=10),
    busy=st.lists(st.booleans(), min_size=10, max_size=10),
    incoming=st.integers(0, 120),
)
def test_equal_sizes_is_plain_lru(stamps: list[int], busy: list[bool], incoming: int) -> None:
    models = [m(f"k{i}", 10, float(t), in_use=busy[i]) for i, t in enumerate(stamps)]
    budget = 10 * len(models)
    plan = plan_eviction(models, budget_bytes=budget, incoming_bytes=incoming)
    idle = [c.key for c in sorted(models, key=lambda c: (c.last_used, c.key)) if not c.in_use]
    wanted = -(-incoming // 10)
    assert plan == (idle[:wanted] if wanted <= len(idle) else None)
