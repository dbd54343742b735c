"""SQLAlchemy tables. Schemas for the API live in api/schemas.py; these are the stored rows."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from swarmstation.domain.credits import EntryKind, HoldState
from swarmstation.domain.deposits import DepositState
from swarmstation.domain.moderation import ModerationState
from swarmstation.domain.pipelines.states import RunState, StepState
from swarmstation.domain.scaling import POOL_DEFAULTS
from swarmstation.domain.states import InstanceState, InstanceTrigger, JobState, JobTrigger


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def state_enum(states: type[StrEnum], length: int) -> Enum:
    """A lifecycle's states (or triggers) stored as their string values in a VARCHAR (no native
    enum type to migrate when a state is added); rows read back as the enum, so no casts."""
    return Enum(
        states,
        native_enum=False,
        length=length,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))  # "admin" | "user"
    created_at: Mapped[datetime]


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown to people to tell keys apart
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    name: Mapped[str] = mapped_column(String(100), default="", server_default="")  # the owner's label


class Tool(Base):
    __tablename__ = "tools"
    slug: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(50))
    base_model: Mapped[str] = mapped_column(String(50))
    pool: Mapped[str] = mapped_column(String(63))
    spec: Mapped[dict[str, Any]]  # domain.tools.tool_to_dict
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # Traffic split: this share of the tool's jobs runs on ComfyUI Deploy (the rest on the pool).
    comfydeploy_deployment_id: Mapped[str | None] = mapped_column(String(100))
    comfydeploy_percent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


def _sql(value: float | str) -> str:
    """A server default as SQL text: 60.0 is "60", 1.1 is "1.1"."""
    return value if isinstance(value, str) else f"{value:g}"


class Pool(Base):
    __tablename__ = "pools"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    provider: Mapped[str] = mapped_column(String(30))
    min_instances: Mapped[int]
    max_instances: Mapped[int]
    scale_up_queue_threshold: Mapped[int]
    idle_minutes: Mapped[float] = mapped_column(Float)
    slots_per_instance: Mapped[int] = mapped_column(Integer, default=POOL_DEFAULTS.slots_per_instance)
    created_at: Mapped[datetime]
    # What to rent and run (providers that rent machines); OfferFilters as a dict.
    gpu_filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    image: Mapped[str] = mapped_column(String(300), default="", server_default="")
    startup_script: Mapped[str] = mapped_column(Text, default="", server_default="")
    preload_models: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")
    max_spend_per_hour: Mapped[float | None] = mapped_column(Float)
    provisioning_timeout_seconds: Mapped[float | None] = mapped_column(Float)
    max_lifetime_hours: Mapped[float | None] = mapped_column(Float)
    # Defaults from domain.scaling.POOL_DEFAULTS (server defaults as the migrations wrote them).
    target_wait_seconds: Mapped[float] = mapped_column(
        Float,
        default=POOL_DEFAULTS.target_wait_seconds,
        server_default=_sql(POOL_DEFAULTS.target_wait_seconds),
    )
    scale_cooldown_seconds: Mapped[float] = mapped_column(
        Float,
        default=POOL_DEFAULTS.scale_cooldown_seconds,
        server_default=_sql(POOL_DEFAULTS.scale_cooldown_seconds),
    )
    # Drain idle instances beyond what recent work needs at this utilisation (None: idle_minutes only).
    target_utilisation: Mapped[float | None] = mapped_column(Float, default=POOL_DEFAULTS.target_utilisation)
    utilisation_grace_seconds: Mapped[float] = mapped_column(
        Float,
        default=POOL_DEFAULTS.utilisation_grace_seconds,
        server_default=_sql(POOL_DEFAULTS.utilisation_grace_seconds),
    )
    # Parking: idle instances leaving the pool are stopped with their disk (0: destroyed instead).
    max_parked: Mapped[int] = mapped_column(
        Integer, default=POOL_DEFAULTS.max_parked, server_default=_sql(POOL_DEFAULTS.max_parked)
    )
    park_max_hours: Mapped[float] = mapped_column(
        Float, default=POOL_DEFAULTS.park_max_hours, server_default=_sql(POOL_DEFAULTS.park_max_hours)
    )
    # "on-demand" or "interruptible" (bid rentals, stopped when outbid); the bid is min_bid * bid_margin.
    rental: Mapped[str] = mapped_column(
        String(20), default=POOL_DEFAULTS.rental, server_default=_sql(POOL_DEFAULTS.rental)
    )
    bid_margin: Mapped[float] = mapped_column(
        Float, default=POOL_DEFAULTS.bid_margin, server_default=_sql(POOL_DEFAULTS.bid_margin)
    )
    last_scale_up_at: Mapped[datetime | None]


class Instance(Base):
    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    pool: Mapped[str] = mapped_column(ForeignKey("pools.name"), index=True)
    provider: Mapped[str] = mapped_column(String(30))
    provider_instance_id: Mapped[str | None] = mapped_column(String(100))
    state: Mapped[InstanceState] = mapped_column(state_enum(InstanceState, 20), index=True)
    state_reason: Mapped[str] = mapped_column(Text, default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    comfyui_url: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime]
    state_changed_at: Mapped[datetime]
    ready_at: Mapped[datetime | None]
    last_heartbeat_at: Mapped[datetime | None]
    idle_since: Mapped[datetime | None]
    terminated_at: Mapped[datetime | None]
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # last heartbeat's report
    price_per_hour: Mapped[float | None] = mapped_column(Float)
    gpu_name: Mapped[str | None] = mapped_column(String(100))
    # When it was parked (stopped at the provider with its disk); kept while a parked instance is
    # drained to be destroyed, cleared when it is resumed.
    parked_at: Mapped[datetime | None]
    # Jobs failed in a row because of the machine (a circuit breaker takes it out past a threshold).
    consecutive_infra_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class InstanceTransition(Base):
    __tablename__ = "instance_transitions"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[InstanceState | None] = mapped_column(state_enum(InstanceState, 20))
    to_state: Mapped[InstanceState] = mapped_column(state_enum(InstanceState, 20))
    # what moved it (None on the row that records its creation); `reason` says it in words
    trigger: Mapped[InstanceTrigger | None] = mapped_column(state_enum(InstanceTrigger, 30))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    tool_slug: Mapped[str] = mapped_column(String(63))
    pool: Mapped[str] = mapped_column(String(63))
    state: Mapped[JobState] = mapped_column(state_enum(JobState, 20))
    inputs: Mapped[dict[str, Any]]
    workflow: Mapped[dict[str, Any]]
    required_models: Mapped[list[Any]]
    input_images: Mapped[dict[str, Any]]
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int]
    instance_id: Mapped[str | None] = mapped_column(String(36), index=True)
    lease_token: Mapped[int] = mapped_column(Integer, default=0)  # fencing token, +1 per assignment
    lease_expires_at: Mapped[datetime | None]
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    queued_at: Mapped[datetime]
    assigned_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # LoRAs applied by trigger resolution or tags: [{slug, lora_id, owner_id, strength_model, ...}]
    applied_loras: Mapped[list[Any]] = mapped_column(JSON, default=list)
    warnings: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Requeues after a failure of the machine, which spend no attempt (bounded: no job bounces forever).
    infra_requeues: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Which execution backend runs it: "pool" (our instances) or "comfydeploy" (the managed service).
    backend: Mapped[str] = mapped_column(String(20), default="pool", server_default="pool")
    external_run_id: Mapped[str | None] = mapped_column(String(100), index=True)
    # the last run update from the external backend
    external: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    # Outputs that are values, not files, by output port: {"text": "..."} (a file output is an
    # Output row whose node_id is the port name for tools that are not ComfyUI workflows).
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    # The run step this job is one item of (None for a job submitted on its own): the run, the
    # step id, the variation index and the run attempt (a retry makes new jobs for the step).
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    run_step: Mapped[str | None] = mapped_column(String(64))
    run_item: Mapped[int | None] = mapped_column(Integer)
    run_attempt: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_jobs_state_queued_at", "state", "queued_at"),
        # the newest jobs (prefetch demand), and a pool's last finished jobs (expected run time)
        Index("ix_jobs_created_at", "created_at"),
        Index("ix_jobs_pool_state_finished_at", "pool", "state", "finished_at"),
    )


class JobEvent(Base):
    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(30))
    data: Mapped[dict[str, Any]]
    # what moved the job, on `state` events (None on its submission and on progress events)
    trigger: Mapped[JobTrigger | None] = mapped_column(state_enum(JobTrigger, 30))
    at: Mapped[datetime]


class Output(Base):
    __tablename__ = "outputs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    node_id: Mapped[str] = mapped_column(String(50))
    uploaded: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]


class Upload(Base):
    """An image a user uploaded as a tool input."""

    __tablename__ = "uploads"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class Lora(Base):
    """A LoRA in the registry. `base_model` is our family label (SD1.5, SDXL, Pony, FLUX, ...);
    `source_base_model` keeps the source's own string (e.g. Civitai's "SDXL 1.0")."""

    __tablename__ = "loras"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    triggers: Mapped[list[Any]]  # words and multi-word phrases, as written
    aliases: Mapped[list[Any]]
    tags: Mapped[list[Any]]
    preview_images: Mapped[list[Any]]
    default_weight: Mapped[float] = mapped_column(Float, default=1.0)
    base_model: Mapped[str] = mapped_column(String(40), index=True)
    source_base_model: Mapped[str] = mapped_column(String(100), default="")
    file_name: Mapped[str] = mapped_column(String(255))  # as ComfyUI sees it under models/loras
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    file_sha256: Mapped[str | None] = mapped_column(String(64))
    source_kind: Mapped[str] = mapped_column(String(20))  # civitai | huggingface | url | object
    source_url: Mapped[str | None] = mapped_column(Text)  # where the file is downloaded from
    final_url: Mapped[str | None] = mapped_column(Text)  # where it came from after redirects, on staging
    page_url: Mapped[str | None] = mapped_column(Text)  # the page it was imported from
    original_author: Mapped[str | None] = mapped_column(String(200))
    object_key: Mapped[str | None] = mapped_column(String(300))  # set once staged
    visibility: Mapped[str] = mapped_column(String(20))  # public | private | unlisted
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    # The moderation state (domain/moderation.py); the column keeps its first name.
    state: Mapped[ModerationState] = mapped_column(
        "moderation_status", state_enum(ModerationState, 30), index=True
    )
    moderation_reason: Mapped[str] = mapped_column(Text, default="")  # the reviewer's words
    # Background staging (control/moderation.py): progress while `staging`, why it failed.
    staging_bytes_done: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    staging_bytes_total: Mapped[int | None] = mapped_column(BigInteger)
    failure_reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    reviewed_by: Mapped[str | None] = mapped_column(String(36))
    reviewed_at: Mapped[datetime | None]
    usage_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class LoraGrant(Base):
    """Access to a private LoRA for a user other than its owner."""

    __tablename__ = "lora_grants"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    lora_id: Mapped[str] = mapped_column(ForeignKey("loras.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    granted_by: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Model(Base):
    """A model file instances may need: where ComfyUI looks for it, and where to fetch it."""

    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(30))  # checkpoint, lora, vae, unet, clip, upscale, ...
    folder: Mapped[str] = mapped_column(String(50))  # ComfyUI folder key
    name: Mapped[str] = mapped_column(String(255))  # relative file name inside the folder
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    source_kind: Mapped[str] = mapped_column(String(10))  # object | url
    object_key: Mapped[str | None] = mapped_column(String(300))
    url: Mapped[str | None] = mapped_column(Text)
    base_model: Mapped[str] = mapped_column(String(40), default="other")
    created_by: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime]

    __table_args__ = (Index("ux_models_folder_name", "folder", "name", unique=True),)


class IdempotencyKey(Base):
    """A client's `Idempotency-Key` on a creating request (`scope`, e.g. "jobs.create"): the same
    key with the same request answers the result it created (`job_id`) instead of a second one."""

    __tablename__ = "idempotency_keys"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    scope: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the canonical request body
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))  # runs.create
    created_at: Mapped[datetime] = mapped_column(index=True)


class Meta(Base):
    """Small facts about this database, e.g. that the bundled tools were seeded once."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- sign-in: SIWE nonces, browser sessions, wallets (control/auth.py) ----------------------------
