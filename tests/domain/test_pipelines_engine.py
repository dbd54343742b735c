"""The pipeline engine (domain/pipelines/engine.py): stories told through next_actions with a
fake run loop (tests/domain/pipeline_helpers.drive), and properties over random DAGs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from swarmstation.domain.pipelines import (
    RUN,
    STEP,
    CancelStep,
    CompleteStep,
    FailStep,
    FinishRun,
    ItemSnapshot,
    RunState,
    RunTrigger,
    SkipStep,
    StartStep,
    StepSnapshot,
    StepState,
    StepTrigger,
    next_actions,
    retry_steps,
    run_outputs,
)
from tests.domain.pipeline_helpers import (
    apply,
    default_runner,
    drive,
    pipeline,
    set_items,
    snapshot,
)

CHAIN = {
    "enhance": {"tool": "enhance", "inputs": {"idea": {"input": "idea"}}},
    "gen": {"tool": "txt2img", "inputs": {"prompt": {"from": "enhance", "output": "prompt"}, "seed": 7}},
    "big": {"tool": "upscale", "inputs": {"image": {"from": "gen", "output": "image"}}},
}
IDEA = {"idea": {"type": "string"}}


def kinds(actions: list[Any]) -> list[tuple[str, str]]:
    return [(type(a).__name__, getattr(a, "step", "")) for a in actions]


def test_a_three_step_chain_runs_in_order_and_passes_values_between_steps() -> None:
    snap = snapshot(pipeline(CHAIN, IDEA), {"idea": "a cat"})
    final, history, started = drive(snap)

    assert [kinds(h) for h in history] == [
        [("StartStep", "enhance")],
        [("CompleteStep", "enhance")],
        [("StartStep", "gen")],
        [("CompleteStep", "gen")],
        [("StartStep", "big")],
        [("CompleteStep", "big"), ("FinishRun", "")],
    ]
    # The pipeline input, a required input's default filled in, the upstream text, the image ref.
    assert started["enhance"] == ({"idea": "a cat", "style": "photo"},)
    assert started["gen"] == ({"prompt": "enhanced a cat", "seed": 7},)
    assert started["big"] == ({"image": "output:gen-0"},)
    assert history[-1][-1] == FinishRun(RunState.COMPLETED, None)
    assert final.state is RunState.COMPLETED
    assert run_outputs(final) == {"big": {"image": "output:big-0"}}
    assert final.steps["gen"].outputs == {"image": "output:gen-0"}


def test_a_diamond_starts_independent_steps_together_and_joins_them() -> None:
    steps = {
        "a": {"tool": "txt2img", "inputs": {"prompt": "x"}},
        "b": {"tool": "caption", "inputs": {"image": {"from": "a", "output": "image"}}},
        "c": {"tool": "upscale", "inputs": {"image": {"from": "a", "output": "image"}}},
        "d": {
            "tool": "img2img",
            "inputs": {"image": {"from": "c", "output": "image"}, "prompt": {"from": "b", "output": "text"}},
        },
    }
    final, history, started = drive(snapshot(pipeline(steps)))
    assert kinds(history[2]) == [("StartStep", "b"), ("StartStep", "c")]
    assert started["d"] == ({"image": "output:c-0", "prompt": "caption of output:a-0"},)
    # A step with no seed given gets none: the tool draws it.
    assert started["a"] == ({"prompt": "x"},)
    assert final.state is RunState.COMPLETED
    assert run_outputs(final) == {"d": {"image": "output:d-0"}}


def test_variations_fan_out_map_over_the_items_and_a_many_input_gathers_them() -> None:
    steps = {
        "gen": {"tool": "txt2img", "inputs": {"prompt": "x", "seed": 7}, "variations": {"count": 3}},
        "up": {"tool": "upscale", "inputs": {"image": {"from": "gen", "output": "image"}}},
        "sheet": {"tool": "sheet", "inputs": {"images": {"from": "up", "output": "image"}, "columns": 3}},
    }
    final, _history, started = drive(snapshot(pipeline(steps)))
    assert [item["seed"] for item in started["gen"]] == [7, 8, 9]
    assert started["up"] == tuple({"image": f"output:gen-{i}"} for i in range(3))
    assert started["sheet"] == ({"images": ["output:up-0", "output:up-1", "output:up-2"], "columns": 3},)
    assert final.steps["gen"].outputs == {"image": ["output:gen-0", "output:gen-1", "output:gen-2"]}
    assert run_outputs(final) == {"sheet": {"image": "output:sheet-0"}}


def test_count_variations_without_a_seed_use_the_runs_seed() -> None:
    steps = {"gen": {"tool": "txt2img", "inputs": {"prompt": "x"}, "variations": {"count": 2}}}
    _final, _h, started = drive(snapshot(pipeline(steps), seed=2**63 - 1))
    assert [item["seed"] for item in started["gen"]] == [2**63 - 1, 0]
    steps["gen"]["inputs"]["seed"] = -1
    _final, _h, started = drive(snapshot(pipeline(steps), seed=41))
    assert [item["seed"] for item in started["gen"]] == [41, 42]


def test_a_seed_from_a_pipeline_input_is_the_base_of_the_variations() -> None:
    steps = {
        "gen": {
            "tool": "txt2img",
            "inputs": {"prompt": "x", "seed": {"input": "seed"}},
            "variations": {"count": 2},
        }
    }
    p = pipeline(steps, {"seed": {"type": "seed", "required": False, "default": -1}})
    _f, _h, started = drive(snapshot(p, {"seed": 100}))
    assert [item["seed"] for item in started["gen"]] == [100, 101]
    _f, _h, started = drive(snapshot(p, {}, seed=5))
    assert [item["seed"] for item in started["gen"]] == [5, 6]


def test_value_variations_give_one_value_per_item() -> None:
    steps = {
        "gen": {
            "tool": "txt2img",
            "inputs": {"prompt": "x"},
            "variations": {"input": "steps", "values": [10, 20]},
        }
    }
    _f, _h, started = drive(snapshot(pipeline(steps)))
    assert started["gen"] == ({"prompt": "x", "steps": 10}, {"prompt": "x", "steps": 20})


def test_a_many_output_port_concatenates_the_items_lists() -> None:
    steps = {
        "b": {"tool": "batch", "inputs": {"prompt": "x", "seed": 1}, "variations": {"count": 2}},
        "sheet": {"tool": "sheet", "inputs": {"images": {"from": "b", "output": "images"}}},
    }
    _f, _h, started = drive(snapshot(pipeline(steps)))
    assert started["sheet"][0]["images"] == ["output:b-0-a", "output:b-0-b", "output:b-1-a", "output:b-1-b"]
    # One item: the port's list as it is; a single image into a many input: a list of one.
    steps["b"].pop("variations")
    steps["one"] = {"tool": "upscale", "inputs": {"image": "upload:u1"}}
    steps["sheet2"] = {"tool": "sheet", "inputs": {"images": {"from": "one", "output": "image"}}}
    _f, _h, started = drive(snapshot(pipeline(steps)))
    assert started["sheet"][0]["images"] == ["output:b-0-a", "output:b-0-b"]
    assert started["sheet2"][0]["images"] == ["output:one-0"]


def test_a_failure_skips_only_its_dependants_and_the_run_fails_after_the_rest_finishes() -> None:
    steps = {
        "a": {"tool": "txt2img", "inputs": {"prompt": "x"}},
        "b": {"tool": "upscale", "inputs": {"image": {"from": "a", "output": "image"}}},
        "c": {"tool": "caption", "inputs": {"image": {"from": "b", "output": "image"}}},
        "d": {"tool": "enhance", "inputs": {"idea": {"from": "c", "output": "text"}}},
        "solo": {"tool": "txt2img", "inputs": {"prompt": "y"}},
        "solo2": {"tool": "upscale", "inputs": {"image": {"from": "solo", "output": "image"}}},
    }
    snap = snapshot(pipeline(steps))
    snap = apply(snap, next_actions(snap))
    done = ItemSnapshot(0, "COMPLETED", {"image": "output:1"})
    snap = set_items(set_items(snap, "a", [done]), "solo", [done])
    snap = apply(snap, next_actions(snap))
    snap = apply(snap, next_actions(snap))  # b and solo2 start
    assert snap.steps["b"].state is StepState.RUNNING and snap.steps["solo2"].state is StepState.RUNNING
    snap = set_items(snap, "b", [ItemSnapshot(0, "FAILED", error="the worker died")])
    actions = next_actions(snap)
    # b fails, both dependants are skipped in the same call; solo2 still runs, so no FinishRun.
    assert actions == [
        FailStep("b", "the worker died"),
        SkipStep("c", "step 'b' failed"),
        SkipStep("d", "step 'c' was skipped"),
    ]
    snap = apply(snap, actions)
    assert next_actions(snap) == []
    snap = set_items(snap, "solo2", [ItemSnapshot(0, "COMPLETED", {"image": "output:9"})])
    actions = next_actions(snap)
    assert actions == [
        CompleteStep("solo2", {"image": "output:9"}),
        FinishRun(RunState.FAILED, "step 'b' failed: the worker died"),
    ]
    snap = apply(snap, actions)
    assert snap.state is RunState.FAILED
    assert snap.steps["a"].outputs == {"image": "output:1"}
    assert run_outputs(snap) == {"solo2": {"image": "output:9"}}
    assert retry_steps(snap) == ("b", "c", "d")


def test_a_failed_item_of_many_fails_the_step_naming_the_job() -> None:
    steps = {"gen": {"tool": "txt2img", "inputs": {"prompt": "x"}, "variations": {"count": 3}}}
    snap = snapshot(pipeline(steps))
    snap = apply(snap, next_actions(snap))
    snap = set_items(
        snap,
        "gen",
        [
            ItemSnapshot(0, "COMPLETED", {"image": "output:1"}),
            ItemSnapshot(1, "FAILED", error="oom"),
            ItemSnapshot(2, "RUNNING"),
        ],
    )
    assert next_actions(snap) == [
        FailStep("gen", "job 1: oom"),
        FinishRun(RunState.FAILED, "step 'gen' failed: job 1: oom"),
    ]
    # A job cancelled on its own (not by the run) fails its step too.
    snap = set_items(
        snap, "gen", [ItemSnapshot(0, "CANCELLED"), ItemSnapshot(1, "RUNNING"), ItemSnapshot(2, "RUNNING")]
    )
    assert next_actions(snap)[0] == FailStep("gen", "job 0: the job was cancelled")


def test_a_running_step_with_unfinished_jobs_waits_and_is_never_started_twice() -> None:
    snap = snapshot(pipeline(CHAIN, IDEA), {"idea": "i"})
    snap = apply(snap, next_actions(snap))
    assert next_actions(snap) == []  # queued
    snap = set_items(snap, "enhance", [ItemSnapshot(0, "RUNNING")])
    assert next_actions(snap) == []


def test_a_consumed_port_missing_from_a_job_fails_the_step_that_should_have_produced_it() -> None:
    snap = snapshot(pipeline(CHAIN, IDEA), {"idea": "i"})
    snap = apply(snap, next_actions(snap))
    snap = set_items(snap, "enhance", [ItemSnapshot(0, "COMPLETED", {})])
    assert next_actions(snap)[0] == FailStep("enhance", "its job produced no output 'prompt'")


def test_cancel_wins_cancels_every_unfinished_step_and_finishes_the_run() -> None:
    snap = snapshot(pipeline(CHAIN, IDEA), {"idea": "i"})
    snap = apply(snap, next_actions(snap))
    snap = set_items(snap, "enhance", [ItemSnapshot(0, "COMPLETED", {"prompt": "p"})])
    snap = apply(snap, next_actions(snap))
    snap = apply(snap, next_actions(snap))  # gen RUNNING
    snap = set_items(snap, "gen", [ItemSnapshot(0, "COMPLETED", {"image": "output:3"})])
    actions = next_actions(replace(snap, cancel_requested=True))
    assert actions == [
        CancelStep("gen"),
        CancelStep("big"),
        FinishRun(RunState.CANCELLED, "cancelled by the user"),
    ]
    snap = apply(snap, actions)
    assert snap.state is RunState.CANCELLED
    assert snap.steps["enhance"].state is StepState.COMPLETED
    assert next_actions(replace(snap, cancel_requested=True)) == []
    assert retry_steps(snap) == ("gen", "big")


def test_a_finished_run_gets_no_actions() -> None:
    final, _h, _s = drive(snapshot(pipeline(CHAIN, IDEA), {"idea": "i"}))
    assert next_actions(final) == []


def test_retry_reruns_only_the_failed_and_skipped_steps_reusing_finished_outputs() -> None:
    def flaky(step: str, index: int, values: Mapping[str, Any]) -> tuple[str, Any]:
        return ("FAILED", "worker killed") if step == "gen" else default_runner(step, index, values)

    failed, _h, first = drive(snapshot(pipeline(CHAIN, IDEA), {"idea": "a dog"}), flaky)
    assert failed.state is RunState.FAILED
    assert set(first) == {"enhance", "gen"}
    again = retry_steps(failed)
    assert again == ("gen", "big")
    steps = dict(failed.steps)
    for sid in again:
        steps[sid] = StepSnapshot(id=sid, state=STEP.next_state(steps[sid].state, StepTrigger.RETRY))
    retried = replace(failed, steps=steps, state=RUN.next_state(failed.state, RunTrigger.RETRY))
    final, history, started = drive(retried)
    assert set(started) == {"gen", "big"}  # enhance is not run again
    assert started["gen"] == ({"prompt": "enhanced a dog", "seed": 7},)
    assert kinds(history[0]) == [("StartStep", "gen")]
    assert final.state is RunState.COMPLETED


def test_a_step_not_yet_in_the_snapshot_counts_as_pending() -> None:
    snap = snapshot(pipeline(CHAIN, IDEA), {"idea": "i"})
    snap = replace(snap, steps={})
    assert kinds(next_actions(snap)) == [("StartStep", "enhance")]


def test_an_optional_pipeline_input_without_a_value_is_left_to_the_tool() -> None:
    steps = {"gen": {"tool": "txt2img", "inputs": {"prompt": "x", "steps": {"input": "steps"}}}}
    p = pipeline(steps, {"steps": {"type": "integer", "required": False}})
    assert next_actions(snapshot(p)) == [StartStep("gen", ({"prompt": "x"},))]
    assert next_actions(snapshot(p, {"steps": 30})) == [StartStep("gen", ({"prompt": "x", "steps": 30},))]


# --------------------------------------------------------------------------- properties


@st.composite
def dags(draw: st.DrawFn) -> dict[str, Any]:
    """Random DAGs of upscale steps over one or two txt2img roots (edges only to earlier steps)."""
    n = draw(st.integers(2, 9))
    steps: dict[str, Any] = {"s0": {"tool": "txt2img", "inputs": {"prompt": "x"}}}
    for i in range(1, n):
        if draw(st.booleans()) and i < 3:
            steps[f"s{i}"] = {"tool": "txt2img", "inputs": {"prompt": "y"}}
            continue
        j = draw(st.integers(0, i - 1))
        steps[f"s{i}"] = {"tool": "upscale", "inputs": {"image": {"from": f"s{j}", "output": "image"}}}
    return steps


def _ancestors(steps: dict[str, Any], sid: str) -> set[str]:
    src = steps[sid]["inputs"].get("image")
    if not isinstance(src, dict):
        return set()
    return {src["from"]} | _ancestors(steps, src["from"])


@settings(max_examples=60, deadline=None)
@given(dags(), st.sets(st.integers(0, 8), max_size=3))
def test_random_dags_start_steps_after_their_deps_and_skip_exactly_the_dependants_of_failures(
    steps: dict[str, Any], failing: set[int]
) -> None:
    fail = {f"s{i}" for i in failing if f"s{i}" in steps}

    def runner(step: str, index: int, values: Mapping[str, Any]) -> tuple[str, Any]:
        return ("FAILED", f"{step} broke") if step in fail else default_runner(step, index, values)

    final, history, _started = drive(snapshot(pipeline(steps)), runner)
    completed_at: dict[str, int] = {}
    started_at: dict[str, int] = {}
    for t, actions in enumerate(history):
        for a in actions:
            if isinstance(a, CompleteStep):
                completed_at[a.step] = t
            if isinstance(a, StartStep):
                started_at[a.step] = t
    for sid, t in started_at.items():
        for dep in _ancestors(steps, sid):
            assert completed_at[dep] < t
    doomed = {sid for sid in steps if _ancestors(steps, sid) & fail}
    states = {sid: s.state for sid, s in final.steps.items()}
    assert {s for s, st_ in states.items() if st_ is StepState.SKIPPED} == doomed
    assert {s for s, st_ in states.items() if st_ is StepState.FAILED} == fail - doomed
    assert {s for s, st_ in states.items() if st_ is StepState.COMPLETED} == set(steps) - doomed - fail
    assert final.state is (RunState.FAILED if fail else RunState.COMPLETED)
    finishes = [a for actions in history for a in actions if isinstance(a, FinishRun)]
    assert len(finishes) == 1


def test_a_tool_removed_since_the_run_was_created_fails_its_step_when_it_would_start() -> None:
    snap = snapshot(pipeline(CHAIN, IDEA), {"idea": "i"})
    gone = {slug: spec for slug, spec in snap.tools.items() if slug != "enhance"}
    actions = next_actions(replace(snap, tools=gone))
    assert actions == [
        FailStep("enhance", "tool 'enhance' no longer exists"),
        SkipStep("gen", "step 'enhance' failed"),
        SkipStep("big", "step 'gen' was skipped"),
        FinishRun(RunState.FAILED, "step 'enhance' failed: tool 'enhance' no longer exists"),
    ]
