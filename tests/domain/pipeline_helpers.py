"""Small tool specs and a fake run loop for the pipeline domain's tests.

The specs mirror the shapes of the real tools (a txt2img with a seed, an upscaler, an LLM prompt
enhancer, a caption, a contact sheet gathering many images) without their ComfyUI workflows: the
pipeline domain only reads names, types, ``required``/``default``, ``many`` and the outputs.
:func:`drive` applies the engine's actions to a snapshot the way ``control/runs.py`` does, with
jobs that complete (or fail) as a test says, so that stories can be told end to end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from swarmstation.domain.pipelines import (
    RUN,
    STEP,
    Action,
    CancelStep,
    CompleteStep,
    FailStep,
    FinishRun,
    ItemSnapshot,
    Pipeline,
    RunSnapshot,
    RunState,
    RunTrigger,
    SkipStep,
    StartStep,
    StepSnapshot,
    StepState,
    StepTrigger,
    check_run_inputs,
    next_actions,
    pipeline_from_dict,
)
from swarmstation.domain.tools import InputSpec, OutputSpec, ToolSpec


def inp(name: str, type: Any = "string", **kw: Any) -> InputSpec:
    return InputSpec(name=name, type=type, bindings=(), **kw)


def out(name: str, type: Any = "image", **kw: Any) -> OutputSpec:
    return OutputSpec(name=name, type=type, **kw)


def tool(slug: str, inputs: list[InputSpec], outputs: list[OutputSpec], kind: Any = "image") -> ToolSpec:
    return ToolSpec(
        slug=slug,
        name=slug,
        description="",
        category="test",
        base_model="other",
        workflow={},
        inputs=tuple(inputs),
        pool="control",
        accepts_loras=False,
        kind=kind,
        outputs=tuple(outputs),
    )


def tools() -> dict[str, ToolSpec]:
    specs = [
        tool(
            "txt2img",
            [
                inp("prompt", required=True),
                inp("seed", "seed"),
                inp("steps", "integer", minimum=1, maximum=100),
            ],
            [out("image")],
        ),
        tool("upscale", [inp("image", "image", required=True)], [out("image")]),
        tool(
            "enhance",
            [inp("idea", required=True), inp("style", required=True, default="photo")],
            [out("prompt", "text")],
            kind="llm",
        ),
        tool("caption", [inp("image", "image", required=True)], [out("text", "text")], kind="llm"),
        tool(
            "sheet",
            [inp("images", "image", required=True, many=True, max_items=8), inp("columns", "integer")],
            [out("image")],
        ),
        tool("batch", [inp("prompt", required=True), inp("seed", "seed")], [out("images", many=True)]),
        tool(
            "img2img",
            [inp("image", "image", required=True), inp("prompt", required=True), inp("seed", "seed")],
            [out("image")],
        ),
        tool("counter", [inp("n", "integer", required=True)], [out("n", "integer")]),
        tool("noseed", [inp("prompt", required=True)], [out("image")]),
    ]
    return {t.slug: t for t in specs}


def pipeline(steps: dict[str, Any], inputs: dict[str, Any] | None = None, **extra: Any) -> Pipeline:
    return pipeline_from_dict({"inputs": inputs or {}, "steps": steps, **extra})


def snapshot(p: Pipeline, inputs: Mapping[str, Any] | None = None, *, seed: int = 1000) -> RunSnapshot:
    return RunSnapshot(
        pipeline=p,
        tools=tools(),
        inputs=check_run_inputs(p, inputs or {}),
        seed=seed,
        state=RunState.PENDING,
        steps={sid: StepSnapshot(id=sid, state=StepState.PENDING) for sid in p.steps},
    )


def apply(snap: RunSnapshot, actions: list[Action]) -> RunSnapshot:
    """Apply actions through the lifecycles, as control/runs.py does (jobs start QUEUED)."""
    steps = dict(snap.steps)
    state = snap.state
    for action in actions:
        if isinstance(action, FinishRun):
            trigger = {
                RunState.COMPLETED: RunTrigger.COMPLETE,
                RunState.FAILED: RunTrigger.FAIL,
                RunState.CANCELLED: RunTrigger.CANCEL,
            }[action.state]
            state = RUN.next_state(state, trigger)
            continue
        step = steps[action.step]
        if isinstance(action, StartStep):
            if state is RunState.PENDING:
                state = RUN.next_state(state, RunTrigger.START)
            items = tuple(ItemSnapshot(index=i, state="QUEUED") for i in range(len(action.items)))
            steps[action.step] = replace(
                step, state=STEP.next_state(step.state, StepTrigger.START), items=items
            )
        elif isinstance(action, CompleteStep):
            steps[action.step] = replace(
                step, state=STEP.next_state(step.state, StepTrigger.COMPLETE), outputs=dict(action.outputs)
            )
        elif isinstance(action, FailStep):
            steps[action.step] = replace(
                step, state=STEP.next_state(step.state, StepTrigger.FAIL), error=action.reason
            )
        elif isinstance(action, SkipStep):
            steps[action.step] = replace(step, state=STEP.next_state(step.state, StepTrigger.SKIP))
        elif isinstance(action, CancelStep):
            steps[action.step] = replace(step, state=STEP.next_state(step.state, StepTrigger.CANCEL))
    return replace(snap, steps=steps, state=state)


def set_items(snap: RunSnapshot, sid: str, items: list[ItemSnapshot]) -> RunSnapshot:
    steps = dict(snap.steps)
    steps[sid] = replace(steps[sid], items=tuple(items))
    return replace(snap, steps=steps)


#: A job runner for drive(): (step id, item index, its input values) → ("COMPLETED", outputs) or
#: ("FAILED", error).
Runner = Callable[[str, int, Mapping[str, Any]], tuple[str, Any]]


def default_runner(step: str, index: int, values: Mapping[str, Any]) -> tuple[str, Any]:
    """Every job completes; an image port gets a reference naming the job, others a value."""
    return "COMPLETED", {
        "image": f"output:{step}-{index}",
        "images": [f"output:{step}-{index}-a", f"output:{step}-{index}-b"],
        "prompt": f"enhanced {values.get('idea')}",
        "text": f"caption of {values.get('image')}",
        "n": values.get("n"),
    }


def drive(
    snap: RunSnapshot, runner: Runner = default_runner, *, rounds: int = 50
) -> tuple[RunSnapshot, list[list[Action]], dict[str, tuple[Mapping[str, Any], ...]]]:
    """Run the engine to the end: after each call's actions, every queued job runs (all at once,
    as independent steps would). Answers the final snapshot, each call's actions and the items
    each StartStep asked for."""
    history: list[list[Action]] = []
    started: dict[str, tuple[Mapping[str, Any], ...]] = {}
    for _ in range(rounds):
        actions = next_actions(snap)
        history.append(actions)
        snap = apply(snap, actions)
        for action in actions:
            if isinstance(action, StartStep):
                assert action.step not in started, f"step {action.step} started twice"
                started[action.step] = action.items
        if snap.state in (RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED):
            return snap, history, started
        for sid, step in snap.steps.items():
            if step.state is StepState.RUNNING and any(it.state == "QUEUED" for it in step.items):
                items = []
                for it in step.items:
                    state, result = runner(sid, it.index, started[sid][it.index])
                    if state == "COMPLETED":
                        items.append(replace(it, state=state, outputs=result))
                    else:
                        items.append(replace(it, state=state, error=result))
                snap = set_items(snap, sid, items)
    raise AssertionError("the run did not finish")