class AuthNonce(Base):
    """A nonce issued for one Sign-In with Ethereum message: used once, before `expires_at`."""

    __tablename__ = "auth_nonces"
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]


class BrowserSession(Base):
    """A signed-in browser: the cookie's random token and its CSRF token, stored only as hashes."""

    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    address: Mapped[str | None] = mapped_column(String(42))  # the wallet it signed in with
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Wallet(Base):
    """An address proven by a SIWE signature; it belongs to one user (deposits from it are theirs)."""

    __tablename__ = "wallets"
    address: Mapped[str] = mapped_column(String(42), primary_key=True)  # lowercase 0x + 40 hex
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    linked_at: Mapped[datetime]


# -- credits (domain/credits.py describes the model; control/ledger.py is the only writer) --------
# Money is BigInteger; on SQLite only INTEGER PRIMARY KEY autoincrements, hence the variant.
_LEDGER_ID = BigInteger().with_variant(Integer, "sqlite")


class Account(Base):
    """A user's credits: `balance` (held credits included) and `held` (reserved by open holds).
    Both equal sums over the user's ledger entries; the CHECKs keep them from going negative."""

    __tablename__ = "accounts"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    held: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint("balance >= 0", name="ck_accounts_balance_not_negative"),
        CheckConstraint("held >= 0", name="ck_accounts_held_not_negative"),
        CheckConstraint("held <= balance", name="ck_accounts_held_within_balance"),
    )


