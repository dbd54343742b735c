"""Pipeline runs (control/runs.py) on SQLite and PostgreSQL, with the step jobs moved by hand as a
worker or the local executor would (control.jobs assign/start/complete/fail): one hold per run
attempt and one capture per charged step job, the rest released at the end; steps starting as
their inputs are ready, images passed as output references; a failed step skipping its
dependants; retry, cancel, requeued jobs, variations, the author's royalty, refusals that write
nothing, and the leader loop picking runs up from the database."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.control import charging, ledger, runs, saved_pipelines, submission
from swarmstation.control import jobs as jobs_ops
from swarmstation.control.notify import user_runs_key
from swarmstation.domain.credits import EntryKind, HoldState, InsufficientCredits
from swarmstation.domain.errors import Conflict, InvalidInput
from swarmstation.domain.pipelines import PipelineError, RunState, StepState
from swarmstation.domain.prices import PriceKind, PriceModel
from swarmstation.domain.states import JobState, JobTrigger
from swarmstation.store.db import transaction
from swarmstation.store.models import (
    Hold,
    Instance,
    Job,
    JobCharge,
    LedgerEntry,
    Output,
    Run,
    RunEvent,
    RunStep,
    Tool,
    User,
)
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user

GEN, BIG = "sdxl-txt2img", "upscale-4x"
PIPELINE: dict[str, Any] = {
    "inputs": {"idea": {"type": "string"}},
    "steps": {
        "gen": {"tool": GEN, "inputs": {"prompt": {"input": "idea"}, "seed": 7}},
        "big": {"tool": BIG, "inputs": {"image": {"from": "gen", "output": "image"}}},
    },
}
NODE = {GEN: "9", BIG: "4"}  # each tool's image output node (the catalog's outputs)


@pytest.fixture
def plane(settings: Settings, clock: FakeClock) -> Iterator[ControlPlane]:
    cp = build(settings, provider=None, clock=clock)
    with transaction(cp.state.sessions) as s:
        price(s, clock, GEN, PriceModel(PriceKind.PER_RUN, 100))
        # per GPU second, at most 50: a run of 2 s costs 6, so most of its share is released
        price(s, clock, BIG, PriceModel(PriceKind.PER_GPU_SECOND, 3, cap=50))
    yield cp


def price(s: Session, clock: FakeClock, slug: str, model: PriceModel) -> None:
    tool = s.get(Tool, slug)
    assert tool is not None
    charging.set_price(s, tool, model, admin_id="admin", now=clock())


def funded(plane: ControlPlane, clock: FakeClock, credits: int) -> User:
    with transaction(plane.state.sessions) as s:
        user, _ = add_user(s, clock())
        if credits:
            ledger.grant(
                s, user_id=user.id, amount=credits, reason="t", actor_id=None, key=f"g:{user.id}", now=clock()
            )
        s.expunge(user)
        return user


def create(
    plane: ControlPlane,
    clock: FakeClock,
    user: User,
    pipeline: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
    saved: saved_pipelines.SavedRef | None = None,
) -> str:
    with transaction(plane.state.sessions) as s:
        me = s.get(User, user.id)
        assert me is not None
        run = runs.create_run(
            s,
            user=me,
            pipeline_dict=copy.deepcopy(pipeline or PIPELINE),
            inputs=inputs if inputs is not None else {"idea": "a storm"},
            saved=saved,
            settings=plane.state.settings,
            now=clock(),
            matchers=plane.state.matchers,
        )
        return run.id


def advance(plane: ControlPlane, clock: FakeClock, run_id: str) -> None:
    with transaction(plane.state.sessions) as s:
        run = s.scalar(select(Run).where(Run.id == run_id).with_for_update())
        assert run is not None
        runs.advance(s, run, plane.state.settings, clock(), matchers=plane.state.matchers)


def step_jobs(plane: ControlPlane, run_id: str, step: str, attempt: int | None = None) -> list[str]:
    with transaction(plane.state.sessions) as s:
        query = select(Job.id).where(Job.run_id == run_id, Job.run_step == step)
        if attempt is not None:
            query = query.where(Job.run_attempt == attempt)
        return list(s.scalars(query.order_by(Job.run_item)))


def start(plane: ControlPlane, clock: FakeClock, job_id: str) -> None:
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        if job.backend == "local":
            jobs_ops.assign_external(s, job, backend="local", run_id="", now=clock())
        else:
            inst = s.scalar(select(Instance).limit(1)) or add_instance(s, clock())[0]
            jobs_ops.assign_job(s, job, inst, lease_seconds=60, now=clock())
        jobs_ops.mark_running(s, job, lease_seconds=60, now=clock())


def complete(plane: ControlPlane, clock: FakeClock, job_id: str, *, seconds: float = 2.0) -> str:
    """Start (if needed) and complete the job with one uploaded image on its tool's output node;
    answers the output's id."""
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        queued = job.state == JobState.QUEUED
    if queued:
        start(plane, clock, job_id)
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        node = NODE.get(job.tool_slug, "image")  # a local tool's port is its name
        out = Output(
            id=str(uuid.uuid4()),
            job_id=job.id,
            key=f"outputs/{job.id}/{node}.png",
            filename=f"{node}.png",
            content_type="image/png",
            size=10,
            node_id=node,
            uploaded=True,
            created_at=clock(),
        )
        s.add(out)
        s.flush()
        jobs_ops.complete_job(s, job, timings={"run_seconds": seconds}, now=clock())
        return out.id


