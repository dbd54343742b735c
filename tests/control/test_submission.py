"""control.submission.submit: from a tool and a user's inputs to a queued job (SQLite and
PostgreSQL), the one function the public API (and the simulator) calls."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy.orm import Session

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.control import submission
from swarmstation.domain.errors import NotFound
from swarmstation.domain.loras import TriggerMatcher
from swarmstation.domain.states import JobState
from swarmstation.domain.tools import ToolInputError
from swarmstation.store.db import transaction
from swarmstation.store.models import Tool, User
from tests.conftest import FakeClock
from tests.helpers import add_user

LIMITS = submission.SubmissionLimits(max_prompt_chars=200, max_loras_per_job=4, max_attempts=3)


class NoLoras:
    """A matcher source for a registry with no LoRAs."""

    def matcher_for(self, s: Session, user: User, now: datetime) -> TriggerMatcher:
        return TriggerMatcher()


@pytest.fixture
def plane(settings: Settings, clock: FakeClock) -> Iterator[ControlPlane]:
    cp = build(settings, provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


def _submit(s: Session, user: User, clock: FakeClock, tool: str, inputs: dict[str, Any]) -> Any:
    return submission.submit(
        s,
        user=user,
        tool_slug=tool,
        inputs=inputs,
        matchers=NoLoras(),
        limits=LIMITS,
        now=clock(),
        random_seed=5,
    )


def test_submit_queues_a_job_with_the_bound_workflow(plane: ControlPlane, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        user, _ = add_user(s, clock())
        job = _submit(s, user, clock, "sd15-txt2img", {"prompt": "a red fox <lora:nobody-has-it:0.7>"})
        assert job.state == JobState.QUEUED and job.tool_slug == "sd15-txt2img"
        assert job.max_attempts == 3 and job.backend == "pool"
        graph = json.dumps(job.workflow)
        # the tag is resolved away: the encoder gets the cleaned text, and the job says why
        assert "a red fox" in graph and "<lora:" not in graph
        assert job.warnings and job.applied_loras == []


def test_the_traffic_split_picks_where_the_job_runs(plane: ControlPlane, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        user, _ = add_user(s, clock())
        tool = s.get(Tool, "sd15-txt2img")
        assert tool is not None
        tool.comfydeploy_deployment_id = "dep-1"
        tool.comfydeploy_percent = 100
        assert _submit(s, user, clock, "sd15-txt2img", {"prompt": "a fox"}).backend == "comfydeploy"
        tool.comfydeploy_deployment_id = None  # a percentage without a deployment sends nothing there
        assert _submit(s, user, clock, "sd15-txt2img", {"prompt": "a fox"}).backend == "pool"


def test_refusals_name_what_is_wrong(plane: ControlPlane, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        user, _ = add_user(s, clock())
        with pytest.raises(NotFound, match="unknown tool 'nope'; GET /v1/tools lists them"):
            _submit(s, user, clock, "nope", {"prompt": "a fox"})
        with pytest.raises(ToolInputError) as info:
            _submit(s, user, clock, "sd15-txt2img", {"prompt": "x" * 201})
        assert info.value.field == "prompt" and "the limit is 200" in info.value.reason
        with pytest.raises(ToolInputError) as info:
            _submit(s, user, clock, "sd15-img2img", {"prompt": "a fox", "image": "http://example.com/a.png"})
        assert info.value.field == "image" and "upload reference" in info.value.reason
        with pytest.raises(ToolInputError, match="unknown upload"):
            _submit(s, user, clock, "sd15-img2img", {"prompt": "a fox", "image": "upload:missing"})
