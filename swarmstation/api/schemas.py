"""Request and response bodies of the HTTP API (the tables live in store/models.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Every integer a request carries is bounded here, at the edge: a number beyond what its column
# holds (BIGINT, or INTEGER for lease tokens) is a 422, never an overflow in the database (a 500).
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
Int64 = Annotated[int, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]
ByteCount = Annotated[int, Field(ge=0, le=INT64_MAX)]
LeaseToken = Annotated[int, Field(ge=0, le=INT32_MAX, description="The lease's fencing token")]


class Strict(BaseModel):
    # allow_inf_nan=False: Python's JSON parser reads NaN, Infinity and 1e400 (as inf), which
    # PostgreSQL's JSON refuses at commit; they are bad input.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# -- public ----------------------------------------------------------------------------------
class JobCreate(Strict):
    tool: str = Field(min_length=1, max_length=63, description="Tool slug, e.g. sdxl-txt2img")
    inputs: dict[str, Any] = Field(default_factory=dict)


class OutputOut(BaseModel):
    id: str
    filename: str
    content_type: str
    size: int
    url: str


class JobOut(BaseModel):
    id: str
    tool: str
    state: str
    backend: str = Field(description="pool (our instances) or comfydeploy")
    attempt: int
    max_attempts: int
    progress: float
    inputs: dict[str, Any]
    required_models: list[dict[str, Any]]
    applied_loras: list[dict[str, Any]]
    warnings: list[str]
    instance_id: str | None
    error: str | None
    created_at: datetime
    assigned_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    timings: dict[str, Any]
    outputs: list[OutputOut]


class JobList(BaseModel):
    jobs: list[JobOut]


class PriceOut(BaseModel):
    model: str = Field(description="per_run, per_megapixel, per_gpu_second, or derived (from our cost)")
    credits: int | None = Field(description="Credits per run, per output megapixel or per GPU second")
    cap: int | None = Field(None, description="per_gpu_second: the most one run costs")
    estimate: int | None = Field(description="One run with the tool's defaults, in credits (the quote)")


class ToolOutputOut(BaseModel):
    name: str = Field(description="The port's name: a pipeline step reads it as {from: STEP, output: NAME}")
    type: str = Field(
        description="image, text, integer, number, boolean, seed (video, audio, mask, latent reserved)"
    )
    many: bool = Field(description="The port yields a list (a batch)")
    description: str


class ToolSummary(BaseModel):
    slug: str
    name: str
    description: str
    category: str
    base_model: str
    pool: str
    builtin: bool
    kind: str = Field(description="comfyui (a workflow on a worker), llm or image (run on the control plane)")
    outputs: list[ToolOutputOut]
    available: bool = Field(description="Whether the tool can run with this control plane's settings")
    unavailable_reason: str | None = Field(None, description="Why not, when available is false")
    price: PriceOut | None = Field(None, description="What a run costs (POST /v1/quotes for given inputs)")


class ToolDetail(ToolSummary):
    input_schema: dict[str, Any]
    required_models: list[dict[str, str]]
    workflow: dict[str, Any]
    inputs: list[dict[str, Any]]


class UploadOut(BaseModel):
    id: str
    ref: str = Field(description="Pass this as the value of an image input")
    filename: str
    content_type: str
    size: int
    width: int
    height: int


# -- admin -----------------------------------------------------------------------------------
class UserCreate(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: Literal["admin", "user"] = "user"


class UserOut(BaseModel):
    id: str
    name: str
    role: str
    created_at: datetime


class UserCreated(UserOut):
    api_key: str = Field(description="Shown once; stored only as a hash")


class KeyCreated(BaseModel):
    user_id: str
    api_key: str
    prefix: str


class TransitionOut(BaseModel):
    from_state: str | None
    to_state: str
    reason: str
    at: datetime


class InstanceOut(BaseModel):
    id: str
    pool: str
    provider: str
    provider_instance_id: str | None
    state: str
    state_reason: str
    comfyui_url: str | None
    created_at: datetime
    ready_at: datetime | None
    last_heartbeat_at: datetime | None
    terminated_at: datetime | None
    parked_at: datetime | None = Field(None, description="When it was parked (stopped with its disk)")
    active_jobs: int
    cache_hit_rate: float | None = Field(None, description="Model requests served from the instance's cache")
    cache_byte_hit_rate: float | None = Field(None, description="Model bytes served from the cache")
    info: dict[str, Any]
    transitions: list[TransitionOut] | None = None


class PoolOut(BaseModel):
    name: str
    provider: str
    min_instances: int
    max_instances: int
    scale_up_queue_threshold: int
    idle_minutes: float
    slots_per_instance: int
    instances: dict[str, int]


class QueueOut(BaseModel):
    queued: int
    assigned: int
    running: int
    completed: int
    failed: int
    cancelled: int


class StatusOut(BaseModel):
    pools: list[PoolOut]
    instances: list[InstanceOut]
    queue: QueueOut


# -- worker ----------------------------------------------------------------------------------
class RegisterIn(Strict):
    comfyui_url: str = Field(max_length=300)
    version: str = Field(default="", max_length=50)


class BootstrapReport(Strict):
    stage: str = Field(min_length=1, max_length=50, description="e.g. install, comfyui, worker")
    ok: bool
    message: str = Field(default="", max_length=4000)


class RegisterOut(BaseModel):
    instance_id: str
    heartbeat_seconds: float
    lease_seconds: float


class LeaseRef(Strict):
    job_id: str = Field(max_length=36)
    lease_token: LeaseToken


class HeartbeatIn(Strict):
    running: list[LeaseRef] = Field(default_factory=list, max_length=64)
    disk_free_bytes: ByteCount | None = None
    models: list[str] | None = Field(
        default=None,
        max_length=10_000,
        description="The model inventory; omitted with `inventory_digest`: the one the control plane holds",
    )
    inventory_digest: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Instead of `models`, once an answer's `inventory_digest` is this inventory's",
    )
    loaded_checkpoint: str | None = Field(default=None, max_length=300)
    comfyui_ok: bool = True
    cache: dict[str, float] = Field(default_factory=dict, max_length=20)  # hits, misses, bytes_hit, ...


class HeartbeatOut(BaseModel):
    drain: bool
    cancel: list[str]
    stale: list[str]
    prefetch: list[ModelOut] = Field(default_factory=list, description="Popular models to fetch while idle")
    inventory_digest: str | None = Field(
        default=None, description="The digest of the model inventory the control plane holds for the instance"
    )
    send_inventory: bool = Field(
        default=False, description="The digest sent is not the inventory held: send `models` in full"
    )


class InputImageOut(BaseModel):
    node_id: str
    input_name: str
    filename: str
    url: str


class ModelOut(BaseModel):
    folder: str
    name: str
    url: str | None = Field(
        default=None, description="Presigned download URL when the control plane has the file"
    )
    sha256: str | None = None
    size: int | None = None


class Assignment(BaseModel):
    job_id: str
    lease_token: int
    attempt: int
    workflow: dict[str, Any]
    required_models: list[ModelOut]
    input_images: list[InputImageOut]
    lease_seconds: float
    started: bool = Field(
        default=False,
        description="The job is already RUNNING (the poll asked with start=true): no /started call is needed",
    )


class LeasedReport(Strict):
    lease_token: LeaseToken


class ProgressIn(LeasedReport):
    progress: float = Field(ge=0, le=1)
    node: str | None = Field(default=None, max_length=50)
    value: Int64 | None = None
    max: Int64 | None = None
    stage: str | None = Field(default=None, max_length=40)


class OutputFileIn(Strict):
    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(default="image/png", max_length=100)
    size: ByteCount
    node_id: str = Field(default="", max_length=50)


class OutputsIn(LeasedReport):
    files: list[OutputFileIn] = Field(min_length=1, max_length=64)


class OutputUpload(BaseModel):
    output_id: str
    filename: str
    upload_url: str


class OutputsOut(BaseModel):
    uploads: list[OutputUpload]


class CompleteIn(LeasedReport):
    outputs: list[str] = Field(default_factory=list, max_length=64)
    timings: dict[str, float] = Field(default_factory=dict)


class FailIn(LeasedReport):
    error: str = Field(max_length=4000)
    retryable: bool = False
    infrastructure: bool = Field(
        default=False,
        description="The machine failed, not the job (ComfyUI gone, disk): requeued without spending "
        "an attempt; several in a row take the instance out",
    )