def fail(plane: ControlPlane, clock: FakeClock, job_id: str, reason: str = "the model exploded") -> None:
    start(plane, clock, job_id)
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        jobs_ops.fail_job(s, job, reason=reason, now=clock())


def view(plane: ControlPlane, run_id: str) -> tuple[Run, dict[str, RunStep]]:
    with transaction(plane.state.sessions) as s:
        run = s.get(Run, run_id)
        assert run is not None
        steps = {rs.step_id: rs for rs in s.scalars(select(RunStep).where(RunStep.run_id == run_id))}
        s.expunge_all()
        return run, steps


def states(plane: ControlPlane, run_id: str) -> tuple[RunState, dict[str, StepState]]:
    run, steps = view(plane, run_id)
    return run.state, {k: v.state for k, v in steps.items()}


def run_entries(plane: ControlPlane, run_id: str) -> list[tuple[EntryKind, int, int]]:
    with transaction(plane.state.sessions) as s:
        rows = s.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.ref_type == "run", LedgerEntry.ref_id == run_id)
            .order_by(LedgerEntry.id)
        )
        return [(e.kind, e.amount, e.held_change) for e in rows]


def balance(plane: ControlPlane, user_id: str) -> ledger.Balance:
    with transaction(plane.state.sessions) as s:
        return ledger.balance(s, user_id)


def books(plane: ControlPlane) -> None:
    with transaction(plane.state.sessions) as s:
        assert ledger.verify(s) == []


def events(plane: ControlPlane, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    with transaction(plane.state.sessions) as s:
        rows = s.scalars(select(RunEvent).where(RunEvent.run_id == run_id).order_by(RunEvent.id))
        return [(e.type, dict(e.data)) for e in rows]


def count(plane: ControlPlane, model: type[Any]) -> int:
    with transaction(plane.state.sessions) as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


# -- the stories ---------------------------------------------------------------------------------


def test_a_run_holds_its_quote_once_captures_each_step_and_releases_the_rest(
    plane: ControlPlane, clock: FakeClock
) -> None:
    user = funded(plane, clock, 1000)
    run_id = create(plane, clock, user)
    run, steps = view(plane, run_id)
    assert (run.state, run.quote, run.attempt) == (RunState.RUNNING, 150, 1)  # 100 + the cap of 50
    assert {k: (v.state, v.quote) for k, v in steps.items()} == {
        "gen": (StepState.RUNNING, 100),
        "big": (StepState.PENDING, 50),
    }
    assert balance(plane, user.id) == ledger.Balance(1000, 150, 850)
    [gen] = step_jobs(plane, run_id, "gen")
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, gen)
        charge = s.get(JobCharge, gen)
        assert job is not None and charge is not None
        assert (job.run_item, job.run_attempt, job.backend, job.inputs["prompt"]) == (0, 1, "pool", "a storm")
        assert (charge.hold_id, charge.quote) == (run.hold_id, 100)  # the run's hold, no hold of its own
        assert s.scalar(select(func.count()).select_from(Hold)) == 1

    image = complete(plane, clock, gen)
    advance(plane, clock, run_id)
    run, steps = view(plane, run_id)
    assert steps["gen"].state == StepState.COMPLETED and steps["gen"].outputs == {"image": f"output:{image}"}
    assert (steps["gen"].cost, run.captured) == (100, 100)
    [big] = step_jobs(plane, run_id, "big")
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, big)
        assert job is not None and job.inputs["image"] == f"output:{image}"
        # the image goes to the worker from the object store, as an upload would
        assert job.input_images["image"]["key"] == f"outputs/{gen}/9.png"

    complete(plane, clock, big, seconds=2.0)
    advance(plane, clock, run_id)
    run, steps = view(plane, run_id)
    assert run.state == RunState.COMPLETED and run.finished_at is not None and run.error is None
    assert (steps["big"].cost, run.captured) == (6, 106)
    assert run_entries(plane, run_id) == [
        (EntryKind.HOLD, 0, 150),
        (EntryKind.CAPTURE, -100, -100),
        (EntryKind.CAPTURE, -6, -6),
        (EntryKind.RELEASE, 0, -44),
    ]
    assert balance(plane, user.id) == ledger.Balance(894, 0, 894)
    with transaction(plane.state.sessions) as s:
        hold = s.get(Hold, run.hold_id)
        assert hold is not None and (hold.state, hold.captured) == (HoldState.CAPTURED, 106)
    books(plane)

    seen = events(plane, run_id)
    flow = [(t, d.get("step"), d["state"]) for t, d in seen if t != "job"]
    assert flow == [
        ("state", None, "PENDING"),
        ("state", None, "RUNNING"),
        ("step", "gen", "RUNNING"),
        ("step", "gen", "COMPLETED"),
        ("step", "big", "RUNNING"),
        ("step", "big", "COMPLETED"),
        ("state", None, "COMPLETED"),
    ]
    job_states = [(d["job_id"], d["state"]) for t, d in seen if t == "job"]
    assert (
        (gen, "QUEUED") in job_states
        and (gen, "COMPLETED") in job_states
        and (big, "COMPLETED") in job_states
    )


