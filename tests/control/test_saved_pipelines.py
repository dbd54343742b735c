"""control.saved_pipelines on SQLite and PostgreSQL: saving checks everything before writing,
versions are immutable, who sees what (private, unlisted, public; admins), search, and what a run of
a saved pipeline may give (only exposed inputs for others, any for the owner, exposed defaults)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.control import saved_pipelines as saved
from swarmstation.domain.errors import Forbidden, InvalidInput, NotFound
from swarmstation.store.db import transaction
from swarmstation.store.models import PipelineVersion, SavedPipeline, User
from tests.conftest import FakeClock
from tests.helpers import add_user

PIPELINE: dict[str, Any] = {
    "inputs": {
        "idea": {"type": "string", "label": "Idea"},
        "negative": {"type": "string", "required": False, "default": "blurry"},
        "steps": {"type": "integer", "required": False, "default": 4},
    },
    "steps": {
        "gen": {
            "tool": "sd15-txt2img",
            "inputs": {
                "prompt": {"input": "idea"},
                "negative_prompt": {"input": "negative"},
                "steps": {"input": "steps"},
                "seed": 7,
            },
        }
    },
}


@pytest.fixture
def plane(settings: Settings, clock: FakeClock) -> Iterator[ControlPlane]:
    cp = build(settings, provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


def _save(
    s: Session,
    plane: ControlPlane,
    owner: User,
    clock: FakeClock,
    *,
    name: str = "Portrait",
    description: str = "",
    definition: dict[str, Any] | None = None,
    exposed: list[dict[str, Any]] | None = None,
    visibility: str = "public",
) -> tuple[SavedPipeline, PipelineVersion]:
    return saved.save(
        s,
        owner=owner,
        name=name,
        description=description,
        definition=copy.deepcopy(PIPELINE) if definition is None else definition,
        exposed=[{"name": "idea", "label": "Your idea", "default": "a harbour"}]
        if exposed is None
        else exposed,
        visibility=visibility,
        settings=plane.state.settings,
        now=clock(),
    )


def _counts(s: Session) -> tuple[int, int]:
    return (
        s.scalar(select(func.count()).select_from(SavedPipeline)) or 0,
        s.scalar(select(func.count()).select_from(PipelineVersion)) or 0,
    )


def test_save_writes_version_one_in_normal_form(plane: ControlPlane, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        owner, _ = add_user(s, clock())
        row, version = _save(s, plane, owner, clock, name="  Portrait  ", exposed=[{"name": "negative"}])
        assert (row.name, row.latest_version, row.run_count, row.owner_id) == ("Portrait", 1, 0, owner.id)
        assert version.version == 1 and version.definition["steps"]["gen"]["tool"] == "sd15-txt2img"
        assert version.definition["inputs"]["idea"]["required"] is True  # defaults written out
        # no label given: the pipeline input's label, else its name
        assert version.exposed == [
            {"name": "negative", "label": "negative", "default": None, "description": ""}
        ]
        schema = saved.exposed_inputs(version.definition, version.exposed)
        assert schema == [
            {
                "name": "negative",
                "type": "string",
                "required": False,
                "label": "negative",
                "default": "blurry",
                "description": "",
            }
        ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "   "}, "name"),
        ({"visibility": "secret"}, "visibility"),
        ({"exposed": [{"name": "nope"}]}, "exposed[0].name"),
        ({"exposed": [{"name": "idea"}, {"name": "idea"}]}, "exposed[1].name"),
        ({"exposed": [{"name": "steps", "default": "four"}]}, "exposed[0].default"),
        ({"exposed": [{"name": "idea", "label": "x" * 201}]}, "exposed[0].label"),
    ],
    ids=["blank-name", "visibility", "exposed-unknown", "exposed-twice", "default-type", "label-long"],
)
def test_save_refuses_bad_fields_and_writes_nothing(
    plane: ControlPlane, clock: FakeClock, change: dict[str, Any], field: str
) -> None:
    with transaction(plane.state.sessions) as s:
        owner, _ = add_user(s, clock())
        with pytest.raises(InvalidInput) as caught:
            _save(s, plane, owner, clock, **change)
        assert [e.field for e in caught.value.errors] == [field]
        assert _counts(s) == (0, 0)


def test_save_refuses_a_graph_a_run_would_refuse(plane: ControlPlane, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        owner, _ = add_user(s, clock())
        unknown = copy.deepcopy(PIPELINE)
        unknown["steps"]["gen"]["tool"] = "no-such-tool"
        with pytest.raises(InvalidInput) as caught:
            _save(s, plane, owner, clock, definition=unknown)
        assert caught.value.code == "invalid_pipeline" and "gen" in caught.value.detail
        mistyped = copy.deepcopy(PIPELINE)
        mistyped["steps"]["gen"]["inputs"]["steps"] = {"input": "idea"}  # a string into an integer
        with pytest.raises(InvalidInput) as caught:
            _save(s, plane, owner, clock, definition=mistyped)
        assert caught.value.errors[0].field == "steps.gen.inputs.steps"
        assert _counts(s) == (0, 0)


def test_private_is_not_found_for_others_unlisted_is_readable_by_id(
    plane: ControlPlane, clock: FakeClock
) -> None:
    with transaction(plane.state.sessions) as s:
        owner, _ = add_user(s, clock())
        other, _ = add_user(s, clock())
        admin, _ = add_user(s, clock(), role="admin")
        private, _ = _save(s, plane, owner, clock, visibility="private")
        unlisted, _ = _save(s, plane, owner, clock, visibility="unlisted")
        assert saved.visible_to(s, owner, private.id) is private
        with pytest.raises(NotFound) as hidden:
            saved.visible_to(s, other, private.id)
        with pytest.raises(NotFound) as missing:
            saved.visible_to(s, other, "00000000-0000-0000-0000-000000000000")
        # the same answer as a pipeline that does not exist, apart from the id itself
        assert str(hidden.value).replace(private.id, "ID") == str(missing.value).replace(
            "00000000-0000-0000-0000-000000000000", "ID"
        )
        with pytest.raises(NotFound):
            saved.resolve_for_run(s, user=other, pipeline_id=private.id, version=None, inputs={})
        assert saved.visible_to(s, other, unlisted.id) is unlisted
        assert saved.visible_to(s, admin, private.id) is private
        # seeing is not changing: others are refused (Forbidden), or NotFound when they cannot see it
        with pytest.raises(Forbidden):
            saved.update_pipeline(s, user=other, pipeline_id=unlisted.id, name="mine now", now=clock())
        with pytest.raises(NotFound):
            saved.delete(s, user=other, pipeline_id=private.id)


def test_search_lists_own_and_public_never_unlisted_or_private_of_others(
    plane: ControlPlane, clock: FakeClock
) -> None:
    with transaction(plane.state.sessions) as s:
        owner, _ = add_user(s, clock())
        other, _ = add_user(s, clock())
        public, _ = _save(s, plane, owner, clock, name="Storm Portrait", visibility="public")
        clock.advance(1)
        _save(s, plane, owner, clock, name="storm unlisted", visibility="unlisted")
        clock.advance(1)
        _save(s, plane, owner, clock, name="storm private", visibility="private")
        clock.advance(1)
        theirs, _ = _save(
            s, plane, other, clock, name="Harbour", description="A STORM at sea", visibility="private"
        )
        clock.advance(1)
        percent, _ = _save(s, plane, other, clock, name="100% storm", visibility="public")

        def names(user: User, **kw: Any) -> list[str]:
            rows, total = saved.search(s, user=user, **kw)
            assert total == len(rows)
            return [r.name for r in rows]

        assert names(other) == ["100% storm", "Harbour", "Storm Portrait"]  # newest change first
        assert names(other, q="STORM") == ["100% storm", "Harbour", "Storm Portrait"]  # description too
        assert names(other, q="storm", mine=True) == ["100% storm", "Harbour"]
        assert names(owner, q="storm") == ["100% storm", "storm private", "storm unlisted", "Storm Portrait"]
        assert names(owner, q="0% s") == ["100% storm"]  # % matches itself, not anything
        assert names(owner, q="_") == []
        rows, total = saved.search(s, user=owner, limit=2, offset=1)
        assert total == 4 and [r.name for r in rows] == ["storm private", "storm unlisted"]
        assert public.id in {r.id for r in saved.search(s, user=other)[0]}
        assert theirs.id not in {r.id for r in saved.search(s, user=owner)[0]}
        assert percent.id in {r.id for r in saved.search(s, user=owner)[0]}


def test_others_give_only_exposed_inputs_the_owner_any(plane: ControlPlane, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        owner, _ = add_user(s, clock())
        other, _ = add_user(s, clock())
        row, _ = _save(s, plane, owner, clock)
        ref = saved.resolve_for_run(s, user=other, pipeline_id=row.id, version=None, inputs={"idea": "a fox"})
        assert (ref.pipeline_id, ref.version, ref.author_id) == (row.id, 1, owner.id)
        assert ref.inputs == {"idea": "a fox"} and ref.definition["steps"]["gen"]["tool"] == "sd15-txt2img"
        defaulted = saved.resolve_for_run(s, user=other, pipeline_id=row.id, version=None, inputs={})
        assert defaulted.inputs == {"idea": "a harbour"}  # the exposed default
        with pytest.raises(InvalidInput) as caught:
            saved.resolve_for_run(
                s, user=other, pipeline_id=row.id, version=None, inputs={"idea": "x", "negative": "y", "z": 1}
            )
        assert [e.field for e in caught.value.errors] == ["inputs.negative", "inputs.z"]
        assert "exposes only: idea" in caught.value.detail
        mine = saved.resolve_for_run(
            s, user=owner, pipeline_id=row.id, version=None, inputs={"negative": "y"}
        )
        assert mine.inputs == {"idea": "a harbour", "negative": "y"}
        with pytest.raises(InvalidInput) as unknown:
            saved.resolve_for_run(s, user=owner, pipeline_id=row.id, version=None, inputs={"z": 1})
        assert unknown.value.errors[0].field == "inputs.z"
        # a required input that only the owner may give and that has no default
        closed, _ = _save(s, plane, owner, clock, exposed=[{"name": "negative"}])
        with pytest.raises(InvalidInput) as needs:
            saved.resolve_for_run(
                s, user=other, pipeline_id=closed.id, version=None, inputs={"negative": "y"}
            )
        assert needs.value.errors[0].field == "inputs.idea" and "did not expose" in needs.value.detail
        for version in (2, 0, 2**40):  # no such version; 2**40 does not even fit the column
            with pytest.raises(NotFound):
                saved.resolve_for_run(s, user=other, pipeline_id=row.id, version=version, inputs={})


def test_versions_are_immutable_and_a_run_of_version_one_gets_its_graph(
    plane: ControlPlane, clock: FakeClock
) -> None:
    with transaction(plane.state.sessions) as s:
        owner, _ = add_user(s, clock())
        other, _ = add_user(s, clock())
        row, first = _save(s, plane, owner, clock)
        first_graph = copy.deepcopy(first.definition)
        changed = copy.deepcopy(PIPELINE)
        changed["steps"]["gen"]["tool"] = "sdxl-txt2img"
        del changed["steps"]["gen"]["inputs"]["steps"]
        clock.advance(5)
        row2, second = saved.new_version(
            s,
            user=owner,
            pipeline_id=row.id,
            definition=changed,
            exposed=None,
            settings=plane.state.settings,
            now=clock(),
        )
        assert row2 is row and (row.latest_version, second.version) == (2, 2) and row.updated_at == clock()
        assert second.exposed == first.exposed  # kept from the latest version
        assert saved.versions_of(s, row.id) == [1, 2]
    with transaction(plane.state.sessions) as s:
        assert s.get(PipelineVersion, (row.id, 1)).definition == first_graph  # type: ignore[union-attr]
        other = s.get(User, other.id)  # type: ignore[assignment]
        old = saved.resolve_for_run(s, user=other, pipeline_id=row.id, version=1, inputs={})
        new = saved.resolve_for_run(s, user=other, pipeline_id=row.id, version=None, inputs={})
        assert (old.version, old.definition["steps"]["gen"]["tool"]) == (1, "sd15-txt2img")
        assert (new.version, new.definition["steps"]["gen"]["tool"]) == (2, "sdxl-txt2img")


def test_new_version_is_the_owners_and_checked_like_the_first(plane: ControlPlane, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        owner, _ = add_user(s, clock())
        other, _ = add_user(s, clock())
        row, _ = _save(s, plane, owner, clock)
        settings = plane.state.settings
        with pytest.raises(Forbidden):
            saved.new_version(
                s,
                user=other,
                pipeline_id=row.id,
                definition=PIPELINE,
                exposed=None,
                settings=settings,
                now=clock(),
            )
        # the kept exposed input must still be an input of the new graph
        without_idea = copy.deepcopy(PIPELINE)
        del without_idea["inputs"]["idea"]
        without_idea["steps"]["gen"]["inputs"]["prompt"] = "a fixed prompt"
        with pytest.raises(InvalidInput) as caught:
            saved.new_version(
                s,
                user=owner,
                pipeline_id=row.id,
                definition=without_idea,
                exposed=None,
                settings=settings,
                now=clock(),
            )
        assert caught.value.errors[0].field == "exposed[0].name"
        assert row.latest_version == 1 and saved.versions_of(s, row.id) == [1]


def test_update_count_and_delete(plane: ControlPlane, clock: FakeClock) -> None:
    with transaction(plane.state.sessions) as s:
        owner, _ = add_user(s, clock())
        admin, _ = add_user(s, clock(), role="admin")
        row, _ = _save(s, plane, owner, clock, visibility="private")
        clock.advance(3)
        saved.update_pipeline(
            s, user=owner, pipeline_id=row.id, description="new words", visibility="unlisted", now=clock()
        )
        assert (row.name, row.description, row.visibility, row.updated_at) == (
            "Portrait",
            "new words",
            "unlisted",
            clock(),
        )
        with pytest.raises(InvalidInput):
            saved.update_pipeline(s, user=owner, pipeline_id=row.id, name="x" * 201, now=clock())
        saved.count_run(s, row.id)
        saved.count_run(s, row.id)
        s.refresh(row)
        assert row.run_count == 2
        pipeline_id = row.id
        saved.delete(s, user=admin, pipeline_id=pipeline_id)
    with transaction(plane.state.sessions) as s:
        assert s.get(SavedPipeline, pipeline_id) is None
        assert _counts(s) == (0, 0)
