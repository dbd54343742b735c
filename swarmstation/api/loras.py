"""The LoRA registry over HTTP: list and search, get, import, moderation, grants, the trigger
map, and a resolution preview."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field
from sqlalchemy import func, or_, select
from starlette.concurrency import run_in_threadpool

from swarmstation.api.deps import DB, AdminUser, CurrentUser, State
from swarmstation.api.schemas import INT64_MAX, Strict
from swarmstation.control import loras as registry
from swarmstation.domain.loras import PromptTooLong, base_model_family, resolve
from swarmstation.domain.tools import tool_from_dict
from swarmstation.loras.sources import CivitaiClient, HuggingFaceClient, ImportError_, fetch_metadata
from swarmstation.loras.staging import StagingError, stage_file
from swarmstation.store.models import Lora, LoraGrant, Tool, User

router = APIRouter(prefix="/v1", tags=["loras"])


class LoraOut(BaseModel):
    id: str
    slug: str
    name: str
    description: str
    triggers: list[str]
    aliases: list[str]
    tags: list[str]
    preview_images: list[str]
    default_weight: float
    base_model: str
    source_base_model: str
    file_name: str
    file_size: int | None
    file_sha256: str | None
    source_kind: str
    source_url: str | None = Field(description="The download URL the source named (fetched on approval)")
    final_url: str | None = Field(
        description="Where the file came from after redirects (query dropped); set once staged"
    )
    page_url: str | None
    original_author: str | None
    staged: bool
    visibility: str
    owner_id: str
    moderation_status: str
    moderation_reason: str
    usage_count: int
    created_at: datetime
    updated_at: datetime


class LoraList(BaseModel):
    loras: list[LoraOut]
    total: int


class ImportIn(Strict):
    url: str = Field(
        min_length=8, max_length=2000, description="A Civitai model/version or Hugging Face repo URL"
    )
    visibility: Literal["public", "private", "unlisted"] = "public"


class ApproveIn(Strict):
    visibility: Literal["public", "private", "unlisted"] | None = None


class RejectIn(Strict):
    reason: str = Field(min_length=1, max_length=2000)


class GrantIn(Strict):
    user: str = Field(min_length=1, max_length=100, description="User name or id")
    expires_at: datetime | None = None


class GrantOut(BaseModel):
    id: str
    lora: str
    user_id: str
    expires_at: datetime | None
    revoked_at: datetime | None


class LoraUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=20_000)
    triggers: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=200
    )
    aliases: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        default=None, max_length=50
    )
    tags: list[Annotated[str, Field(min_length=1, max_length=50)]] | None = Field(default=None, max_length=50)
    default_weight: float | None = Field(default=None, ge=-10, le=10)
    visibility: Literal["public", "private", "unlisted"] | None = None


class ResolveIn(Strict):
    prompt: str = Field(max_length=100_000)
    tool: str = Field(min_length=1, max_length=63)


class AppliedOut(BaseModel):
    slug: str
    weight: float
    strength_model: float
    strength_clip: float
    source: str
    matched_text: str


class ResolveOut(BaseModel):
    prompt: str
    loras: list[AppliedOut]
    warnings: list[str]


def lora_out(lora: Lora) -> LoraOut:
    return LoraOut(
        **{k: getattr(lora, k) for k in LoraOut.model_fields if k != "staged" and hasattr(lora, k)},
        staged=lora.object_key is not None,
    )


def _get_visible(s: DB, slug: str, user: User, state: State) -> Lora:
    lora = s.scalar(select(Lora).where(Lora.slug == slug))
    if lora is None or not registry.can_see(s, lora, user, state.clock()):
        raise HTTPException(404, f"unknown LoRA '{slug}'")
    return lora


@router.get("/loras", response_model=LoraList)
def list_loras(
    s: DB,
    user: CurrentUser,
    state: State,
    base_model: Annotated[str | None, Query(max_length=40, description="Family-compatible filter")] = None,
    tag: Annotated[str | None, Query(max_length=50)] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text in name, slug or description")] = None,
    status: Annotated[
        Literal["pending_review", "approved", "rejected", "deployment_failed"] | None, Query()
    ] = None,
    mine: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> LoraList:
    query = select(Lora)
    if user.role != "admin":
        grants = registry.granted_ids(s, user.id, state.clock())
        query = query.where(
            or_(
                Lora.owner_id == user.id,
                (Lora.moderation_status == registry.APPROVED)
                & ((Lora.visibility == "public") | Lora.id.in_(grants)),
            )
        )
    if mine:
        query = query.where(Lora.owner_id == user.id)
    query = (
        query.where(Lora.moderation_status == (status or registry.APPROVED)) if status or not mine else query
    )
    if q:
        like = f"%{q.lower()}%"
        query = query.where(
            or_(
                func.lower(Lora.name).like(like),
                func.lower(Lora.slug).like(like),
                func.lower(Lora.description).like(like),
            )
        )
    rows = list(s.scalars(query.order_by(Lora.created_at.desc())))
    if base_model:
        family = base_model_family(base_model)
        rows = [r for r in rows if base_model_family(r.base_model) == family]
    if tag:
        rows = [r for r in rows if tag.lower() in {t.lower() for t in r.tags}]
    return LoraList(loras=[lora_out(r) for r in rows[offset : offset + limit]], total=len(rows))


@router.get("/loras/trigger-map", response_model=dict[str, list[str]])
def trigger_map(s: DB, user: CurrentUser, state: State) -> dict[str, list[str]]:
    """Trigger word or phrase (lowercased) → the slugs it may select for you."""
    now = state.clock()
    grants = registry.granted_ids(s, user.id, now)
    rows = s.scalars(
        select(Lora).where(
            Lora.moderation_status == registry.APPROVED,
            Lora.object_key.is_not(None),
            or_(Lora.visibility == "public", Lora.owner_id == user.id, Lora.id.in_(grants)),
        )
    )
    out: dict[str, list[str]] = {}
    for r in rows:
        for t in r.triggers:
            out.setdefault(" ".join(str(t).lower().split()), []).append(r.slug)
    return {k: sorted(v) for k, v in sorted(out.items())}


@router.get("/loras/{slug}", response_model=LoraOut)
def get_lora(slug: str, s: DB, user: CurrentUser, state: State) -> LoraOut:
    return lora_out(_get_visible(s, slug, user, state))


@router.patch("/loras/{slug}", response_model=LoraOut)
def update_lora(slug: str, body: LoraUpdate, s: DB, user: CurrentUser, state: State) -> LoraOut:
    lora = _get_visible(s, slug, user, state)
    if lora.owner_id != user.id and user.role != "admin":
        raise HTTPException(403, "only the owner or an admin can edit a LoRA")
    for key, value in body.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(lora, key, value)
    lora.updated_at = state.clock()
    registry.bump_version(s)
    return lora_out(lora)


@router.post("/loras/import", response_model=LoraOut, status_code=201)
async def import_lora(body: ImportIn, user: CurrentUser, state: State) -> LoraOut:
    """Fetch metadata from Civitai or Hugging Face; the LoRA waits for an admin's approval."""
    settings = state.settings

    def fetch() -> Any:
        policy = registry.outbound_policy(settings)
        civitai = CivitaiClient(settings.civitai_base_url, settings.civitai_token, policy=policy)
        hf = HuggingFaceClient(settings.huggingface_base_url, settings.huggingface_token, policy=policy)
        try:
            return fetch_metadata(body.url, civitai=civitai, huggingface=hf)
        finally:
            civitai.close()
            hf.close()

    try:
        meta = await run_in_threadpool(fetch)
    except ImportError_ as exc:
        raise HTTPException(422, str(exc)) from exc

    def save() -> LoraOut:
        with state.sessions() as s, s.begin():
            owner = s.get(User, user.id)
            assert owner is not None
            try:
                lora = registry.create_imported(
                    s, meta, owner=owner, visibility=body.visibility, now=state.clock()
                )
            except ValueError as exc:
                raise HTTPException(409, str(exc)) from exc
            s.flush()
            return lora_out(lora)

    return await run_in_threadpool(save)