def test_a_failed_step_skips_its_dependants_and_a_retry_reruns_only_those(
    plane: ControlPlane, clock: FakeClock
) -> None:
    three = copy.deepcopy(PIPELINE)
    three["steps"]["small"] = {
        "tool": "image-resize",
        "inputs": {"image": {"from": "big", "output": "image"}, "width": 64},
    }
    user = funded(plane, clock, 1000)
    run_id = create(plane, clock, user, three)
    run, steps = view(plane, run_id)
    small_quote = steps["small"].quote
    assert run.quote == 150 + small_quote and small_quote >= 1
    complete(plane, clock, step_jobs(plane, run_id, "gen")[0])
    advance(plane, clock, run_id)
    [big] = step_jobs(plane, run_id, "big")
    fail(plane, clock, big, "ComfyUI said no")
    advance(plane, clock, run_id)
    run, steps = view(plane, run_id)
    assert run.state == RunState.FAILED and run.error == "step 'big' failed: ComfyUI said no"
    assert {k: v.state for k, v in steps.items()} == {
        "gen": StepState.COMPLETED,
        "big": StepState.FAILED,
        "small": StepState.SKIPPED,
    }
    assert steps["small"].error == "step 'big' failed"
    # the failed job is free; what was not captured went back
    assert balance(plane, user.id) == ledger.Balance(900, 0, 900)
    books(plane)
    gen_outputs = steps["gen"].outputs

    with transaction(plane.state.sessions) as s:
        row = s.scalar(select(Run).where(Run.id == run_id).with_for_update())
        assert row is not None
        runs.retry_run(s, row, plane.state.settings, clock())
    run, steps = view(plane, run_id)
    assert (run.state, run.attempt, run.quote, run.error) == (RunState.RUNNING, 2, 50 + small_quote, None)
    assert (steps["gen"].state, steps["gen"].outputs) == (StepState.COMPLETED, gen_outputs)
    assert (steps["big"].state, steps["small"].state) == (StepState.RUNNING, StepState.PENDING)
    assert len(step_jobs(plane, run_id, "gen")) == 1  # not run again
    [big2] = step_jobs(plane, run_id, "big", attempt=2)
    assert balance(plane, user.id).held == 50 + small_quote

    complete(plane, clock, big2, seconds=1.0)
    advance(plane, clock, run_id)
    [small] = step_jobs(plane, run_id, "small", attempt=2)
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, small)
        assert job is not None and job.backend == "local" and job.inputs["width"] == 64
    complete(plane, clock, small)
    advance(plane, clock, run_id)
    run, steps = view(plane, run_id)
    assert run.state == RunState.COMPLETED and all(v.state == StepState.COMPLETED for v in steps.values())
    kinds = [k for k, _, _ in run_entries(plane, run_id)]
    assert kinds.count(EntryKind.HOLD) == 2 and kinds.count(EntryKind.CAPTURE) == 3
    assert run.captured == 100 + 3 + small_quote == sum(v.cost for v in steps.values())
    assert balance(plane, user.id) == ledger.Balance(1000 - run.captured, 0, 1000 - run.captured)
    books(plane)


