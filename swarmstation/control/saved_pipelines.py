"""Saved pipelines (the earlier platform's *spells*) against the database: save one, add versions,
edit its name or visibility, list and search, and resolve one for a run.

Who sees what: the owner sees their own at any visibility; anyone sees a `public` one (listed and
searchable) or an `unlisted` one (by id only, never listed); a `private` one of someone else is
NotFound, the same answer as an id that does not exist, so that its existence is not revealed.
Admins see every pipeline (to moderate), but only the owner changes one.

Versions are immutable rows of `pipeline_versions`: a change to the graph or its exposed inputs is
a new version (`latest_version` + 1), so a run records the version it ran and a later version never
changes what an earlier run or a run of an earlier version does.

Exposed inputs (`[{name, label, default, description}]`) are the only pipeline inputs another user
may give when running it; the owner may give any. An exposed default fills the input when the
runner gives none.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from swarmstation.config import Settings
from swarmstation.domain.errors import FieldError, Forbidden, InvalidInput, NotFound
from swarmstation.domain.tools import ToolSpec, tool_from_dict
from swarmstation.store.models import PipelineVersion, SavedPipeline, Tool, User

__all__ = [
    "MAX_DESCRIPTION_CHARS",
    "MAX_EXPOSED",
    "MAX_LABEL_CHARS",
    "MAX_NAME_CHARS",
    "VISIBILITIES",
    "SavedRef",
    "count_run",
    "delete",
    "exposed_inputs",
    "new_version",
    "owned_by",
    "resolve_for_run",
    "save",
    "search",
    "update_pipeline",
    "version_of",
    "versions_of",
    "visible_to",
]

VISIBILITIES = ("private", "unlisted", "public")
MAX_NAME_CHARS = 200  # the column's width
MAX_DESCRIPTION_CHARS = 20_000  # as a LoRA's description
MAX_EXPOSED = 50  # more exposed inputs than a form can reasonably show
MAX_LABEL_CHARS = 200
MAX_VERSION = 2**31 - 1  # pipeline_versions.version is a 32-bit integer


@dataclass(frozen=True)
class SavedRef:
    """A saved pipeline resolved for one run (control/runs.py's `create_run` takes it): the version
    to run, its author (who earns the royalty on others' runs), its graph in wire form, and the run's
    input values (what the runner gave, exposed defaults filled in; the pipeline's own defaults are
    filled later, by `check_run_inputs`)."""

    pipeline_id: str
    version: int
    author_id: str
    definition: dict[str, Any]
    inputs: dict[str, Any]


# -- reading -------------------------------------------------------------------------------------
def _not_found(pipeline_id: str) -> NotFound:
    return NotFound(f"unknown pipeline '{pipeline_id}'")


def visible_to(s: Session, user: User, pipeline_id: str) -> SavedPipeline:
    """The saved pipeline `pipeline_id` if `user` may see it (theirs, public, unlisted, or any for an
    admin); NotFound otherwise, the same as for an id that does not exist."""
    row = s.get(SavedPipeline, pipeline_id)
    if row is None:
        raise _not_found(pipeline_id)
    if row.owner_id != user.id and row.visibility == "private" and user.role != "admin":
        raise _not_found(pipeline_id)
    return row


def owned_by(s: Session, user: User, pipeline_id: str) -> SavedPipeline:
    """The pipeline, for a change only its owner may make: NotFound when `user` cannot see it,
    Forbidden when they can but it is someone else's."""
    row = visible_to(s, user, pipeline_id)
    if row.owner_id != user.id:
        raise Forbidden("only the pipeline's owner can change it")
    return row


def version_of(s: Session, row: SavedPipeline, version: int | None) -> PipelineVersion:
    """Version `version` of the pipeline (None: its latest); NotFound when it has no such version."""
    number = row.latest_version if version is None else version
    # Outside the column's range PostgreSQL would refuse the query itself: no such version either.
    found = s.get(PipelineVersion, (row.id, number)) if 1 <= number <= MAX_VERSION else None
    if found is None:
        raise NotFound(f"pipeline '{row.id}' has no version {number} (its latest is {row.latest_version})")
    return found


def versions_of(s: Session, pipeline_id: str) -> list[int]:
    """The pipeline's version numbers, oldest first."""
    return list(
        s.scalars(
            select(PipelineVersion.version)
            .where(PipelineVersion.pipeline_id == pipeline_id)
            .order_by(PipelineVersion.version)
        )
    )


def search(
    s: Session, *, user: User, q: str | None = None, mine: bool = False, limit: int = 50, offset: int = 0
) -> tuple[list[SavedPipeline], int]:
    """The pipelines `user` may list, newest change first, and how many there are in all: their own
    (any visibility) and everyone's public ones; only their own with `mine`. `q` matches the name or
    the description, case-insensitively (the same on SQLite and PostgreSQL: both sides lowered, and
    `%`/`_` in `q` match themselves). Unlisted pipelines of others are never listed."""
    where: Any = SavedPipeline.owner_id == user.id
    if not mine:
        where = or_(where, SavedPipeline.visibility == "public")
    query = select(SavedPipeline).where(where)
    if q:
        needle = q.lower()
        query = query.where(
            or_(
                func.lower(SavedPipeline.name).contains(needle, autoescape=True),
                func.lower(SavedPipeline.description).contains(needle, autoescape=True),
            )
        )
    total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = s.scalars(
        query.order_by(SavedPipeline.updated_at.desc(), SavedPipeline.id).limit(limit).offset(offset)
    )
    return list(rows), total


def exposed_inputs(
    definition: Mapping[str, Any], exposed: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The exposed inputs' schema as a form shows it: name, type (the pipeline input's), label,
    default (the exposed default, else the pipeline input's) and description."""
    inputs = definition.get("inputs") or {}
    out = []
    for item in exposed:
        spec = inputs.get(item["name"]) or {}
        default = item.get("default")
        out.append(
            {
                "name": item["name"],
                "type": spec.get("type", "string"),
                "required": bool(spec.get("required", True))
                and default is None
                and spec.get("default") is None,
                "label": item.get("label") or spec.get("label") or item["name"],
                "default": default if default is not None else spec.get("default"),
                "description": item.get("description") or spec.get("description") or "",
            }
        )
    return out


# -- running -------------------------------------------------------------------------------------
def resolve_for_run(
    s: Session, *, user: User, pipeline_id: str, version: int | None, inputs: Mapping[str, Any]
) -> SavedRef:
    """What a run of the saved pipeline `pipeline_id` (version `version`, None: the latest) by `user`
    runs. NotFound when `user` may not see it or it has no such version. Someone other than the
    owner may give only the exposed inputs: any other input is a 422 naming it (`inputs.NAME`); the
    owner may give any input of the pipeline. Exposed defaults fill inputs not given. Writes nothing
    (the run's `count_run` is the caller's, once the run exists)."""
    row = visible_to(s, user, pipeline_id)
    found = version_of(s, row, version)
    definition: dict[str, Any] = copy.deepcopy(found.definition)
    declared = set((definition.get("inputs") or {}).keys())
    exposed = {str(e["name"]): e for e in found.exposed}
    allowed = declared if row.owner_id == user.id else set(exposed)
    errors = []
    for name in inputs:
        if name in allowed:
            continue
        if name in declared:
            reason = "is not an exposed input of this pipeline; its author exposes only: " + (
                ", ".join(sorted(exposed)) or "none"
            )
        else:
            reason = "is not an input of this pipeline; its inputs: " + (", ".join(sorted(allowed)) or "none")
        errors.append(FieldError(f"inputs.{name}", f"'{name}' {reason}"))
    if row.owner_id != user.id:
        # A required input nobody but the owner may give, with no default, would make every run of
        # others fail as "required": say why instead.
        for name, spec in (definition.get("inputs") or {}).items():
            if name not in exposed and spec.get("required", True) and spec.get("default") is None:
                errors.append(
                    FieldError(f"inputs.{name}", f"'{name}' is required, and its author did not expose it")
                )
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.reason}" for e in errors), errors=errors)
    values = {name: e["default"] for name, e in exposed.items() if e.get("default") is not None}
    values.update(copy.deepcopy(dict(inputs)))
    return SavedRef(
        pipeline_id=row.id,
        version=found.version,
        author_id=row.owner_id,
        definition=definition,
        inputs=values,
    )


def count_run(s: Session, pipeline_id: str) -> None:
    """One more run of the pipeline (called by the runs code once a run of it is created). One
    UPDATE, so concurrent runs each count."""
    s.execute(
        update(SavedPipeline)
        .where(SavedPipeline.id == pipeline_id)
        .values(run_count=SavedPipeline.run_count + 1)
        .execution_options(synchronize_session=False)
    )


# -- writing -------------------------------------------------------------------------------------
def _check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise InvalidInput.at("name", f"a name has 1 to {MAX_NAME_CHARS} characters")
    return name


def _check_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise InvalidInput.at("description", f"at most {MAX_DESCRIPTION_CHARS} characters")
    return description


def _check_visibility(visibility: str) -> str:
    if visibility not in VISIBILITIES:
        raise InvalidInput.at("visibility", f"'{visibility}' is not one of: " + ", ".join(VISIBILITIES))
    return visibility


def _step_tools(s: Session, slugs: set[str]) -> dict[str, ToolSpec]:
    """The tools the steps name, as specs; unknown slugs are absent (validation names them)."""
    if not slugs:
        return {}
    rows = s.scalars(select(Tool).where(Tool.slug.in_(sorted(slugs))))
    return {row.slug: tool_from_dict(row.spec) for row in rows}


def _checked_definition(s: Session, definition: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The definition validated against the tools in the database (and their availability, for
    the local tools) and written back in its normal wire form. Raises PipelineError (422, naming the
    step and the port) for what a run would refuse."""
    from swarmstation.domain.pipelines import pipeline_from_dict, pipeline_to_dict, validate_pipeline
    from swarmstation.localtools.registry import unavailable_reason

    pipeline = pipeline_from_dict(definition)
    slugs = {step.tool for step in pipeline.steps.values()}
    unavailable: dict[str, str] = {}
    for slug in sorted(slugs):
        reason = unavailable_reason(slug, settings)
        if reason is not None:
            unavailable[slug] = reason
    validate_pipeline(
        pipeline,
        _step_tools(s, slugs),
        unavailable=unavailable,
        max_steps=settings.max_pipeline_steps,
        max_items=settings.max_step_items,
    )
    return pipeline_to_dict(pipeline)


def _checked_exposed(
    definition: Mapping[str, Any], exposed: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The exposed inputs, normalised to {name, label, default, description}: each names a pipeline
    input, once, and its default (if any) is a valid value for that input."""
    from swarmstation.domain.pipelines import Pipeline, PipelineError, check_run_inputs, pipeline_from_dict

    pipeline = pipeline_from_dict(definition)
    if len(exposed) > MAX_EXPOSED:
        raise InvalidInput.at("exposed", f"at most {MAX_EXPOSED} exposed inputs")
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for i, item in enumerate(exposed):
        where = f"exposed[{i}]"
        name = item.get("name")
        if not isinstance(name, str) or name not in pipeline.inputs:
            known = ", ".join(sorted(pipeline.inputs)) or "none"
            raise InvalidInput.at(
                f"{where}.name", f"'{name}' is not an input of the pipeline (its inputs: {known})"
            )
        if name in seen:
            raise InvalidInput.at(f"{where}.name", f"'{name}' is exposed twice")
        seen.add(name)
        spec = pipeline.inputs[name]
        label = item.get("label") or spec.label or name
        description = item.get("description") or ""
        if not isinstance(label, str) or len(label) > MAX_LABEL_CHARS:
            raise InvalidInput.at(
                f"{where}.label", f"a label is text of at most {MAX_LABEL_CHARS} characters"
            )
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
            raise InvalidInput.at(f"{where}.description", f"at most {MAX_DESCRIPTION_CHARS} characters")
        default = item.get("default")
        if default is not None:
            # The input alone, optional: check_run_inputs checks just this value's type and range.
            alone = Pipeline(inputs={name: replace(spec, required=False)}, steps={}, outputs=())
            try:
                default = check_run_inputs(alone, {name: default})[name]
            except PipelineError as exc:
                raise InvalidInput.at(f"{where}.default", exc.reason) from exc
        out.append({"name": name, "label": label, "default": default, "description": description})
    return out


def save(
    s: Session,
    *,
    owner: User,
    name: str,
    description: str,
    definition: Mapping[str, Any],
    exposed: Sequence[Mapping[str, Any]],
    visibility: str,
    settings: Settings,
    now: datetime,
) -> tuple[SavedPipeline, PipelineVersion]:
    """Save a new pipeline owned by `owner`, as its version 1. Everything is checked before anything
    is written: InvalidInput (422) for a bad name, description or visibility, PipelineError for a
    graph a run would refuse, and a 422 at `exposed[i].name` / `.default` for an exposed input that
    is not a pipeline input or whose default does not fit it."""
    name = _check_name(name)
    description = _check_description(description)
    visibility = _check_visibility(visibility)
    graph = _checked_definition(s, definition, settings)
    items = _checked_exposed(graph, exposed)
    row = SavedPipeline(
        id=str(uuid.uuid4()),
        owner_id=owner.id,
        name=name,
        description=description,
        visibility=visibility,
        latest_version=1,
        run_count=0,
        created_at=now,
        updated_at=now,
    )
    version = PipelineVersion(pipeline_id=row.id, version=1, definition=graph, exposed=items, created_at=now)
    s.add(row)
    s.flush()
    s.add(version)
    s.flush()
    return row, version


def new_version(
    s: Session,
    *,
    user: User,
    pipeline_id: str,
    definition: Mapping[str, Any],
    exposed: Sequence[Mapping[str, Any]] | None,
    settings: Settings,
    now: datetime,
) -> tuple[SavedPipeline, PipelineVersion]:
    """A new immutable version (latest + 1) of the owner's pipeline; earlier versions stay as they
    were. `exposed` None keeps the latest version's exposed inputs (checked against the new graph).
    The row is locked while the number is taken, so two concurrent saves cannot take the same one
    (and the primary key refuses it where the lock is not available)."""
    row = owned_by(s, user, pipeline_id)
    s.refresh(row, with_for_update=True)
    graph = _checked_definition(s, definition, settings)
    previous = version_of(s, row, None).exposed if exposed is None else exposed
    items = _checked_exposed(graph, previous)
    row.latest_version += 1
    row.updated_at = now
    version = PipelineVersion(
        pipeline_id=row.id, version=row.latest_version, definition=graph, exposed=items, created_at=now
    )
    s.add(version)
    s.flush()
    return row, version


def update_pipeline(
    s: Session,
    *,
    user: User,
    pipeline_id: str,
    name: str | None = None,
    description: str | None = None,
    visibility: str | None = None,
    now: datetime,
) -> SavedPipeline:
    """Change what describes the owner's pipeline (not its graph: that is a new version)."""
    row = owned_by(s, user, pipeline_id)
    if name is not None:
        row.name = _check_name(name)
    if description is not None:
        row.description = _check_description(description)
    if visibility is not None:
        row.visibility = _check_visibility(visibility)
    row.updated_at = now
    s.flush()
    return row


def delete(s: Session, *, user: User, pipeline_id: str) -> None:
    """Delete the owner's pipeline and its versions (an admin may delete any). Runs of it keep
    their graph (`Run.pipeline`); their `pipeline_id` becomes null."""
    row = visible_to(s, user, pipeline_id)
    if row.owner_id != user.id and user.role != "admin":
        raise Forbidden("only the pipeline's owner or an admin can delete it")
    s.delete(row)
    s.flush()