class Hold(Base):
    """Credits reserved for one job or run (`ref_type`, `ref_id`); settled once (HOLD lifecycle)."""

    __tablename__ = "holds"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    captured: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    state: Mapped[HoldState] = mapped_column(state_enum(HoldState, 10), default=HoldState.OPEN)
    ref_type: Mapped[str] = mapped_column(String(40))
    ref_id: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    settled_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_holds_ref", "ref_type", "ref_id"),
        CheckConstraint("amount >= 0 AND captured >= 0 AND captured <= amount", name="ck_holds_amounts"),
    )


class LedgerEntry(Base):
    """One movement of credits; append-only (nothing updates or deletes an entry). `amount` is
    its change to the balance, `held_change` its change to the held credits; `*_after` are the
    account's values after it. `idempotency_key` is unique: a retried movement finds its entry."""

    __tablename__ = "ledger_entries"
    id: Mapped[int] = mapped_column(_LEDGER_ID, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[EntryKind] = mapped_column(state_enum(EntryKind, 20))
    amount: Mapped[int] = mapped_column(BigInteger)
    held_change: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    balance_after: Mapped[int] = mapped_column(BigInteger)
    held_after: Mapped[int] = mapped_column(BigInteger)
    hold_id: Mapped[str | None] = mapped_column(ForeignKey("holds.id", ondelete="CASCADE"))
    ref_type: Mapped[str] = mapped_column(String(40))
    ref_id: Mapped[str] = mapped_column(String(100))
    actor_id: Mapped[str | None] = mapped_column(String(36))  # the admin who granted or adjusted
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_ledger_entries_user_id_id", "user_id", "id"),)


# -- prices and job charges (domain/prices.py; control/charging.py writes them) -------------------
class ToolPrice(Base):
    """The price model an admin set for a tool (a tool without one has a derived price)."""

    __tablename__ = "tool_prices"
    tool_slug: Mapped[str] = mapped_column(ForeignKey("tools.slug", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(20))  # domain.prices.PriceKind, never "derived"
    credits: Mapped[int] = mapped_column(BigInteger)
    cap: Mapped[int | None] = mapped_column(BigInteger)  # per_gpu_second: the most a run costs
    updated_by: Mapped[str | None] = mapped_column(String(36))
    updated_at: Mapped[datetime]


class JobCharge(Base):
    """How a job is charged: its plan at submission (the quote held by `hold_id`, the unit price,
    the output size, the GPU-second rate a cancel after the start pays, the royalty shares) and
    what settlement captured. No row: the job is free (an admin's, unless charge_admins is set)."""

    __tablename__ = "job_charges"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    hold_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(20))  # domain.prices.PriceKind
    quote: Mapped[int] = mapped_column(BigInteger)
    unit_credits: Mapped[int] = mapped_column(BigInteger)
    per_second: Mapped[str] = mapped_column(String(50))  # credits per GPU second, as Decimal text
    output_pixels: Mapped[int | None] = mapped_column(BigInteger)
    output_images: Mapped[int | None] = mapped_column(Integer)
    royalties: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [{lora, author_id, bps}]
    captured: Mapped[int | None] = mapped_column(BigInteger)  # set once, at settlement
    royalties_paid: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    settled_at: Mapped[datetime | None] = mapped_column(index=True)
    created_at: Mapped[datetime]


# -- deposits on EVM chains (domain/deposits.py, control/deposits.py) -----------------------------
class Deposit(Base):
    """One transfer to a treasury (or one refused transaction), keyed by (chain, tx, log index):
    the native value of a transaction is log index -1. `amount` is in the asset's base units, as
    decimal text (a uint256 does not fit a BigInteger); `credits` what it is worth; `user_id` whom
    it was credited to; `reported_by` who reported it first (the scanner may find it first)."""

    __tablename__ = "deposits"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    state: Mapped[DepositState] = mapped_column(state_enum(DepositState, 16), default=DepositState.PENDING)
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(66))
    sender: Mapped[str] = mapped_column(String(42), index=True)
    symbol: Mapped[str | None] = mapped_column(String(20))
    token: Mapped[str | None] = mapped_column(String(42))  # None: the native currency
    amount: Mapped[str] = mapped_column(String(80), default="0", server_default="0")
    credits: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    reported_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    credited_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ux_deposits_chain_tx_log", "chain_id", "tx_hash", "log_index", unique=True),
        Index("ix_deposits_chain_state", "chain_id", "state"),
        CheckConstraint("credits >= 0", name="ck_deposits_credits_not_negative"),
    )