def test_a_job_the_scheduler_requeues_is_not_a_step_failure(plane: ControlPlane, clock: FakeClock) -> None:
    user = funded(plane, clock, 1000)
    run_id = create(plane, clock, user)
    [gen] = step_jobs(plane, run_id, "gen")
    start(plane, clock, gen)
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, gen)
        assert job is not None
        jobs_ops.requeue_job(s, job, trigger=JobTrigger.INSTANCE_LOST, reason="worker killed", now=clock())
    advance(plane, clock, run_id)
    assert states(plane, run_id) == (RunState.RUNNING, {"gen": StepState.RUNNING, "big": StepState.PENDING})
    complete(plane, clock, gen)  # its second attempt
    advance(plane, clock, run_id)
    assert states(plane, run_id)[1]["gen"] == StepState.COMPLETED
    assert step_jobs(plane, run_id, "gen") == [gen]
    attempts = [d["attempt"] for t, d in events(plane, run_id) if t == "job" and d["job_id"] == gen]
    assert attempts[0] == 0 and attempts[-1] == 2


def test_cancel_cancels_the_unfinished_steps_and_releases_the_hold(
    plane: ControlPlane, clock: FakeClock
) -> None:
    user = funded(plane, clock, 1000)
    run_id = create(plane, clock, user)
    [gen] = step_jobs(plane, run_id, "gen")
    with transaction(plane.state.sessions) as s:
        row = s.scalar(select(Run).where(Run.id == run_id).with_for_update())
        assert row is not None
        runs.cancel_run(s, row, plane.state.settings, clock())
    assert states(plane, run_id) == (
        RunState.CANCELLED,
        {"gen": StepState.CANCELLED, "big": StepState.CANCELLED},
    )
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, gen)
        assert job is not None and job.state == JobState.CANCELLED
        row = s.get(Run, run_id)
        assert row is not None
        with pytest.raises(Conflict):
            runs.cancel_run(s, row, plane.state.settings, clock())
    assert balance(plane, user.id) == ledger.Balance(1000, 0, 1000)  # it never started: free
    assert [k for k, _, _ in run_entries(plane, run_id)] == [EntryKind.HOLD, EntryKind.RELEASE]
    books(plane)


def test_variations_fan_out_and_the_next_step_takes_each_item(plane: ControlPlane, clock: FakeClock) -> None:
    varied = copy.deepcopy(PIPELINE)
    varied["steps"]["gen"]["variations"] = {"count": 3}
    user = funded(plane, clock, 1000)
    run_id = create(plane, clock, user, varied)
    run, steps = view(plane, run_id)
    assert (steps["gen"].items, steps["big"].items) == (3, 3)
    assert run.quote == 3 * 100 + 3 * 50
    gens = step_jobs(plane, run_id, "gen")
    with transaction(plane.state.sessions) as s:
        seeds = [s.get(Job, j).inputs["seed"] for j in gens]  # type: ignore[union-attr]
        assert seeds == [7, 8, 9]
        assert [s.get(JobCharge, j).quote for j in gens] == [100, 100, 100]  # type: ignore[union-attr]
    images = [complete(plane, clock, j) for j in gens]
    advance(plane, clock, run_id)
    _, steps = view(plane, run_id)
    assert steps["gen"].outputs == {"image": [f"output:{i}" for i in images]}
    bigs = step_jobs(plane, run_id, "big")
    with transaction(plane.state.sessions) as s:
        assert [s.get(Job, j).inputs["image"] for j in bigs] == [f"output:{i}" for i in images]  # type: ignore[union-attr]
    for j in bigs:
        complete(plane, clock, j, seconds=1.0)
    advance(plane, clock, run_id)
    run, _ = view(plane, run_id)
    assert (run.state, run.captured) == (RunState.COMPLETED, 300 + 9)
    books(plane)


