"""The LoRA registry over HTTP: list and search, get, import, moderation, grants, the trigger
map, and a resolution preview."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, or_, select
from starlette.concurrency import run_in_threadpool

from swarmstation.api.deps import DB, AdminUser, CurrentUser, State
from swarmstation.api.schemas import INT64_MAX, Strict
from swarmstation.control import loras as registry
from swarmstation.control import moderation
from swarmstation.domain.errors import Forbidden, InvalidInput
from swarmstation.domain.loras import PromptTooLong, base_model_family, resolve
from swarmstation.domain.moderation import ModerationState
from swarmstation.domain.tools import tool_from_dict
from swarmstation.store import lora_queries, queries
from swarmstation.store.models import Lora

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
    moderation_status: ModerationState = Field(
        description="pending_review → staging (after approval) → approved or deployment_failed; rejected"
    )
    moderation_reason: str = Field(description="The reviewer's reason (a rejection)")
    staging_bytes_done: int = Field(description="Bytes of the file downloaded so far while staging")
    staging_bytes_total: int | None = Field(description="The file's size, when known")
    failure_reason: str = Field(description="Why staging failed (deployment_failed); empty otherwise")
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
        **{k: getattr(lora, k) for k in LoraOut.model_fields if hasattr(lora, k)},
        moderation_status=lora.state,
        staged=lora.object_key is not None,
    )


@router.get("/loras", response_model=LoraList)
def list_loras(
    s: DB,
    user: CurrentUser,
    state: State,
    base_model: Annotated[str | None, Query(max_length=40, description="Family-compatible filter")] = None,
    tag: Annotated[str | None, Query(max_length=50)] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text in name, slug or description")] = None,
    status: Annotated[ModerationState | None, Query()] = None,
    mine: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> LoraList:
    query = select(Lora)
    if user.role != "admin":
        grants = lora_queries.granted_lora_ids(s, user.id, state.clock())
        query = query.where(
            or_(
                Lora.owner_id == user.id,
                (Lora.state == ModerationState.APPROVED)
                & ((Lora.visibility == "public") | Lora.id.in_(grants)),
            )
        )
    if mine:
        query = query.where(Lora.owner_id == user.id)
    query = query.where(Lora.state == (status or ModerationState.APPROVED)) if status or not mine else query
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
    return registry.trigger_map(s, user, state.clock())


@router.get("/loras/{slug}", response_model=LoraOut)
def get_lora(slug: str, s: DB, user: CurrentUser, state: State) -> LoraOut:
    return lora_out(registry.visible_lora(s, slug, user, state.clock()))


@router.patch("/loras/{slug}", response_model=LoraOut)
def update_lora(slug: str, body: LoraUpdate, s: DB, user: CurrentUser, state: State) -> LoraOut:
    lora = registry.visible_lora(s, slug, user, state.clock())
    if lora.owner_id != user.id and user.role != "admin":
        raise Forbidden("only the owner or an admin can edit a LoRA")
    for key, value in body.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(lora, key, value)
    lora.updated_at = state.clock()
    registry.bump_version(s)
    return lora_out(lora)


@router.post("/loras/import", response_model=LoraOut, status_code=201)
async def import_lora(body: ImportIn, user: CurrentUser, state: State) -> LoraOut:
    """Fetch metadata from Civitai or Hugging Face; the LoRA waits for an admin's approval."""
    lora = await run_in_threadpool(
        moderation.import_lora,
        state.sessions,
        state.settings,
        url=body.url,
        owner_id=user.id,
        visibility=body.visibility,
        clock=state.clock,
    )
    return lora_out(lora)


@router.get("/admin/loras", response_model=LoraList, tags=["admin"])
def moderation_queue(
    s: DB,
    _: AdminUser,
    status: ModerationState = ModerationState.PENDING_REVIEW,
) -> LoraList:
    rows = lora_queries.loras_in_state(s, status)
    return LoraList(loras=[lora_out(r) for r in rows], total=len(rows))


@router.post(
    "/admin/loras/{slug}/approve",
    response_model=LoraOut,
    status_code=202,
    tags=["admin"],
    responses={200: {"model": LoraOut, "description": "Already approved: nothing to stage"}},
)
def approve_lora(
    slug: str, body: ApproveIn, s: DB, admin: AdminUser, state: State, response: Response
) -> LoraOut:
    """Approve: answers at once with the LoRA `staging` (202); the file is then downloaded,
    verified (sha256) and stored in the background, with progress in `staging_bytes_done` /
    `staging_bytes_total`, ending `approved`, or `deployment_failed` with `failure_reason`
    (approving again retries). Poll `GET /v1/loras/{slug}` to follow it. Every hop of the
    download is checked (see swarmstation.net.outbound); the source's token goes only to the
    source's own hosts; `final_url` records where the file came from. 409 for a rejected LoRA."""
    lora = moderation.approve(s, slug, admin_id=admin.id, visibility=body.visibility, now=state.clock())
    out = lora_out(lora)
    if lora.state == ModerationState.APPROVED:
        response.status_code = 200
    else:
        s.commit()
        state.loops.poke()  # the staging loop starts it now, not at its next quiet-time pass
    return out


@router.post("/admin/loras/{slug}/reject", response_model=LoraOut, tags=["admin"])
def reject_lora(slug: str, body: RejectIn, s: DB, admin: AdminUser, state: State) -> LoraOut:
    """Reject, from any state (a staging under way is abandoned)."""
    lora = moderation.reject(s, slug, admin_id=admin.id, reason=body.reason, now=state.clock())
    return lora_out(lora)


@router.post("/loras/{slug}/grants", response_model=GrantOut, status_code=201)
def grant(slug: str, body: GrantIn, s: DB, user: CurrentUser, state: State) -> GrantOut:
    lora, row = registry.grant(s, slug, by=user, to=body.user, expires_at=body.expires_at, now=state.clock())
    return GrantOut(
        id=row.id, lora=lora.slug, user_id=row.user_id, expires_at=row.expires_at, revoked_at=None
    )


@router.delete("/loras/{slug}/grants/{user_ident}", status_code=204)
def revoke(slug: str, user_ident: str, s: DB, user: CurrentUser, state: State) -> None:
    registry.revoke(s, slug, by=user, user_ident=user_ident, now=state.clock())


@router.post("/loras/resolve", response_model=ResolveOut)
def resolve_preview(body: ResolveIn, s: DB, user: CurrentUser, state: State) -> ResolveOut:
    """What a prompt would resolve to for a tool, without running anything."""
    tool = queries.tool_by_slug(s, body.tool)
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
        raise InvalidInput.at("prompt", str(exc)) from exc
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
