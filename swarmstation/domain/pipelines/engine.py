"""The pure policy that runs a pipeline: given a snapshot of a run, what happens next.

``control/runs.py`` reads a run (its steps, their jobs) into a :class:`RunSnapshot`, calls
:func:`next_actions` and applies each action through the run and step lifecycles; nothing here
does I/O, reads the clock or draws random numbers (the run's ``seed`` is drawn once, outside).

The rules, in the order they apply:

1. ``cancel_requested`` wins: every step not finished is cancelled, then the run.
2. A RUNNING step whose items all COMPLETED completes, with its outputs gathered: port → value
   for a one-item step, port → the list of the items' values otherwise (a ``many`` port's lists
   are concatenated). A RUNNING step with a FAILED item fails with that item's error.
3. A PENDING step whose dependency FAILED, was SKIPPED or CANCELLED is skipped; one whose
   dependencies all COMPLETED starts, with each item's tool input values resolved. Every ready
   step starts in the same call (independent steps run in parallel). Steps a previous attempt
   completed keep their outputs, so a retry only reruns what did not finish.
4. When no step is PENDING or RUNNING, the run finishes: COMPLETED if every step completed,
   else FAILED with the first failure's reason.

Actions describe the result of the current snapshot as if each were applied: a step completed
in this call counts as completed for its dependants only in the next call, once the caller has
stored its outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from swarmstation.domain.pipelines.spec import Pipeline
from swarmstation.domain.pipelines.states import RunState, StepState
from swarmstation.domain.tools import ToolSpec

__all__ = [
    "Action",
    "CancelStep",
    "CompleteStep",
    "FailStep",
    "FinishRun",
    "ItemSnapshot",
    "RunSnapshot",
    "SkipStep",
    "StartStep",
    "StepSnapshot",
    "next_actions",
    "retry_steps",
    "run_outputs",
]

ITEM_STATES = ("QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")


@dataclass(frozen=True)
class ItemSnapshot:
    """One job of a step: its state (a job's state folded into ``ITEM_STATES``), the values of
    its output ports (an image port: a reference ``output:<id>``, a ``many`` port: a list) and,
    when it failed, why."""

    index: int
    state: str
    outputs: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class StepSnapshot:
    """One step of the run. ``outputs`` are stored when the step completed (see CompleteStep)."""

    id: str
    state: StepState
    items: tuple[ItemSnapshot, ...] = ()
    outputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSnapshot:
    """What the engine needs of a run: the pipeline and its tools, the checked input values
    (defaults filled, see ``check_run_inputs``), the run's seed, and its steps' states."""

    pipeline: Pipeline
    tools: Mapping[str, ToolSpec]
    inputs: Mapping[str, Any]
    seed: int
    state: RunState
    steps: Mapping[str, StepSnapshot]
    cancel_requested: bool = False


@dataclass(frozen=True)
class StartStep:
    """Queue one job per item; ``items[i]`` are item ``i``'s tool input values."""

    step: str
    items: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class CompleteStep:
    """Every item completed; ``outputs`` are the step's outputs by port, to store."""

    step: str
    outputs: Mapping[str, Any]


@dataclass(frozen=True)
class FailStep:
    step: str
    reason: str


@dataclass(frozen=True)
class SkipStep:
    step: str
    reason: str


@dataclass(frozen=True)
class CancelStep:
    step: str


@dataclass(frozen=True)
class FinishRun:
    state: RunState
    reason: str | None = None


Action = StartStep | CompleteStep | FailStep | SkipStep | CancelStep | FinishRun


def next_actions(snap: RunSnapshot) -> list[Action]:
    """What to do next for the run in ``snap`` (see the module docstring)."""
    raise NotImplementedError


def retry_steps(snap: RunSnapshot) -> tuple[str, ...]:
    """The steps a retry resets to PENDING: the failed, skipped and cancelled ones."""
    raise NotImplementedError


def run_outputs(snap: RunSnapshot) -> dict[str, dict[str, Any]]:
    """The run's result: the outputs of its ``outputs`` steps, by step id."""
    raise NotImplementedError