def test_a_saved_pipeline_run_by_another_user_pays_its_author_out_of_each_capture(
    plane: ControlPlane, clock: FakeClock
) -> None:
    author, other = funded(plane, clock, 0), funded(plane, clock, 1000)
    with transaction(plane.state.sessions) as s:
        me = s.get(User, author.id)
        assert me is not None
        saved, _ = saved_pipelines.save(
            s,
            owner=me,
            name="storm",
            description="",
            definition=PIPELINE,
            exposed=[{"name": "idea", "label": "Idea"}],
            visibility="public",
            settings=plane.state.settings,
            now=clock(),
        )
        saved_id = saved.id
    with transaction(plane.state.sessions) as s:
        them = s.get(User, other.id)
        assert them is not None
        ref = saved_pipelines.resolve_for_run(
            s, user=them, pipeline_id=saved_id, version=None, inputs={"idea": "x"}
        )
    run_id = create(plane, clock, other, saved=ref)
    run, _ = view(plane, run_id)
    assert (run.pipeline_id, run.pipeline_version, run.author_id) == (saved_id, 1, author.id)
    complete(plane, clock, step_jobs(plane, run_id, "gen")[0])
    advance(plane, clock, run_id)
    complete(plane, clock, step_jobs(plane, run_id, "big")[0], seconds=10.0)  # 30 credits
    advance(plane, clock, run_id)
    run, _ = view(plane, run_id)
    assert (run.state, run.captured) == (RunState.COMPLETED, 130)
    # 5% of each capture, rounded down: 100 -> 5, 30 -> 1
    assert balance(plane, author.id).balance == 6
    assert balance(plane, other.id).balance == 1000 - 130
    books(plane)

    # the author's own run of it pays no royalty
    with transaction(plane.state.sessions) as s:
        me = s.get(User, author.id)
        assert me is not None
        ledger.grant(s, user_id=author.id, amount=500, reason="t", actor_id=None, key="g2", now=clock())
        mine = saved_pipelines.resolve_for_run(
            s, user=me, pipeline_id=saved_id, version=None, inputs={"idea": "y"}
        )
    own = create(plane, clock, author, saved=mine)
    complete(plane, clock, step_jobs(plane, own, "gen")[0])
    advance(plane, clock, own)
    assert balance(plane, author.id).balance == 6 + 500 - 100


def test_too_few_credits_refuses_the_run_and_writes_nothing(plane: ControlPlane, clock: FakeClock) -> None:
    user = funded(plane, clock, 120)  # the run needs 150
    before = (count(plane, Run), count(plane, Job), count(plane, Hold), count(plane, RunEvent))
    with pytest.raises(InsufficientCredits) as info:
        create(plane, clock, user)
    assert (info.value.required, info.value.available) == (150, 120)
    assert (count(plane, Run), count(plane, Job), count(plane, Hold), count(plane, RunEvent)) == before
    assert balance(plane, user.id) == ledger.Balance(120, 0, 120)


def test_bad_pipelines_and_inputs_are_refused_naming_the_step_and_port(
    plane: ControlPlane, clock: FakeClock
) -> None:
    user = funded(plane, clock, 1000)
    mismatch = copy.deepcopy(PIPELINE)
    mismatch["steps"]["again"] = {"tool": GEN, "inputs": {"prompt": {"from": "big", "output": "image"}}}
    with pytest.raises(PipelineError) as info:
        create(plane, clock, user, mismatch)
    assert (info.value.step, info.value.port, info.value.field) == (
        "again",
        "prompt",
        "steps.again.inputs.prompt",
    )
    cycle = copy.deepcopy(PIPELINE)
    cycle["steps"]["gen"]["inputs"]["prompt"] = {"from": "big", "output": "image"}
    with pytest.raises(PipelineError, match="cycle"):
        create(plane, clock, user, cycle)
    with pytest.raises(PipelineError) as info:
        create(plane, clock, user, inputs={})
    assert info.value.field == "inputs.idea"
    unknown = copy.deepcopy(PIPELINE)
    unknown["steps"]["big"]["tool"] = "nope"
    with pytest.raises(PipelineError) as info:
        create(plane, clock, user, unknown)
    assert info.value.step == "big"

    # another user's output is as unknown as a missing one
    stranger = funded(plane, clock, 1000)
    theirs = create(plane, clock, stranger)
    image = complete(plane, clock, step_jobs(plane, theirs, "gen")[0])
    steal: dict[str, Any] = {
        "steps": {"big": {"tool": BIG, "inputs": {"image": f"output:{image}"}}},
    }
    runs_before = count(plane, Run)
    with pytest.raises(InvalidInput) as bad:
        create(plane, clock, user, steal, inputs={})
    assert "unknown output" in bad.value.detail and bad.value.errors[0].field == "steps.big.inputs.image"
    assert count(plane, Run) == runs_before
    # the owner may use it
    mine = create(plane, clock, stranger, steal, inputs={})
    assert len(step_jobs(plane, mine, "big")) == 1
    assert balance(plane, user.id) == ledger.Balance(1000, 0, 1000)


