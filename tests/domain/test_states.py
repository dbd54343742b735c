"""Walk the lifecycle tables: every legal path told as a story, every illegal (state, trigger)
pair refused with the row left as it was, and docs/states.md drawn from the same tables."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise
from typing import Any

import pytest

from swarmstation.domain.diagrams import DOC_PATH, load_all_lifecycles, render
from swarmstation.domain.errors import Conflict
from swarmstation.domain.states import (
    INSTANCE,
    JOB,
    TERMINAL_JOB_STATES,
    IllegalTransition,
    InstanceState,
    InstanceTrigger,
    JobState,
    JobTrigger,
    Lifecycle,
    Rule,
    register,
)

LIFECYCLES = load_all_lifecycles()


@dataclass
class Row:
    """An in-memory row: all a lifecycle needs is a `state`."""

    state: Any


def walk(lifecycle: Lifecycle[Any, Any], *triggers: StrEnum) -> list[Any]:
    row = Row(lifecycle.initial)
    seen = [row.state]
    for trigger in triggers:
        lifecycle.apply(row, trigger)
        seen.append(row.state)
    return seen


J, IT = JobTrigger, InstanceTrigger
Q, A, R = JobState.QUEUED, JobState.ASSIGNED, JobState.RUNNING

JOB_STORIES = {
    "runs and completes": ([J.ASSIGN, J.START, J.COMPLETE], [Q, A, R, JobState.COMPLETED]),
    "completes without a progress report": ([J.ASSIGN, J.COMPLETE], [Q, A, JobState.COMPLETED]),
    "its lease expires, it runs elsewhere": (
        [J.ASSIGN, J.START, J.LEASE_EXPIRED, J.ASSIGN, J.START, J.COMPLETE],
        [Q, A, R, Q, A, R, JobState.COMPLETED],
    ),
    "its instance is lost before it starts": ([J.ASSIGN, J.INSTANCE_LOST, J.ASSIGN], [Q, A, Q, A]),
    "its machine fails, not the job": ([J.ASSIGN, J.START, J.MACHINE_FAILED], [Q, A, R, Q]),
    "retried, then given up": (
        [J.ASSIGN, J.START, J.RETRY, J.ASSIGN, J.FAIL],
        [Q, A, R, Q, A, JobState.FAILED],
    ),
    "fails while running": ([J.ASSIGN, J.START, J.FAIL], [Q, A, R, JobState.FAILED]),
    "refused before it is assigned": ([J.FAIL], [Q, JobState.FAILED]),
    "cancelled in the queue": ([J.CANCEL], [Q, JobState.CANCELLED]),
    "cancelled while assigned": ([J.ASSIGN, J.CANCEL], [Q, A, JobState.CANCELLED]),
    "cancelled while running": ([J.ASSIGN, J.START, J.CANCEL], [Q, A, R, JobState.CANCELLED]),
}

P, N, IDLE, BUSY = (
    InstanceState.PROVISIONING,
    InstanceState.INITIALIZING,
    InstanceState.IDLE,
    InstanceState.BUSY,
)
DR, ST, UN, TE = (
    InstanceState.DRAINING,
    InstanceState.STOPPED,
    InstanceState.UNHEALTHY,
    InstanceState.TERMINATED,
)

INSTANCE_STORIES = {
    "starts, works, is drained and destroyed": (
        [IT.STARTED, IT.READY, IT.ASSIGN, IT.RELEASE, IT.DRAIN, IT.DESTROY],
        [P, N, IDLE, BUSY, IDLE, DR, TE],
    ),
    "ready without an initializing report": ([IT.READY], [P, IDLE]),
    "drained while busy": ([IT.READY, IT.ASSIGN, IT.DRAIN, IT.DESTROY], [P, IDLE, BUSY, DR, TE]),
    "parked, resumed, works again": (
        [IT.READY, IT.PARK, IT.RESUME, IT.STARTED, IT.READY, IT.ASSIGN],
        [P, IDLE, ST, P, N, IDLE, BUSY],
    ),
    "parked too long: drained and destroyed": (
        [IT.READY, IT.PARK, IT.DRAIN, IT.DESTROY],
        [P, IDLE, ST, DR, TE],
    ),
    "destroyed before it starts": ([IT.DESTROY], [P, TE]),
    "destroyed while initializing": ([IT.STARTED, IT.DESTROY], [P, N, TE]),
    "drained while initializing": ([IT.STARTED, IT.DRAIN, IT.DESTROY], [P, N, DR, TE]),
    "idle, destroyed at once": ([IT.READY, IT.DESTROY], [P, IDLE, TE]),
    "parked, then destroyed": ([IT.READY, IT.PARK, IT.DESTROY], [P, IDLE, ST, TE]),
    "found unhealthy while draining": (
        [IT.READY, IT.DRAIN, IT.HEARTBEAT_LOST, IT.DESTROY],
        [P, IDLE, DR, UN, TE],
    ),
    "never ready": ([IT.STARTUP_TIMEOUT, IT.DESTROY], [P, UN, TE]),
    "launch refused": ([IT.LAUNCH_FAILED, IT.DESTROY], [P, UN, TE]),
    "bootstrap fails": ([IT.STARTED, IT.BOOTSTRAP_FAILED], [P, N, UN]),
    "busy and its heartbeats stop": (
        [IT.READY, IT.ASSIGN, IT.HEARTBEAT_LOST, IT.DESTROY],
        [P, IDLE, BUSY, UN, TE],
    ),
    "its ComfyUI stays down": ([IT.READY, IT.COMFY_DOWN], [P, IDLE, UN]),
    "its breaker trips": ([IT.READY, IT.ASSIGN, IT.BREAKER_TRIPPED], [P, IDLE, BUSY, UN]),
    "the provider loses it while parked": ([IT.READY, IT.PARK, IT.INSTANCE_LOST], [P, IDLE, ST, UN]),
    "the control plane shuts down": ([IT.READY, IT.SHUTDOWN, IT.DESTROY], [P, IDLE, UN, TE]),
    "an attached machine recovers, then is detached": (
        [IT.READY, IT.COMFY_DOWN, IT.RECOVER, IT.DETACH],
        [P, IDLE, UN, IDLE, TE],
    ),
    "an attached machine is detached while busy": (
        [IT.READY, IT.ASSIGN, IT.DRAIN, IT.DETACH],
        [P, IDLE, BUSY, DR, TE],
    ),
}


@pytest.mark.parametrize("story", sorted(JOB_STORIES))
def test_job_story(story: str) -> None:
    triggers, states = JOB_STORIES[story]
    assert walk(JOB, *triggers) == states


@pytest.mark.parametrize("story", sorted(INSTANCE_STORIES))
def test_instance_story(story: str) -> None:
    triggers, states = INSTANCE_STORIES[story]
    assert walk(INSTANCE, *triggers) == states


@pytest.mark.parametrize(("lifecycle", "stories"), [(JOB, JOB_STORIES), (INSTANCE, INSTANCE_STORIES)])
def test_the_stories_tell_every_trigger_and_every_move(
    lifecycle: Lifecycle[Any, Any], stories: dict[str, Any]
) -> None:
    # every (state, trigger) pair is checked one by one below; the stories tell each trigger and
    # each move (from -> to) at least once, in a sequence that really happens
    triggers: set[Any] = set()
    moves: set[tuple[Any, Any]] = set()
    for told, states in stories.values():
        triggers |= set(told)
        moves |= set(pairwise(states))
    assert set(lifecycle.triggers) - triggers == set()
    assert {(source, target) for (source, _), target in lifecycle.table.items()} - moves == set()


def _pairs(lifecycle: Lifecycle[Any, Any]) -> list[tuple[Any, Any]]:
    return [(state, trigger) for state in lifecycle.states for trigger in lifecycle.triggers]


@pytest.mark.parametrize("lifecycle", LIFECYCLES, ids=lambda lc: lc.kind)
def test_every_pair_moves_as_the_table_says_or_is_refused_leaving_the_row(
    lifecycle: Lifecycle[Any, Any],
) -> None:
    refused = 0
    for state, trigger in _pairs(lifecycle):
        row = Row(state)
        if (state, trigger) in lifecycle.table:
            assert lifecycle.apply(row, trigger) == state
            assert row.state == lifecycle.table[(state, trigger)]
            continue
        with pytest.raises(IllegalTransition) as caught:
            lifecycle.apply(row, trigger)
        assert row.state == state, f"{state} + {trigger} changed the row"
        assert isinstance(caught.value, Conflict) and caught.value.code == "illegal_transition"
        assert str(state) in str(caught.value) and str(trigger) in str(caught.value)
        refused += 1
    assert refused > 0


def test_terminal_states_take_no_trigger() -> None:
    assert {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED} == TERMINAL_JOB_STATES
    assert INSTANCE.terminal == {InstanceState.TERMINATED}
    for trigger in JobTrigger:
        for state in TERMINAL_JOB_STATES:
            assert not JOB.can(state, trigger)


def test_a_busy_instance_is_never_destroyed_straight_away() -> None:
    # drained first, or found unhealthy (DESIGN.md: never terminate an instance running a job)
    assert all(INSTANCE.table.get((BUSY, t)) != TE for t in InstanceTrigger)


def test_requeues_say_why() -> None:
    back_to_queue = {t for (s, t), target in JOB.table.items() if s == R and target == Q}
    assert back_to_queue == {J.RETRY, J.LEASE_EXPIRED, J.INSTANCE_LOST, J.MACHINE_FAILED}


def test_a_table_with_two_rules_for_one_pair_is_refused() -> None:
    class S(StrEnum):
        A = "A"
        B = "B"

    class T(StrEnum):
        GO = "GO"

    with pytest.raises(ValueError, match="two rules"):
        Lifecycle("x", S, T, initial=S.A, rules=[Rule((S.A,), T.GO, S.B), Rule((S.A,), T.GO, S.A)])
    with pytest.raises(ValueError, match="already registered"):
        register(Lifecycle("job", S, T, initial=S.A, rules=[Rule((S.A,), T.GO, S.B)]))


def test_docs_states_md_is_drawn_from_the_tables() -> None:
    assert DOC_PATH.read_text(encoding="utf-8") == render(), (
        "docs/states.md differs from the tables: run `python -m swarmstation.domain.diagrams`"
    )


def test_every_lifecycle_is_drawn() -> None:
    text = render()
    for lifecycle in LIFECYCLES:
        assert f"## {lifecycle.kind}" in text
        for rule in lifecycle.rules:
            assert f"| `{rule.trigger}` |" in text
