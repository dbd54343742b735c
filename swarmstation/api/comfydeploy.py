"""ComfyUI Deploy over HTTP: its webhook, the per-tool traffic split, deployments and machines."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from swarmstation.api.deps import DB, AdminUser, State
from swarmstation.api.schemas import Strict, ToolDetail
from swarmstation.api.views import tool_detail
from swarmstation.control.bootstrap import tool_row
from swarmstation.domain.comfydeploy_webhooks import WebhookError, parse_webhook, verify_webhook_secret
from swarmstation.domain.errors import BadRequest, Conflict, Forbidden, InvalidInput, NotFound, UpstreamError
from swarmstation.domain.tools import tool_from_dict
from swarmstation.integrations.comfydeploy.client import ComfyDeployError
from swarmstation.integrations.comfydeploy.dispatcher import apply_update
from swarmstation.store import queries
from swarmstation.store.models import Job, Tool

router = APIRouter(tags=["comfydeploy"])


@router.post("/v1/webhooks/comfydeploy", include_in_schema=False)
async def webhook(
    request: Request,
    state: State,
    job: Annotated[str, Query(max_length=36)],
    secret: Annotated[str, Query(max_length=128)],
) -> dict[str, Any]:
    """ComfyUI Deploy calls this for each run update. The per-job secret in the URL authenticates
    it; duplicated and out-of-order deliveries change nothing."""
    if not verify_webhook_secret(job, secret, state.webhook_key):
        raise Forbidden("bad webhook secret")
    body = await request.body()
    try:
        update = parse_webhook(body)
    except WebhookError as exc:
        raise BadRequest(f"unreadable webhook: {exc}") from exc
    client = state.comfydeploy
    if client is None:
        raise Conflict("ComfyUI Deploy is not configured here")

    def apply() -> bool:
        with state.sessions() as s, s.begin():
            row = s.get(Job, job)
            if row is None:
                raise NotFound(f"job {job} not found")
            if row.external_run_id != update.run_id:
                raise Conflict(f"run {update.run_id} is not job {job}'s run")
            return apply_update(
                s, row, update, client=client, store=state.store, settings=state.settings, now=state.clock()
            )

    from starlette.concurrency import run_in_threadpool

    changed = await run_in_threadpool(apply)
    state.notifier.wake(f"job:{job}")
    return {"ok": True, "changed": changed}


class SplitIn(Strict):
    comfydeploy_percent: int = Field(
        ge=0, le=100, description="Share of the tool's jobs run on ComfyUI Deploy"
    )
    deployment_id: str | None = Field(None, min_length=1, max_length=100)


class SplitOut(BaseModel):
    tool: str
    comfydeploy_percent: int
    deployment_id: str | None


@router.put("/v1/admin/tools/{slug}/split", response_model=SplitOut, tags=["admin"])
def set_split(slug: str, body: SplitIn, s: DB, _: AdminUser, state: State) -> SplitOut:
    """Change, at run time, the share of a tool's jobs that ComfyUI Deploy runs. Sticky per job:
    a job keeps the backend it got when it was submitted."""
    tool = queries.tool_by_slug(s, slug)
    deployment = body.deployment_id if body.deployment_id is not None else tool.comfydeploy_deployment_id
    if body.comfydeploy_percent > 0:
        if state.comfydeploy is None:
            raise InvalidInput("ComfyUI Deploy is not configured: set COMFY_DEPLOY_API_KEY")
        if not deployment:
            raise InvalidInput("deployment_id: needed to send jobs to ComfyUI Deploy")
        if any(i.type == "image" for i in tool_from_dict(tool.spec).inputs):
            raise InvalidInput(
                f"tool '{slug}' takes input images, which cannot be sent to ComfyUI Deploy yet"
            )
    tool.comfydeploy_percent = body.comfydeploy_percent
    tool.comfydeploy_deployment_id = deployment
    return SplitOut(tool=slug, comfydeploy_percent=tool.comfydeploy_percent, deployment_id=deployment)


@router.get("/v1/admin/comfydeploy/{what}", tags=["admin"])
def listing(what: str, s: DB, _: AdminUser, state: State) -> list[dict[str, Any]]:
    """ComfyUI Deploy's deployments, with the tools they serve, or its machines."""
    if what not in ("deployments", "machines"):
        raise NotFound("deployments or machines")
    if state.comfydeploy is None:
        raise Conflict("ComfyUI Deploy is not configured: set COMFY_DEPLOY_API_KEY")
    try:
        items = state.comfydeploy.deployments() if what == "deployments" else state.comfydeploy.machines()
    except ComfyDeployError as exc:
        raise UpstreamError(f"ComfyUI Deploy: {exc}") from exc
    rows = [{k: v for k, v in vars(i).items() if k != "raw"} for i in items]
    if what == "deployments":
        served: dict[str, list[str]] = {}
        for tool in s.scalars(select(Tool).where(Tool.comfydeploy_deployment_id.is_not(None))):
            if tool.comfydeploy_percent > 0 and tool.comfydeploy_deployment_id:
                served.setdefault(tool.comfydeploy_deployment_id, []).append(tool.slug)
        for row in rows:
            row["tools"] = sorted(served.get(str(row["id"]), []))
    return rows


class DeploymentToolIn(Strict):
    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    like: str = Field(min_length=1, max_length=63, description="A tool with the same inputs and base model")
    name: str | None = Field(None, min_length=1, max_length=200)


@router.post(
    "/v1/admin/comfydeploy/deployments/{deployment_id}/tool",
    response_model=ToolDetail,
    status_code=201,
    tags=["admin"],
)
def deployment_as_tool(
    deployment_id: str, body: DeploymentToolIn, s: DB, _: AdminUser, state: State
) -> ToolDetail:
    """Offer a ComfyUI Deploy deployment as a tool of its own: the inputs, base model and graph of
    an existing tool (`like`), with every job sent to the deployment."""
    if state.comfydeploy is None:
        raise Conflict("ComfyUI Deploy is not configured: set COMFY_DEPLOY_API_KEY")
    try:
        deployments = {d.id: d for d in state.comfydeploy.deployments()}
    except ComfyDeployError as exc:
        raise UpstreamError(f"ComfyUI Deploy: {exc}") from exc
    if deployment_id not in deployments:
        raise NotFound(f"ComfyUI Deploy has no deployment '{deployment_id}'")
    model = queries.tool_by_slug(s, body.like)
    if s.get(Tool, body.slug) is not None:
        raise Conflict(f"tool '{body.slug}' exists")
    spec = tool_from_dict(model.spec)
    if any(i.type == "image" for i in spec.inputs):
        raise InvalidInput(
            f"tool '{body.like}' takes input images, which cannot be sent to ComfyUI Deploy yet"
        )
    name = body.name or f"{deployments[deployment_id].name} (ComfyUI Deploy)"
    spec = replace(
        spec,
        slug=body.slug,
        name=name,
        description=f"Runs on the ComfyUI Deploy deployment {deployments[deployment_id].name}.",
    )
    row = tool_row(spec, builtin=False, now=state.clock())
    row.comfydeploy_deployment_id, row.comfydeploy_percent = deployment_id, 100
    s.add(row)
    s.flush()
    return tool_detail(row)