def test_the_leader_loop_advances_runs_from_the_database(
    plane: ControlPlane, clock: FakeClock, settings: Settings
) -> None:
    user = funded(plane, clock, 1000)
    run_id = create(plane, clock, user)
    complete(plane, clock, step_jobs(plane, run_id, "gen")[0])
    woken: list[str] = []
    # a fresh runner (as after a restart) with nothing but the database
    runner = runs.Runner(settings, plane.state.sessions, clock, wake=woken.append)
    runner.tick()
    assert woken == [f"run:{run_id}", user_runs_key(user.id)]  # the run, and its user's conversations
    assert states(plane, run_id)[1] == {"gen": StepState.COMPLETED, "big": StepState.RUNNING}
    woken.clear()
    runner.tick()
    assert woken == []  # nothing changed
    complete(plane, clock, step_jobs(plane, run_id, "big")[0])
    assert runs.advance_all(plane.state.sessions, settings, clock) == [run_id]
    assert states(plane, run_id)[0] == RunState.COMPLETED
    assert runs.advance_all(plane.state.sessions, settings, clock) == []


def test_a_free_run_holds_nothing(plane: ControlPlane, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        admin, _ = add_user(s, clock(), role="admin")
        admin_id = admin.id
    run_id = create(plane, clock, User(id=admin_id))
    run, _ = view(plane, run_id)
    assert run.hold_id is None and run.quote == 150
    gen = step_jobs(plane, run_id, "gen")[0]
    with transaction(plane.state.sessions) as s:
        assert s.get(JobCharge, gen) is None
    complete(plane, clock, gen)
    advance(plane, clock, run_id)
    complete(plane, clock, step_jobs(plane, run_id, "big")[0])
    advance(plane, clock, run_id)
    run, _ = view(plane, run_id)
    assert (run.state, run.captured) == (RunState.COMPLETED, 0)
    books(plane)


def test_quote_pipeline_prices_each_step_and_item(plane: ControlPlane, clock: FakeClock) -> None:
    user = funded(plane, clock, 0)
    varied = copy.deepcopy(PIPELINE)
    varied["steps"]["gen"]["variations"] = {"count": 2}
    with transaction(plane.state.sessions) as s:
        me = s.get(User, user.id)
        assert me is not None
        checked = runs.check_pipeline(s, pipeline_dict=varied, settings=plane.state.settings)
        quoted = runs.quote_pipeline(
            s,
            user=me,
            pipeline=checked.pipeline,
            inputs={"idea": "x"},
            pricing=charging.ChargeSettings.from_settings(plane.state.settings),
        )
    assert quoted.total == 300 and quoted.charged
    assert [(x.step, x.items, x.credits) for x in quoted.steps] == [("gen", 2, 200), ("big", 2, 100)]
    assert quoted.lines[:2] == [
        {"kind": "step", "step": "gen", "tool": GEN, "items": 2, "credits": 200},
        {"kind": "step", "step": "big", "tool": BIG, "items": 2, "credits": 100},
    ]


def test_submission_sends_local_tools_to_the_local_backend_and_takes_lists_for_many_inputs(
    plane: ControlPlane, clock: FakeClock
) -> None:
    user = funded(plane, clock, 1000)
    run_id = create(plane, clock, user)
    image = complete(plane, clock, step_jobs(plane, run_id, "gen")[0])
    with transaction(plane.state.sessions) as s:
        me = s.get(User, user.id)
        assert me is not None
        job = submission.submit(
            s,
            user=me,
            tool_slug="contact-sheet",
            inputs={"images": [f"output:{image}", f"output:{image}"]},
            matchers=plane.state.matchers,
            limits=submission.SubmissionLimits.from_settings(plane.state.settings),
            now=clock(),
        )
        assert (job.backend, job.workflow, job.required_models) == ("local", {}, [])
        assert [ref["key"] for ref in job.input_images["images"]] == [
            f"outputs/{run_gen(s, run_id)}/9.png"
        ] * 2


def run_gen(s: Session, run_id: str) -> str:
    return str(s.scalar(select(Job.id).where(Job.run_id == run_id, Job.run_step == "gen")))