class ChainCursor(Base):
    """How far the deposit scanner has read a chain: every block up to `last_block` is final
    (has its confirmations) and was scanned."""

    __tablename__ = "chain_cursors"
    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    last_block: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


# -- pipelines and runs (domain/pipelines/, control/runs.py, control/saved_pipelines.py) --------
class SavedPipeline(Base):
    """A pipeline someone saved (the earlier platform's *spell*): its versions are immutable rows
    of `pipeline_versions`; `latest_version` is the one a run without a version uses."""

    __tablename__ = "pipelines"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    visibility: Mapped[str] = mapped_column(String(10))  # private | unlisted | public
    latest_version: Mapped[int] = mapped_column(Integer, default=1)
    run_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_pipelines_visibility", "visibility"),)


class PipelineVersion(Base):
    """One immutable version of a saved pipeline: the graph (wire form) and its exposed inputs
    ([{name, label, default, description}], the only inputs another user may give)."""

    __tablename__ = "pipeline_versions"
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, Any]]
    exposed: Mapped[list[Any]]
    created_at: Mapped[datetime]


class Run(Base):
    """One execution of a pipeline (RUN lifecycle). `pipeline` is the graph as run (the saved
    version's, when `pipeline_id` is set); `hold_id` is the run's current hold (a retry places a
    new one) and `quote` its amount; `author_id` earns the pipeline royalty on each step's charge."""

    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    state: Mapped[RunState] = mapped_column(state_enum(RunState, 12))
    pipeline: Mapped[dict[str, Any]]
    inputs: Mapped[dict[str, Any]]
    pipeline_id: Mapped[str | None] = mapped_column(ForeignKey("pipelines.id", ondelete="SET NULL"))
    pipeline_version: Mapped[int | None] = mapped_column(Integer)
    author_id: Mapped[str | None] = mapped_column(String(36))
    seed: Mapped[int] = mapped_column(BigInteger)  # variations by seed count up from it
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    hold_id: Mapped[str | None] = mapped_column(String(36))
    quote: Mapped[int] = mapped_column(BigInteger, default=0)
    captured: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_runs_state", "state"),)


