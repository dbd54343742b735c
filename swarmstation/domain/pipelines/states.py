"""The run and step lifecycles of pipelines, as tables (domain/states.py).

A run is `PENDING` until its first step starts, `RUNNING` while any step can still make progress,
and ends `COMPLETED` (every step completed), `FAILED` (a step failed; its dependants were skipped)
or `CANCELLED`. `RETRY` takes a failed or cancelled run back to `RUNNING` with its failed,
skipped and cancelled steps `PENDING` again and its completed steps' outputs kept.
"""

from __future__ import annotations

from enum import StrEnum

from swarmstation.domain.states import Lifecycle, Rule, register


class RunState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class RunTrigger(StrEnum):
    START = "START"  # the first step started
    COMPLETE = "COMPLETE"  # every step completed
    FAIL = "FAIL"  # a step failed, nothing else can run
    CANCEL = "CANCEL"  # the user cancelled
    RETRY = "RETRY"  # the user retried the failed and skipped steps


class StepState(StrEnum):
    PENDING = "PENDING"  # waiting for its inputs
    RUNNING = "RUNNING"  # its jobs are queued or running
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"  # a step it depends on failed
    CANCELLED = "CANCELLED"


class StepTrigger(StrEnum):
    START = "START"  # its inputs are ready: its jobs are queued
    COMPLETE = "COMPLETE"  # every job of it completed
    FAIL = "FAIL"  # a job of it failed for good
    SKIP = "SKIP"  # a step it depends on failed or was cancelled
    CANCEL = "CANCEL"  # the run was cancelled before it finished
    RETRY = "RETRY"  # the run was retried: it runs again


TERMINAL_RUN_STATES = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED})
TERMINAL_STEP_STATES = frozenset(
    {StepState.COMPLETED, StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED}
)

_RP, _RR = RunState.PENDING, RunState.RUNNING

RUN: Lifecycle[RunState, RunTrigger] = register(
    Lifecycle(
        "run",
        RunState,
        RunTrigger,
        initial=RunState.PENDING,
        about="One execution of a pipeline; its steps run as their inputs become ready.",
        rules=[
            Rule((_RP,), RunTrigger.START, _RR, "its first step started"),
            Rule((_RP, _RR), RunTrigger.COMPLETE, RunState.COMPLETED, "every step completed"),
            Rule((_RP, _RR), RunTrigger.FAIL, RunState.FAILED, "a step failed; its dependants are skipped"),
            Rule((_RP, _RR), RunTrigger.CANCEL, RunState.CANCELLED, "the user cancelled it"),
            Rule(
                (RunState.FAILED, RunState.CANCELLED),
                RunTrigger.RETRY,
                _RR,
                "the failed and skipped steps run again; finished outputs are reused",
            ),
        ],
    )
)

_SP, _SR = StepState.PENDING, StepState.RUNNING

STEP: Lifecycle[StepState, StepTrigger] = register(
    Lifecycle(
        "step",
        StepState,
        StepTrigger,
        initial=StepState.PENDING,
        about="One step of a run: a tool, run as one job per variation once its inputs are ready.",
        rules=[
            Rule((_SP,), StepTrigger.START, _SR, "its inputs are ready: its jobs are queued"),
            Rule((_SR,), StepTrigger.COMPLETE, StepState.COMPLETED, "every job of it completed"),
            Rule((_SP, _SR), StepTrigger.FAIL, StepState.FAILED, "a job of it failed for good"),
            Rule((_SP,), StepTrigger.SKIP, StepState.SKIPPED, "a step it depends on failed"),
            Rule((_SP, _SR), StepTrigger.CANCEL, StepState.CANCELLED, "the run was cancelled"),
            Rule(
                (StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED),
                StepTrigger.RETRY,
                _SP,
                "the run was retried: it waits for its inputs again",
            ),
        ],
    )
)
