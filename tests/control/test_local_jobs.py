"""Local tool jobs end to end on SQLite and PostgreSQL with the local object store: claimed,
run in the executor's threads, completed with Output rows and a result, failed or retried with
the reason, dropped when cancelled mid-run, requeued when a lease runs out; and the local tools'
rows and default prices seeded by bootstrap."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

from swarmstation.api.app import build
from swarmstation.config import Settings
from swarmstation.control import jobs as jobs_ops
from swarmstation.control.bootstrap import seed_tools
from swarmstation.control.local_jobs import LEASE_MARGIN_SECONDS, UNEXPECTED, LocalExecutor
from swarmstation.domain.states import JobState, JobTrigger
from swarmstation.domain.tools import OutputSpec, ToolSpec, bind_inputs
from swarmstation.localtools.base import LocalContext, LocalImage, LocalResult, LocalTool, LocalToolError
from swarmstation.localtools.registry import local_tool, local_tools
from swarmstation.store.db import transaction
from swarmstation.store.models import Job, JobEvent, Meta, Output, Tool, ToolPrice, User
from tests.conftest import FakeClock
from tests.helpers import add_user


@pytest.fixture
def plane(settings: Settings, clock: FakeClock) -> Iterator[Any]:
    cp = build(settings, provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


@pytest.fixture
def user_id(plane: Any, clock: FakeClock) -> str:
    with transaction(plane.state.sessions) as s:
        user, _ = add_user(s, clock())
        return user.id


def png(size: tuple[int, int], mode: str = "RGB", color: Any = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, "PNG")
    return out.getvalue()


def put_image(plane: Any, name: str, data: bytes) -> dict[str, Any]:
    """An image in the object store, referenced as control/submission.py resolves uploads."""
    key = f"uploads/{name}.png"
    plane.state.store.put_bytes(key, data, "image/png")
    return {"key": key, "filename": f"{name}.png", "bindings": []}


def queue(
    plane: Any,
    clock: FakeClock,
    user_id: str,
    spec: ToolSpec,
    values: dict[str, Any],
    images: dict[str, Any],
    *,
    max_attempts: int = 2,
) -> str:
    """A queued local job of `spec` (values checked by bind_inputs, as submission does)."""
    bound = bind_inputs(spec, values, random_seed=1)
    with transaction(plane.state.sessions) as s:
        job = jobs_ops.submit_job(
            s,
            user_id=user_id,
            tool_slug=spec.slug,
            pool=spec.pool,
            bound=bound,
            input_images=images,
            max_attempts=max_attempts,
            now=clock(),
        )
        job.backend = "local"
        return job.id


@dataclass
class Changes:
    seen: list[str] = field(default_factory=list)

    def __call__(self, job_id: str) -> None:
        self.seen.append(job_id)


def executor(plane: Any, clock: FakeClock, changes: Changes | None = None, **kwargs: Any) -> LocalExecutor:
    return LocalExecutor(
        plane.state.settings,
        plane.state.sessions,
        plane.state.store,
        clock,
        on_change=changes or Changes(),
        **kwargs,
    )


def run_once(ex: LocalExecutor) -> None:
    ex.tick()
    assert ex.wait_idle(30)


def triggers(plane: Any, job_id: str) -> list[str | None]:
    with transaction(plane.state.sessions) as s:
        rows = s.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "state").order_by(JobEvent.id)
        )
        return [e.trigger.value if e.trigger else None for e in rows]


# -- fake tools: what the executor must cope with ---------------------------------------------


def fake_spec(slug: str, *, output: str = "text", port_type: Any = "text") -> ToolSpec:
    return ToolSpec(
        slug=slug,
        name=slug,
        description="a test tool",
        category="text",
        base_model="other",
        workflow={},
        inputs=(),
        pool="control",
        accepts_loras=False,
        kind="llm",
        outputs=(OutputSpec(name=output, type=port_type),),
    )


@dataclass
class FakeTool:
    """A local tool whose run does what the test says: returns `result`, raises `error`, or
    waits for `release` (to be cancelled or outlived meanwhile)."""

    slug: str
    result: LocalResult = field(default_factory=LocalResult)
    error: Exception | None = None
    release: threading.Event | None = None
    started: threading.Event = field(default_factory=threading.Event)
    calls: int = 0
    reason: str | None = None

    @property
    def spec(self) -> ToolSpec:
        return fake_spec(self.slug)

    def unavailable(self, settings: Settings) -> str | None:
        return self.reason

    def max_tokens(self, settings: Settings) -> int:
        return 100

    def run(
        self, ctx: LocalContext, inputs: dict[str, Any], images: dict[str, list[LocalImage]]
    ) -> LocalResult:
        self.calls += 1
        self.started.set()
        if self.release is not None:
            assert self.release.wait(30)
        if self.error is not None:
            raise self.error
        return self.result


def with_fake(tool: FakeTool) -> dict[str, LocalTool]:
    return {**local_tools(), tool.slug: tool}


# -- runs --------------------------------------------------------------------------------------


def test_image_job_completes_with_an_output_and_events(plane: Any, clock: FakeClock, user_id: str) -> None:
    spec = local_tool("image-resize")
    assert spec is not None
    image = put_image(plane, "src", png((80, 40)))
    job_id = queue(plane, clock, user_id, spec.spec, {"image": "upload:x", "width": 20}, {"image": image})
    changes = Changes()
    run_once(executor(plane, clock, changes))
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert job.state == JobState.COMPLETED, job.error
        assert job.attempt == 1 and job.lease_expires_at is None and job.progress == 1.0
        assert job.result == {}
        assert job.timings["run_seconds"] >= 0 and "tokens" not in job.timings
        outputs = list(s.scalars(select(Output).where(Output.job_id == job_id)))
    assert len(outputs) == 1
    out = outputs[0]
    assert out.node_id == "image" and out.uploaded and out.content_type == "image/png"
    assert out.key == f"outputs/{job_id}/image-0.png"
    data = plane.state.store.get_bytes(out.key)
    assert out.size == len(data)
    assert Image.open(io.BytesIO(data)).size == (20, 10)
    assert triggers(plane, job_id) == [None, "ASSIGN", "START", "COMPLETE"]
    assert changes.seen.count(job_id) == 2  # claimed, then finished


def test_contact_sheet_takes_a_list_of_images(plane: Any, clock: FakeClock, user_id: str) -> None:
    tool = local_tool("contact-sheet")
    assert tool is not None
    refs = [put_image(plane, f"i{n}", png((30 + n, 20))) for n in range(5)]
    job_id = queue(
        plane,
        clock,
        user_id,
        tool.spec,
        {"images": [f"upload:{n}" for n in range(5)], "cell": 32},
        {"images": refs},
    )
    run_once(executor(plane, clock))
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == JobState.COMPLETED, job and job.error
        out = s.scalars(select(Output).where(Output.job_id == job_id)).one()
    assert Image.open(io.BytesIO(plane.state.store.get_bytes(out.key))).size == (3 * 32, 2 * 32)


def test_a_bad_crop_fails_with_the_reason_and_no_retry(plane: Any, clock: FakeClock, user_id: str) -> None:
    tool = local_tool("image-crop")
    assert tool is not None
    image = put_image(plane, "src", png((50, 50)))
    values = {"image": "upload:x", "x": 40, "y": 0, "width": 20, "height": 10}
    job_id = queue(plane, clock, user_id, tool.spec, values, {"image": image})
    run_once(executor(plane, clock))
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == JobState.FAILED
        assert job.error is not None and "past the image's width (50)" in job.error
        assert job.attempt == 1
        assert s.scalars(select(Output).where(Output.job_id == job_id)).first() is None
    assert triggers(plane, job_id)[-1] == "FAIL"


def test_a_value_tool_records_its_result_and_tokens(plane: Any, clock: FakeClock, user_id: str) -> None:
    fake = FakeTool(
        "fake-llm",
        result=LocalResult(
            values={"text": "a lighthouse"}, usage={"prompt_tokens": 12, "completion_tokens": 5}
        ),
    )
    job_id = queue(plane, clock, user_id, fake.spec, {}, {})
    run_once(executor(plane, clock, tools=with_fake(fake)))
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == JobState.COMPLETED
        assert job.result == {"text": "a lighthouse"}
        assert job.timings["tokens"] == {"prompt": 12, "completion": 5}


def test_a_retryable_failure_retries_then_gives_up(plane: Any, clock: FakeClock, user_id: str) -> None:
    fake = FakeTool("fake-llm", error=LocalToolError("the endpoint answered 503", retryable=True))
    job_id = queue(plane, clock, user_id, fake.spec, {}, {}, max_attempts=2)
    ex = executor(plane, clock, tools=with_fake(fake))
    run_once(ex)
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == JobState.QUEUED
        assert job.error is None
    run_once(ex)
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == JobState.FAILED
        assert job.error == "the endpoint answered 503; gave up after 2 attempts"
    assert fake.calls == 2
    assert triggers(plane, job_id) == [None, "ASSIGN", "START", "RETRY", "ASSIGN", "START", "FAIL"]


def test_an_unexpected_exception_fails_with_a_plain_message(
    plane: Any, clock: FakeClock, user_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeTool("fake-llm", error=KeyError("secret internals"))
    job_id = queue(plane, clock, user_id, fake.spec, {}, {})
    run_once(executor(plane, clock, tools=with_fake(fake)))
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == JobState.FAILED
        assert job.error == UNEXPECTED
        assert "secret internals" not in (job.error or "") and "KeyError" not in (job.error or "")
    assert "KeyError" in caplog.text  # the details are in the log


def test_an_unavailable_tool_fails_at_claim(plane: Any, clock: FakeClock, user_id: str) -> None:
    enhance = local_tool("prompt-enhance")
    assert enhance is not None
    assert plane.state.settings.llm_base_url is None
    job_id = queue(plane, clock, user_id, enhance.spec, {"idea": "a fox"}, {})
    ex = executor(plane, clock)
    assert ex.claim() == []
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == JobState.FAILED
        assert job.error is not None and "SWARMSTATION_LLM_BASE_URL" in job.error
        assert job.error.startswith("tool prompt-enhance is unavailable: ")


def test_a_missing_input_image_is_retried(plane: Any, clock: FakeClock, user_id: str) -> None:
    tool = local_tool("image-convert")
    assert tool is not None
    gone = {"key": "uploads/never-stored.png", "filename": "never-stored.png", "bindings": []}
    job_id = queue(plane, clock, user_id, tool.spec, {"image": "upload:x"}, {"image": gone}, max_attempts=1)
    run_once(executor(plane, clock))
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == JobState.FAILED
        assert job.error is not None and job.error.startswith("an input image could not be read")
        assert "gave up after 1 attempts" in job.error


def test_a_job_cancelled_while_running_drops_its_result(plane: Any, clock: FakeClock, user_id: str) -> None:
    fake = FakeTool("fake-llm", result=LocalResult(values={"text": "late"}), release=threading.Event())
    job_id = queue(plane, clock, user_id, fake.spec, {}, {})
    ex = executor(plane, clock, tools=with_fake(fake))
    ex.tick()
    assert fake.started.wait(10)
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == JobState.RUNNING
        jobs_ops.cancel_job(s, job, now=clock())
    assert fake.release is not None
    fake.release.set()
    assert ex.wait_idle(30)
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == JobState.CANCELLED
        assert job.result == {}
    assert triggers(plane, job_id)[-1] == "CANCEL"


def test_workers_bound_how_many_run_at_once(settings: Settings, clock: FakeClock) -> None:
    settings = settings.model_copy(update={"local_tool_workers": 1})
    cp = build(settings, provider=None, clock=clock)
    try:
        with transaction(cp.state.sessions) as s:
            user, _ = add_user(s, clock())
            uid = user.id
        fake = FakeTool("fake-llm", release=threading.Event())
        first = queue(cp, clock, uid, fake.spec, {}, {})
        clock.advance(1)  # queued later: claimed in queue order, so this one waits
        second = queue(cp, clock, uid, fake.spec, {}, {})
        ex = executor(cp, clock, tools=with_fake(fake))
        ex.tick()
        assert fake.started.wait(10)
        ex.tick()  # the only worker is busy: nothing more is claimed
        with transaction(cp.state.sessions) as s:
            states = {j.id: j.state for j in s.scalars(select(Job))}
        assert states == {first: JobState.RUNNING, second: JobState.QUEUED}
        assert fake.release is not None
        fake.release.set()
        assert ex.wait_idle(30)
        run_once(ex)
        with transaction(cp.state.sessions) as s:
            assert {j.state for j in s.scalars(select(Job))} == {JobState.COMPLETED}
        ex.close()
    finally:
        cp.state.engine.dispose()


def test_an_expired_lease_is_requeued_and_the_old_run_dropped(
    plane: Any, clock: FakeClock, user_id: str
) -> None:
    """A control plane claimed the job and died: the next leader requeues it when the lease runs
    out, runs it again, and what the dead run would have written is refused by its token."""
    fake = FakeTool("fake-llm", result=LocalResult(values={"text": "fresh"}))
    job_id = queue(plane, clock, user_id, fake.spec, {}, {}, max_attempts=2)
    dead = executor(plane, clock, tools=with_fake(fake))
    [claim] = dead.claim()  # claimed, never run
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == JobState.RUNNING and job.lease_expires_at is not None
        lease = plane.state.settings.local_tool_timeout_seconds + LEASE_MARGIN_SECONDS
        assert job.lease_expires_at.replace(tzinfo=None) == (clock() + timedelta(seconds=lease)).replace(
            tzinfo=None
        )
    leader = executor(plane, clock, tools=with_fake(fake))
    assert leader.expire_leases() == []  # not yet
    clock.advance(lease + 1)
    assert leader.expire_leases() == [job_id]
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == JobState.QUEUED
    [again] = leader.claim()
    assert again.lease_token == 2
    dead.finish(claim, dead.run_tool(claim))  # the first lease's result comes too late: refused
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == JobState.RUNNING and job.result == {}
    leader.finish(again, leader.run_tool(again))
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == JobState.COMPLETED and job.result == {"text": "fresh"}
    assert triggers(plane, job_id) == [
        None,
        "ASSIGN",
        "START",
        JobTrigger.LEASE_EXPIRED.value,
        "ASSIGN",
        "START",
        "COMPLETE",
    ]


def test_an_expired_lease_on_the_last_attempt_fails(plane: Any, clock: FakeClock, user_id: str) -> None:
    fake = FakeTool("fake-llm")
    job_id = queue(plane, clock, user_id, fake.spec, {}, {}, max_attempts=1)
    ex = executor(plane, clock, tools=with_fake(fake))
    ex.claim()
    clock.advance(plane.state.settings.local_tool_timeout_seconds + LEASE_MARGIN_SECONDS + 1)
    assert ex.expire_leases() == [job_id]
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == JobState.FAILED
        assert job.error is not None and "lease expired" in job.error and "giving up" in job.error


def test_pool_jobs_are_left_alone(plane: Any, clock: FakeClock, user_id: str) -> None:
    tool = local_tool("image-resize")
    assert tool is not None
    job_id = queue(plane, clock, user_id, tool.spec, {"image": "upload:x", "width": 4}, {})
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.backend = "pool"
    assert executor(plane, clock).claim() == []


# -- seeding -----------------------------------------------------------------------------------


def test_build_seeds_every_local_tool_as_a_row(plane: Any) -> None:
    with transaction(plane.state.sessions) as s:
        rows = {t.slug: t for t in s.scalars(select(Tool))}
    for slug, tool in local_tools().items():
        row = rows[slug]
        assert row.pool == "control" and row.builtin
        assert row.spec["kind"] == tool.spec.kind
        assert row.spec["outputs"][0]["name"] == tool.spec.outputs[0].name


def test_seeding_prices_follows_settings_and_keeps_an_admins_price(
    plane: Any, settings: Settings, clock: FakeClock
) -> None:
    sessions = plane.state.sessions
    priced = settings.model_copy(update={"image_tool_credits": 3, "llm_credits_per_1k_tokens": 7})
    with transaction(sessions) as s:
        seed_tools(s, clock(), priced)
    with transaction(sessions) as s:
        prices = {p.tool_slug: (p.model, p.credits, p.cap) for p in s.scalars(select(ToolPrice))}
        assert prices["image-resize"] == ("per_run", 3, None)
        assert prices["contact-sheet"] == ("per_run", 3, None)
        assert prices["prompt-enhance"] == ("per_1k_tokens", 7, None)
        assert prices["caption"] == ("per_1k_tokens", 7, None)
        assert "sdxl-txt2img" not in prices  # bundled ComfyUI tools keep their derived price
        admin = s.scalar(select(User).where(User.role == "admin"))
        assert admin is not None
        crop = s.get(ToolPrice, "image-crop")
        assert crop is not None
        crop.credits, crop.updated_by = 10, admin.id
    cheaper = settings.model_copy(update={"image_tool_credits": 0})
    with transaction(sessions) as s:
        seed_tools(s, clock(), cheaper)
    with transaction(sessions) as s:
        assert (s.get(ToolPrice, "image-resize") or ToolPrice()).credits == 0
        assert (s.get(ToolPrice, "image-crop") or ToolPrice()).credits == 10


def test_a_removed_local_tool_stays_removed_and_a_changed_one_is_refreshed(
    plane: Any, settings: Settings, clock: FakeClock
) -> None:
    sessions = plane.state.sessions
    with transaction(sessions) as s:
        s.delete(s.get(Tool, "image-pad"))
        resize = s.get(Tool, "image-resize")
        assert resize is not None
        resize.name, resize.spec = "stale", {**resize.spec, "name": "stale"}
        s.delete(s.get(Meta, "local_tool_seeded:image-convert"))  # as if new in this release
        s.delete(s.get(Tool, "image-convert"))
    with transaction(sessions) as s:
        seed_tools(s, clock(), settings)
    with transaction(sessions) as s:
        assert s.get(Tool, "image-pad") is None
        assert s.get(ToolPrice, "image-pad") is None
        resize = s.get(Tool, "image-resize")
        assert resize is not None and resize.name == "Resize image" and resize.spec["name"] == "Resize image"
        assert s.get(Tool, "image-convert") is not None
        assert s.get(ToolPrice, "image-convert") is not None