@router.get("/admin/loras", response_model=LoraList, tags=["admin"])
def moderation_queue(
    s: DB,
    _: AdminUser,
    status: Literal["pending_review", "approved", "rejected", "deployment_failed"] = "pending_review",
) -> LoraList:
    rows = list(s.scalars(select(Lora).where(Lora.moderation_status == status).order_by(Lora.created_at)))
    return LoraList(loras=[lora_out(r) for r in rows], total=len(rows))


@router.post("/admin/loras/{slug}/approve", response_model=LoraOut, tags=["admin"])
async def approve_lora(slug: str, body: ApproveIn, admin: AdminUser, state: State) -> LoraOut:
    """Stage the file into the object store (download, verify sha256), then approve. A failed
    staging leaves the LoRA `deployment_failed` with the reason; approving again retries.
    Every hop of the download is checked (see swarmstation.net.outbound); the source's token
    goes only to the source's own hosts; `final_url` records where the file came from."""

    def load() -> tuple[str, str | None, str | None, str]:
        with state.sessions() as s, s.begin():
            lora = s.scalar(select(Lora).where(Lora.slug == slug))
            if lora is None:
                raise HTTPException(404, f"unknown LoRA '{slug}'")
            if lora.moderation_status == registry.REJECTED:
                raise HTTPException(409, f"LoRA '{slug}' was rejected")
            return lora.id, lora.source_url, lora.file_sha256, lora.source_kind

    lora_id, url, sha, kind = await run_in_threadpool(load)
    settings = state.settings
    staged, error = None, ""
    if not url:
        error = "no download URL"
    else:
        try:
            staged = await run_in_threadpool(
                stage_file,
                url,
                state.store,
                expected_sha256=sha,
                max_bytes=settings.lora_max_bytes,
                policy=registry.outbound_policy(settings),
                credentials=registry.staging_credentials(settings, kind),
            )
        except StagingError as exc:
            error = str(exc)

    def finish() -> LoraOut:
        with state.sessions() as s, s.begin():
            lora = s.get(Lora, lora_id)
            assert lora is not None
            now = state.clock()
            lora.reviewed_by, lora.reviewed_at, lora.updated_at = admin.id, now, now
            if staged is None:
                lora.moderation_status = registry.DEPLOYMENT_FAILED
                lora.moderation_reason = error
            else:
                lora.moderation_status = registry.APPROVED
                lora.moderation_reason = ""
                lora.object_key, lora.file_sha256, lora.file_size = staged.key, staged.sha256, staged.size
                lora.final_url = staged.final_url
                if body.visibility is not None:
                    lora.visibility = body.visibility
            registry.bump_version(s)
            return lora_out(lora)

    return await run_in_threadpool(finish)


