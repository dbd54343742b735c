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

from swarmstation.domain.pipelines.spec import FromInput, FromStep, LiteralValue, Pipeline, Step, output_steps
from swarmstation.domain.pipelines.states import (
    TERMINAL_RUN_STATES,
    TERMINAL_STEP_STATES,
    RunState,
    StepState,
)
from swarmstation.domain.pipelines.validate import item_counts, seed_input, topological_order
from swarmstation.domain.tools import ToolSpec
from swarmstation.domain.tools.values import is_random_seed

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

#: Seeds drawn from the run's seed stay below 2**63, which every seed input and database accepts.
RUN_SEED_MODULUS = 2**63

_BLOCKING = {
    StepState.FAILED: "failed",
    StepState.SKIPPED: "was skipped",
    StepState.CANCELLED: "was cancelled",
}


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
    #: Why it failed, when it did (the run's error names the first failed step's).
    error: str | None = None


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


class _StepFailed(Exception):
    """A step's inputs cannot be resolved from what its dependencies produced."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_thaw(v) for v in value]
    return value


def _step(snap: RunSnapshot, sid: str) -> StepSnapshot:
    """The snapshot of ``sid``; a step the caller has not written yet is PENDING."""
    return snap.steps.get(sid) or StepSnapshot(id=sid, state=StepState.PENDING)


def _deps(step: Step) -> list[str]:
    out: list[str] = []
    for src in step.inputs.values():
        if isinstance(src, FromStep) and src.step not in out:
            out.append(src.step)
    return out


def _consumed_ports(p: Pipeline, sid: str) -> set[str]:
    return {
        src.output
        for step in p.steps.values()
        for src in step.inputs.values()
        if isinstance(src, FromStep) and src.step == sid
    }


def _gather(p: Pipeline, tool: ToolSpec | None, step: StepSnapshot) -> Mapping[str, Any]:
    """A completed step's outputs: port → value (one item) or → the items' values in order (a
    ``many`` port's lists concatenated). A port another step consumes must be in every item; a
    port some item lacks is left out (a list with holes would misalign the items)."""
    items = sorted(step.items, key=lambda it: it.index)
    # The tool's declared ports; what a job reports besides them is not part of the step's result.
    ports = [out.name for out in tool.outputs] if tool is not None and tool.outputs else []
    if not ports:
        for it in items:
            ports.extend(name for name in it.outputs if name not in ports)
    many = {out.name for out in tool.outputs if out.many} if tool is not None else set()
    for port in sorted(_consumed_ports(p, step.id)):
        for it in items:
            if port not in it.outputs:
                where = f"job {it.index}" if len(items) > 1 else "its job"
                raise _StepFailed(f"{where} produced no output '{port}'")
    gathered: dict[str, Any] = {}
    for port in ports:
        if not all(port in it.outputs for it in items):
            continue
        values = [_thaw(it.outputs[port]) for it in items]
        if len(items) == 1:
            gathered[port] = values[0]
        elif port in many:
            gathered[port] = [v for value in values for v in (value if isinstance(value, list) else [value])]
        else:
            gathered[port] = values
    return gathered


def _resolve(snap: RunSnapshot, step: Step, counts: Mapping[str, int]) -> tuple[dict[str, Any], ...]:
    """The tool input values of each item of ``step`` (its dependencies have all completed)."""
    tool = snap.tools.get(step.tool)
    if tool is None:  # removed since the run was created
        raise _StepFailed(f"tool '{step.tool}' no longer exists")
    specs = {inp.name: inp for inp in tool.inputs}
    n = counts.get(step.id, 1)
    items: list[dict[str, Any]] = [{} for _ in range(n)]
    for name, src in step.inputs.items():
        inp = specs.get(name)
        many = inp is not None and inp.many
        if isinstance(src, LiteralValue):
            for item in items:
                item[name] = _thaw(src.value)
            continue
        if isinstance(src, FromInput):
            if src.name in snap.inputs and snap.inputs[src.name] is not None:
                for item in items:
                    item[name] = _thaw(snap.inputs[src.name])
            continue
        upstream = _step(snap, src.step)
        if src.output not in upstream.outputs:
            raise _StepFailed(f"input '{name}': step '{src.step}' produced no output '{src.output}'")
        value = _thaw(upstream.outputs[src.output])
        m = counts.get(src.step, 1)
        up_tool = snap.tools.get(snap.pipeline.steps[src.step].tool)
        port_many = up_tool is not None and any(o.name == src.output and o.many for o in up_tool.outputs)
        if many:
            gathered = value if (m > 1 or port_many) and isinstance(value, list) else [value]
            for item in items:
                item[name] = gathered
        elif m > 1:
            if not isinstance(value, list) or len(value) != n:
                got = len(value) if isinstance(value, list) else 1
                raise _StepFailed(
                    f"input '{name}': step '{src.step}' produced {got} values of output '{src.output}', "
                    f"expected {n}"
                )
            for i, item in enumerate(items):
                item[name] = value[i]
        else:
            for item in items:
                item[name] = value
    v = step.variations
    if v is not None and v.input is None:
        seed = seed_input(tool)
        if seed is not None:
            base = items[0].get(seed.name)
            for i, item in enumerate(items):
                if isinstance(base, int) and not is_random_seed(base):
                    item[seed.name] = base + i
                else:
                    item[seed.name] = (snap.seed + i) % RUN_SEED_MODULUS
    elif v is not None and v.input is not None and v.values is not None:
        for i, item in enumerate(items):
            item[v.input] = _thaw(v.values[i])
    # A required input with a default is not refused by the pipeline, but the tool refuses it
    # absent: the default goes in explicitly.
    for inp in tool.inputs:
        if inp.required and inp.default is not None:
            for item in items:
                item.setdefault(inp.name, _thaw(inp.default))
    return tuple(items)


def _failed_item(step: StepSnapshot) -> str | None:
    """Why the step failed, if an item of it failed or was cancelled on its own."""
    items = sorted(step.items, key=lambda it: it.index)
    for it in items:
        if it.state in ("FAILED", "CANCELLED"):
            reason = it.error or ("the job was cancelled" if it.state == "CANCELLED" else "the job failed")
            return reason if len(items) == 1 else f"job {it.index}: {reason}"
    return None


def next_actions(snap: RunSnapshot) -> list[Action]:
    """What to do next for the run in ``snap`` (see the module docstring).

    A finished run gets nothing. Steps are considered in topological order, so a failure's
    skips cascade through the graph in one call.
    """
    if snap.state in TERMINAL_RUN_STATES:
        return []
    p = snap.pipeline
    order = topological_order(p)
    if snap.cancel_requested:
        cancels: list[Action] = [
            CancelStep(sid) for sid in order if _step(snap, sid).state not in TERMINAL_STEP_STATES
        ]
        return [*cancels, FinishRun(RunState.CANCELLED, "cancelled by the user")]

    counts = item_counts(p, snap.tools)
    actions: list[Action] = []
    state: dict[str, StepState] = {}  # each step's state once these actions are applied
    errors: dict[str, str] = {}
    for sid in order:
        step = _step(snap, sid)
        state[sid] = step.state
        if step.error:
            errors[sid] = step.error
        if step.state is StepState.RUNNING:
            failed = _failed_item(step)
            if failed is not None:
                actions.append(FailStep(sid, failed))
                state[sid], errors[sid] = StepState.FAILED, failed
            elif step.items and all(it.state == "COMPLETED" for it in step.items):
                try:
                    outputs = _gather(p, snap.tools.get(p.steps[sid].tool), step)
                except _StepFailed as exc:
                    actions.append(FailStep(sid, exc.reason))
                    state[sid], errors[sid] = StepState.FAILED, exc.reason
                else:
                    actions.append(CompleteStep(sid, outputs))
                    state[sid] = StepState.COMPLETED
            continue
        if step.state is not StepState.PENDING:
            continue
        deps = _deps(p.steps[sid])
        blocked = next((d for d in deps if state[d] in _BLOCKING), None)
        if blocked is not None:
            actions.append(SkipStep(sid, f"step '{blocked}' {_BLOCKING[state[blocked]]}"))
            state[sid] = StepState.SKIPPED
            continue
        # Completed in an earlier call, so that its outputs are stored in the snapshot.
        if all(_step(snap, d).state is StepState.COMPLETED for d in deps):
            try:
                items = _resolve(snap, p.steps[sid], counts)
            except _StepFailed as exc:
                actions.append(FailStep(sid, exc.reason))
                state[sid], errors[sid] = StepState.FAILED, exc.reason
            else:
                actions.append(StartStep(sid, items))
                state[sid] = StepState.RUNNING

    if all(st in TERMINAL_STEP_STATES for st in state.values()):
        if all(st is StepState.COMPLETED for st in state.values()):
            actions.append(FinishRun(RunState.COMPLETED, None))
        else:
            actions.append(FinishRun(RunState.FAILED, _run_error(order, state, errors)))
    return actions


def _run_error(order: tuple[str, ...], state: Mapping[str, StepState], errors: Mapping[str, str]) -> str:
    """The first failure's reason, named by its step."""
    for sid in order:
        if state[sid] is StepState.FAILED:
            reason = errors.get(sid)
            return f"step '{sid}' failed: {reason}" if reason else f"step '{sid}' failed"
    for sid in order:
        if state[sid] is StepState.CANCELLED:
            return f"step '{sid}' was cancelled"
    return "a step did not complete"


def retry_steps(snap: RunSnapshot) -> tuple[str, ...]:
    """The steps a retry resets to PENDING: the failed, skipped and cancelled ones (the completed
    keep their outputs and are not run again), in topological order."""
    again = {StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED}
    return tuple(sid for sid in topological_order(snap.pipeline) if _step(snap, sid).state in again)


def run_outputs(snap: RunSnapshot) -> dict[str, dict[str, Any]]:
    """The run's result: the outputs of its ``outputs`` steps that completed, by step id."""
    result: dict[str, dict[str, Any]] = {}
    for sid in output_steps(snap.pipeline):
        step = _step(snap, sid)
        if step.state is StepState.COMPLETED:
            result[sid] = {port: _thaw(value) for port, value in step.outputs.items()}
    return result