class RunStep(Base):
    """One step of a run (STEP lifecycle): how many jobs it fans out to (`items`), its outputs
    once completed ({port: value}, or {port: [value per item]} for a fanned-out step), its quote
    share and what its jobs were charged."""

    __tablename__ = "run_steps"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tool_slug: Mapped[str] = mapped_column(String(63))
    state: Mapped[StepState] = mapped_column(state_enum(StepState, 12))
    items: Mapped[int] = mapped_column(Integer, default=1)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    quote: Mapped[int] = mapped_column(BigInteger, default=0)
    cost: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class RunEvent(Base):
    """What happened to a run, in order (GET /v1/runs/{id}/events streams these; the id is the
    SSE event id). `type`: state (the run's), step (a step's state), job (a step job's state or
    progress)."""

    __tablename__ = "run_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(20))
    data: Mapped[dict[str, Any]]
    trigger: Mapped[str | None] = mapped_column(String(20))  # a RunTrigger or StepTrigger value
    at: Mapped[datetime]


class Workspace(Base):
    """A canvas of the web studio, autosaved: the nodes, wires and viewport as the studio keeps
    them (`graph`, opaque to the server beyond its size), one row per user and name."""

    __tablename__ = "workspaces"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    graph: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


# -- the chat agent's conversations (control/conversations.py) ------------------------------------
class Conversation(Base):
    """A user's conversation with the agent. `leaf_id` is the item the next message hangs under
    when it names no parent (the current branch's end); `next_seq` numbers the items (the SSE
    event ids), allocated under the row's lock; `auto_approve_below` (credits, None: off) runs a
    plan whose quote is below it without an approval. A deleted conversation is hidden, not
    erased (its runs and charges stay on record)."""

    __tablename__ = "conversations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200), default="", server_default="")
    auto_approve_below: Mapped[int | None] = mapped_column(BigInteger)
    leaf_id: Mapped[str | None] = mapped_column(String(36))
    next_seq: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ConversationItem(Base):
    """One typed item of a conversation (`type`: user_message, agent_message, plan, approval,
    run, result, error), its body in `data` (the wire form's fields). `parent_id` is the item it
    answers or follows (None: the greeting); `seq` increases within the conversation. `state`: a
    plan's (proposed, approved, rejected) or a run item's (the run's state as last seen);
    `run_id`: the run a plan, run, result or error item belongs to."""

    __tablename__ = "conversation_items"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("conversation_items.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(20))
    state: Mapped[str | None] = mapped_column(String(12))
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True)
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]

    __table_args__ = (Index("ux_conversation_items_seq", "conversation_id", "seq", unique=True),)