@router.post("/admin/loras/{slug}/reject", response_model=LoraOut, tags=["admin"])
def reject_lora(slug: str, body: RejectIn, s: DB, admin: AdminUser, state: State) -> LoraOut:
    lora = s.scalar(select(Lora).where(Lora.slug == slug))
    if lora is None:
        raise HTTPException(404, f"unknown LoRA '{slug}'")
    now = state.clock()
    lora.moderation_status, lora.moderation_reason = registry.REJECTED, body.reason
    lora.reviewed_by, lora.reviewed_at, lora.updated_at = admin.id, now, now
    registry.bump_version(s)
    return lora_out(lora)


def _grantable(s: DB, slug: str, user: User, state: State) -> Lora:
    lora = _get_visible(s, slug, user, state)
    if lora.owner_id != user.id and user.role != "admin":
        raise HTTPException(403, "only the owner or an admin can grant access")
    return lora


def _target_user(s: DB, ident: str) -> User:
    target = s.scalar(select(User).where(or_(User.name == ident, User.id == ident)))
    if target is None:
        raise HTTPException(404, f"unknown user '{ident}'")
    return target


@router.post("/loras/{slug}/grants", response_model=GrantOut, status_code=201)
def grant(slug: str, body: GrantIn, s: DB, user: CurrentUser, state: State) -> GrantOut:
    lora = _grantable(s, slug, user, state)
    target = _target_user(s, body.user)
    now = state.clock()
    if body.expires_at is not None and body.expires_at.tzinfo is None:
        raise HTTPException(422, "expires_at: give a time zone, e.g. 2026-12-31T00:00:00Z")
    if body.expires_at is not None and body.expires_at <= now:
        raise HTTPException(422, "expires_at: must be in the future")
    row = LoraGrant(
        id=str(uuid.uuid4()),
        lora_id=lora.id,
        user_id=target.id,
        granted_by=user.id,
        created_at=now,
        expires_at=body.expires_at,
        revoked_at=None,
    )
    s.add(row)
    registry.bump_version(s)
    return GrantOut(id=row.id, lora=lora.slug, user_id=target.id, expires_at=row.expires_at, revoked_at=None)


@router.delete("/loras/{slug}/grants/{user_ident}", status_code=204)
def revoke(slug: str, user_ident: str, s: DB, user: CurrentUser, state: State) -> None:
    lora = _grantable(s, slug, user, state)
    target = _target_user(s, user_ident)
    rows = list(
        s.scalars(
            select(LoraGrant).where(
                LoraGrant.lora_id == lora.id, LoraGrant.user_id == target.id, LoraGrant.revoked_at.is_(None)
            )
        )
    )
    if not rows:
        raise HTTPException(404, f"'{user_ident}' has no grant on '{slug}'")
    for row in rows:
        row.revoked_at = state.clock()
    registry.bump_version(s)


@router.post("/loras/resolve", response_model=ResolveOut)
def resolve_preview(body: ResolveIn, s: DB, user: CurrentUser, state: State) -> ResolveOut:
    """What a prompt would resolve to for a tool, without running anything."""
    tool = s.get(Tool, body.tool)
    if tool is None:
        raise HTTPException(404, f"unknown tool '{body.tool}'")
    spec = tool_from_dict(tool.spec)
    matcher = state.matchers.matcher_for(s, user, state.clock())
    try:
        r = resolve(
            body.prompt,
            matcher,
            tool_base_model=spec.base_model,
            max_loras=state.settings.max_loras_per_job,
            max_prompt_chars=state.settings.max_prompt_chars,
        )
    except PromptTooLong as exc:
        raise HTTPException(422, f"prompt: {exc}") from exc
    return ResolveOut(
        prompt=r.prompt,
        loras=[
            AppliedOut(
                slug=a.slug,
                weight=a.weight,
                strength_model=a.strength_model,
                strength_clip=a.strength_clip,
                source=a.source,
                matched_text=a.matched_text,
            )
            for a in r.loras
        ],
        warnings=list(r.warnings),
    )
