"""Charging jobs (SQLite and PostgreSQL): one hold of the quote at submission, in the job's
transaction; settlement with the job's terminal transition (capture <= hold, release on failures
and early cancels, GPU seconds for a cancel after the start, royalties to LoRA authors); 402 with
nothing queued; an idempotent replay holds nothing more. The ledger verifies after each."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.control import charging, ledger, submission
from swarmstation.control import jobs as jobs_ops
from swarmstation.control.loras import bump_version
from swarmstation.domain.credits import EntryKind, HoldState, InsufficientCredits
from swarmstation.domain.moderation import ModerationState
from swarmstation.domain.prices import PriceKind, PriceModel
from swarmstation.domain.states import JobState
from swarmstation.store.db import transaction
from swarmstation.store.models import Hold, Instance, Job, JobCharge, LedgerEntry, Lora, Tool, User
from tests.conftest import FakeClock
from tests.helpers import add_instance, add_user

TOOL = "sd15-txt2img"


@pytest.fixture
def plane(settings: Settings, clock: FakeClock) -> Iterator[ControlPlane]:
    cp = build(settings, provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


def _cfg(plane: ControlPlane, **overrides: Any) -> charging.ChargeSettings:
    return charging.ChargeSettings.from_settings(plane.state.settings.model_copy(update=overrides))


def _price(s: Session, clock: FakeClock, model: PriceModel) -> None:
    tool = s.get(Tool, TOOL)
    assert tool is not None
    charging.set_price(s, tool, model, admin_id="admin", now=clock())


def _funded(s: Session, clock: FakeClock, credits: int, role: str = "user") -> User:
    user, _ = add_user(s, clock(), role=role)
    if credits:
        ledger.grant(
            s,
            user_id=user.id,
            amount=credits,
            reason="test",
            actor_id=None,
            key=f"grant:{user.id}",
            now=clock(),
        )
    return user


def _submit(
    plane: ControlPlane, s: Session, user: User, clock: FakeClock, prompt: str = "a fox", **cfg: Any
) -> Job:
    return submission.submit(
        s,
        user=user,
        tool_slug=TOOL,
        inputs={"prompt": prompt},
        matchers=plane.state.matchers,
        limits=submission.SubmissionLimits(max_prompt_chars=500, max_loras_per_job=4, max_attempts=2),
        now=clock(),
        random_seed=5,
        pricing=_cfg(plane, **cfg),
    )


def _start(s: Session, job: Job, inst: Instance, clock: FakeClock) -> None:
    jobs_ops.assign_job(s, job, inst, lease_seconds=60, now=clock())
    jobs_ops.mark_running(s, job, lease_seconds=60, now=clock())


def _balance(plane: ControlPlane, user_id: str) -> ledger.Balance:
    with transaction(plane.state.sessions) as s:
        return ledger.balance(s, user_id)


def _verified(plane: ControlPlane) -> None:
    with transaction(plane.state.sessions) as s:
        assert ledger.verify(s) == []


def _entries(plane: ControlPlane, user_id: str) -> list[tuple[EntryKind, int, int]]:
    with transaction(plane.state.sessions) as s:
        rows = s.scalars(select(LedgerEntry).where(LedgerEntry.user_id == user_id).order_by(LedgerEntry.id))
        return [(e.kind, e.amount, e.held_change) for e in rows]


def test_submission_holds_the_quote_with_the_job(plane: ControlPlane, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        _price(s, clock, PriceModel(PriceKind.PER_RUN, 40))
        user = _funded(s, clock, 100)
        job = _submit(plane, s, user, clock)
        job_id, user_id = job.id, user.id
    assert _balance(plane, user_id) == ledger.Balance(balance=100, held=40, available=60)
    with transaction(plane.state.sessions) as s:
        charge = s.get(JobCharge, job_id)
        assert charge is not None and charge.quote == 40 and charge.kind == "per_run"
        hold = s.get(Hold, charge.hold_id)
        assert hold is not None and hold.ref_id == job_id and hold.state == HoldState.OPEN
    _verified(plane)


def test_too_few_credits_is_refused_and_nothing_is_queued(plane: ControlPlane, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        _price(s, clock, PriceModel(PriceKind.PER_RUN, 40))
        user_id = _funded(s, clock, 10).id
    with pytest.raises(InsufficientCredits) as refused, transaction(plane.state.sessions) as s:
        user = s.get(User, user_id)
        assert user is not None
        _submit(plane, s, user, clock)
    assert (refused.value.required, refused.value.available) == (40, 10)
    with transaction(plane.state.sessions) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0
        assert s.scalar(select(func.count()).select_from(JobCharge)) == 0
    assert _balance(plane, user_id) == ledger.Balance(10, 0, 10)
    _verified(plane)


def test_completion_captures_the_measured_charge_and_releases_the_rest(
    plane: ControlPlane, clock: FakeClock
) -> None:
    with transaction(plane.state.sessions) as s:
        _price(s, clock, PriceModel(PriceKind.PER_GPU_SECOND, 2, cap=50))
        user = _funded(s, clock, 100)
        inst, _ = add_instance(s, clock())
        job = _submit(plane, s, user, clock)
        _start(s, job, inst, clock)
        job_id, user_id = job.id, user.id
    assert _balance(plane, user_id).held == 50  # the cap is the quote
    clock.advance(8)
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        jobs_ops.complete_job(s, job, timings={"run_seconds": 7.2}, now=clock())
    # 7.2 s x 2 credits = 14.4 → 15 captured, 35 released
    assert _balance(plane, user_id) == ledger.Balance(85, 0, 85)
    assert _entries(plane, user_id)[-2:] == [(EntryKind.CAPTURE, -15, -15), (EntryKind.RELEASE, 0, -35)]
    with transaction(plane.state.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert charging.settle_job(s, job, now=clock()) == 15  # a second settlement: no change
    assert len(_entries(plane, user_id)) == 4  # grant, hold, capture, release
    _verified(plane)


def test_an_infrastructure_failure_is_free_and_a_requeue_keeps_the_hold(
    plane: ControlPlane, clock: FakeClock
) -> None:
    with transaction(plane.state.sessions) as s:
        _price(s, clock, PriceModel(PriceKind.PER_RUN, 40))
        user = _funded(s, clock, 100)
        inst, _ = add_instance(s, clock())
        job = _submit(plane, s, user, clock)
        _start(s, job, inst, clock)
        jobs_ops.requeue_for_infrastructure(s, job, reason="instance lost", max_infra_requeues=1, now=clock())
        assert job.state == JobState.QUEUED
        job_id, user_id, inst_id = job.id, user.id, inst.id
    assert _balance(plane, user_id).held == 40  # still held while it waits for another machine
    with transaction(plane.state.sessions) as s:
        job, inst = s.get(Job, job_id), s.get(Instance, inst_id)
        assert job is not None and inst is not None
        for _ in range(2):  # attempts run out: FAILED
            if job.state == JobState.QUEUED:
                _start(s, job, inst, clock)
            jobs_ops.retry_or_fail(s, job, reason="provider error", now=clock())
        assert job.state == JobState.FAILED
    assert _balance(plane, user_id) == ledger.Balance(100, 0, 100)
    assert _entries(plane, user_id)[-1] == (EntryKind.RELEASE, 0, -40)
    _verified(plane)


def test_a_cancel_before_the_start_is_free(plane: ControlPlane, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        _price(s, clock, PriceModel(PriceKind.PER_RUN, 40))
        user = _funded(s, clock, 100)
        job = _submit(plane, s, user, clock)
        clock.advance(30)
        jobs_ops.cancel_job(s, job, now=clock())
        user_id = user.id
    assert _balance(plane, user_id) == ledger.Balance(100, 0, 100)
    _verified(plane)


def test_a_cancel_after_the_start_pays_its_gpu_seconds(plane: ControlPlane, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        _price(s, clock, PriceModel(PriceKind.PER_RUN, 40))
        user = _funded(s, clock, 100)
        inst, _ = add_instance(s, clock())
        inst.price_per_hour = 3.6  # x2 markup = $0.002/s = 2 credits per GPU second
        job = _submit(plane, s, user, clock)
        _start(s, job, inst, clock)
        user_id = user.id
        clock.advance(12)
        jobs_ops.cancel_job(s, job, now=clock())
        assert job.state == JobState.CANCELLED
    assert _balance(plane, user_id) == ledger.Balance(76, 0, 76)  # 24 captured, 16 released
    _verified(plane)


def _lora(s: Session, clock: FakeClock, owner: User, slug: str) -> None:
    s.add(
        Lora(
            id=str(uuid.uuid4()),
            slug=slug,
            name=slug,
            triggers=[],
            aliases=[],
            tags=[],
            preview_images=[],
            base_model="SD1.5",
            file_name=f"{slug}.safetensors",
            source_kind="object",
            object_key=f"loras/{slug}.safetensors",
            visibility="public",
            owner_id=owner.id,
            state=ModerationState.APPROVED,
            created_at=clock(),
            updated_at=clock(),
        )
    )
    bump_version(s)  # the trigger map is rebuilt
    s.flush()


def test_a_lora_author_earns_a_royalty_out_of_the_charge(plane: ControlPlane, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        _price(s, clock, PriceModel(PriceKind.PER_RUN, 100))
        author = _funded(s, clock, 0)
        user = _funded(s, clock, 100)
        _lora(s, clock, author, "inky")
        inst, _ = add_instance(s, clock())
        job = _submit(plane, s, user, clock, prompt="a fox <lora:inky:0.8>")
        assert [a["slug"] for a in job.applied_loras] == ["inky"]
        _start(s, job, inst, clock)
        jobs_ops.complete_job(s, job, timings={"run_seconds": 3.0}, now=clock())
        user_id, author_id = user.id, author.id
    assert _balance(plane, user_id) == ledger.Balance(0, 0, 0)  # the user pays the quote, no more
    assert _balance(plane, author_id) == ledger.Balance(5, 0, 5)  # 500 bps of 100
    assert _entries(plane, author_id) == [(EntryKind.ROYALTY, 5, 0)]
    with transaction(plane.state.sessions) as s:
        charge = s.get(JobCharge, job.id)
        assert charge is not None and (charge.captured, charge.royalties_paid) == (100, 5)
    _verified(plane)


def test_admins_run_free_unless_charge_admins(plane: ControlPlane, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        _price(s, clock, PriceModel(PriceKind.PER_RUN, 40))
        admin = _funded(s, clock, 0, role="admin")
        free = _submit(plane, s, admin, clock)
        assert s.get(JobCharge, free.id) is None
        with pytest.raises(InsufficientCredits):
            _submit(plane, s, admin, clock, charge_admins=True)
    _verified(plane)


# -- over HTTP: the 402's body, an idempotent replay, concurrent submissions ---------------------


@pytest.fixture
def client(plane: ControlPlane) -> Iterator[TestClient]:
    with TestClient(plane.app) as c:
        yield c


def _api_user(plane: ControlPlane, clock: FakeClock, credits: int) -> tuple[str, dict[str, str]]:
    with transaction(plane.state.sessions) as s:
        _price(s, clock, PriceModel(PriceKind.PER_RUN, 40))
        user, key = add_user(s, clock())
        if credits:
            ledger.grant(
                s, user_id=user.id, amount=credits, reason="t", actor_id=None, key=f"g:{user.id}", now=clock()
            )
        return user.id, {"Authorization": f"Bearer {key}"}


def test_402_names_what_is_needed_and_queues_nothing(
    plane: ControlPlane, client: TestClient, clock: FakeClock
) -> None:
    _, auth = _api_user(plane, clock, 10)
    r = client.post("/v1/jobs", json={"tool": TOOL, "inputs": {"prompt": "a fox"}}, headers=auth)
    assert r.status_code == 402, r.text
    assert r.json()["code"] == "insufficient_credits"
    assert (r.json()["required"], r.json()["available"]) == (40, 10)
    assert client.get("/v1/jobs", headers=auth).json()["jobs"] == []
    _verified(plane)


def test_a_replayed_submission_makes_no_second_hold(
    plane: ControlPlane, client: TestClient, clock: FakeClock
) -> None:
    user_id, auth = _api_user(plane, clock, 100)
    body = {"tool": TOOL, "inputs": {"prompt": "a fox"}}
    first = client.post("/v1/jobs", json=body, headers={**auth, "Idempotency-Key": "k1"})
    again = client.post("/v1/jobs", json=body, headers={**auth, "Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert first.json()["id"] == again.json()["id"]
    assert _balance(plane, user_id) == ledger.Balance(100, 40, 60)
    assert [k for k, _, _ in _entries(plane, user_id)] == [EntryKind.GRANT, EntryKind.HOLD]
    _verified(plane)


def test_concurrent_submissions_beyond_the_balance_get_one_402(
    plane: ControlPlane, client: TestClient, clock: FakeClock
) -> None:
    user_id, auth = _api_user(plane, clock, 100)  # room for two of 40, not three
    body = {"tool": TOOL, "inputs": {"prompt": "a fox"}}
    with ThreadPoolExecutor(max_workers=3) as pool:
        replies = list(pool.map(lambda _: client.post("/v1/jobs", json=body, headers=auth), range(3)))
    assert sorted(r.status_code for r in replies) == [201, 201, 402], [r.text for r in replies]
    assert _balance(plane, user_id) == ledger.Balance(100, 80, 20)
    with transaction(plane.state.sessions) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 2
    _verified(plane)


def test_a_cancel_over_http_settles_once(plane: ControlPlane, client: TestClient, clock: FakeClock) -> None:
    user_id, auth = _api_user(plane, clock, 100)
    job = client.post("/v1/jobs", json={"tool": TOOL, "inputs": {"prompt": "a fox"}}, headers=auth).json()
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).status_code == 200
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).status_code == 409
    assert _balance(plane, user_id) == ledger.Balance(100, 0, 100)
    assert [k for k, _, _ in _entries(plane, user_id)] == [EntryKind.GRANT, EntryKind.HOLD, EntryKind.RELEASE]
    _verified(plane)
