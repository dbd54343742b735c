"""One typed settings object for the control plane, read from the environment and an optional file.

Sources, the first one that sets a field wins: explicit keyword arguments (CLI flags), environment
variables prefixed `SWARMSTATION_`, a TOML file named by `SWARMSTATION_CONFIG_FILE` (or
`<data_dir>/config.toml` when it exists), then the defaults below. The outside services' own
variables keep working: `VASTAI_API_KEY`, `VASTAI_BASE_URL` (or `VAST_URL`), `COMFY_DEPLOY_API_KEY`
and `COMFY_DEPLOY_BASE_URL` (each also as `SWARMSTATION_<FIELD>`).

This is the only module of the control plane that reads the process environment. Secrets are
`SecretStr` (shown as `**********` in a repr or a validation error); `reveal` unwraps one where it
is sent to its own service.
"""

from __future__ import annotations

import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from swarmstation.domain.deposits import AssetConfig, ChainConfig
from swarmstation.domain.errors import SwarmError
from swarmstation.providers.install import default_install_spec


class ConfigError(SwarmError, ValueError):
    """The configuration cannot be used; the message says which setting and why."""

    code = "invalid_config"


def reveal(secret: SecretStr | None) -> str | None:
    """The secret's text, or None when it is unset: only where it goes to the service it is for."""
    return secret.get_secret_value() if secret is not None else None


_ADDRESS = r"^0x[0-9a-fA-F]{40}$"


class DepositAsset(BaseModel):
    """An asset a chain's treasury accepts: `contract` null is the native currency (ETH)."""

    model_config = ConfigDict(extra="forbid")
    symbol: str = Field(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9.]+$")
    contract: str | None = Field(None, pattern=_ADDRESS, description="ERC-20 address; null: native")
    decimals: int = Field(ge=0, le=36, strict=True)
    credits_per_unit: int = Field(gt=0, strict=True, description="Credits per whole unit (10**decimals)")


class DepositChain(BaseModel):
    """A chain deposits arrive on (SWARMSTATION_CHAINS, a JSON list, or [[chains]] in the TOML)."""

    model_config = ConfigDict(extra="forbid")
    chain_id: int = Field(ge=1, strict=True)
    name: str = Field(min_length=1, max_length=60)
    rpc_url: SecretStr = Field(repr=False, description="JSON-RPC URL; may carry a key, never shown")
    treasury: str = Field(pattern=_ADDRESS, description="The address deposits are sent to")
    confirmations: int = Field(12, ge=1, le=10_000, strict=True)
    start_block: int | None = Field(None, ge=0, description="Scan from here; unset: the head at first scan")
    assets: list[DepositAsset] = Field(min_length=1)

    @field_validator("assets")
    @classmethod
    def _one_each(cls, v: list[DepositAsset]) -> list[DepositAsset]:
        contracts = [(a.contract or "").lower() for a in v]
        if len(set(contracts)) != len(contracts):
            raise ValueError("an asset (contract, or the native currency) is listed twice")
        return v

    def config(self) -> ChainConfig:
        """The chain as the deposit policy sees it (addresses lowercase, no RPC URL)."""
        assets = tuple(
            AssetConfig(a.symbol, a.contract.lower() if a.contract else None, a.decimals, a.credits_per_unit)
            for a in self.assets
        )
        return ChainConfig(self.chain_id, self.name, self.treasury.lower(), self.confirmations, assets)


class Settings(BaseSettings):
    # populate_by_name: a field read from another service's variables (validation_alias: the first
    # one set wins) is still set by its own name as a keyword argument or a config-file key.
    model_config = SettingsConfigDict(env_prefix="SWARMSTATION_", extra="forbid", populate_by_name=True)

    data_dir: Path = Field(Path(".swarmstation"), description="Where SQLite, objects and instances live")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    database_url: str | None = Field(None, description="SQLAlchemy URL; SQLite under data_dir when unset")
    public_url: str | None = Field(None, description="URL workers use to reach the control plane")
    provider: str = Field("local", description="Compute provider for the default pool: local or none")

    # default pool
    pool_min_instances: int = Field(1, ge=0)
    pool_max_instances: int = Field(2, ge=0)
    pool_scale_up_queue_threshold: int = Field(2, ge=1)
    pool_idle_minutes: float = Field(10.0, ge=0)
    pool_prewarm: bool = Field(
        False, description="Launch and resume instances ahead of forecast demand (domain/forecast.py)"
    )

    # scheduling
    lease_seconds: float = Field(60.0, gt=0, description="A job's lease; the worker renews it")
    heartbeat_timeout_seconds: float = Field(30.0, gt=0, description="Missed heartbeats → UNHEALTHY")
    provisioning_timeout_seconds: float = Field(600.0, gt=0)
    resume_timeout_seconds: float = Field(
        240.0, gt=0, description="A resumed (parked) instance not ready within this is destroyed"
    )
    orphan_grace_seconds: float = Field(120.0, ge=0, description="Unknown provider instances live this long")
    max_attempts: int = Field(3, ge=1)
    idempotency_key_hours: float = Field(
        24.0, ge=24, le=24 * 365, description="How long an Idempotency-Key answers the job it created"
    )
    infra_failure_threshold: int = Field(
        3, ge=1, description="Jobs failed in a row for machine reasons that take an instance out (UNHEALTHY)"
    )
    max_infra_requeues: int = Field(
        10, ge=0, description="Requeues per job after machine failures that spend no attempt"
    )
    scheduler_interval_seconds: float = Field(0.5, gt=0)
    routing: Literal["cache", "fifo"] = Field(
        "cache", description="cache-aware routing, or first-in first-out"
    )
    routing_max_delay_seconds: float = Field(
        30.0, ge=0, description="Longest wait for a busy instance with the models"
    )
    routing_aging_seconds: float = Field(300.0, ge=0, description="After this long a job takes any instance")
    checkpoint_load_seconds: float = Field(5.0, ge=0, description="Expected time to load another checkpoint")
    control_interval_seconds: float = Field(2.0, gt=0)

    # limits on user input
    max_prompt_chars: int = Field(10_000, ge=1)
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest uploaded image, in pixels (width times height)"
    )
    max_json_body_bytes: int = Field(
        2 * 1024 * 1024, ge=1024, description="Largest request body of a JSON endpoint; larger is 413"
    )
    max_object_bytes: int = Field(
        4 * 1024**3, ge=1, description="Largest object PUT to the local object store (job outputs)"
    )
    auth_failures_per_minute: int = Field(
        30, ge=0, description="Failed authentications one client address may make per minute (0: no limit)"
    )
    metrics_token: SecretStr | None = Field(
        None, repr=False, description="When set, /metrics needs 'Authorization: Bearer <token>'"
    )

    # the ComfyUI emulator that the local provider starts beside each worker
    emulator_step_seconds: float = Field(0.05, ge=0)
    emulator_model_load_seconds: float = Field(0.2, ge=0)

    secret_key: SecretStr | None = Field(
        None, repr=False, description="Signs object URLs; generated into data_dir when unset"
    )

    # sign-in with Ethereum (EIP-4361) and browser sessions (api/auth.py, control/auth.py)
    open_signup: bool | None = Field(
        None, description="A new address's first sign-in creates a user; unset: on for `up`, off for `serve`"
    )
    siwe_domain: str | None = Field(
        None, description="The domain SIWE messages must name; default the host[:port] of public_url/base_url"
    )
    siwe_chain_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [1], description="Chain ids a SIWE message may name; comma separated"
    )
    siwe_rpc_url: str | None = Field(
        None, description="JSON-RPC URL for EIP-1271 (contract wallet) signatures on non-deposit chains"
    )
    siwe_nonce_ttl_seconds: float = Field(300.0, gt=0, le=3600, description="How long a sign-in nonce lives")
    session_hours: float = Field(168.0, gt=0, le=24 * 365, description="How long a browser session lives")

    @field_validator("siwe_chain_ids", mode="before")
    @classmethod
    def _chain_id_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            text = v.strip().strip("[]")
            return [part.strip() for part in text.split(",") if part.strip()]
        return v

    # deposits on EVM chains (control/deposits.py)
    chains: list[DepositChain] = Field(
        default_factory=list, description="Chains deposits are accepted on (JSON list); none: no deposits"
    )
    deposit_scan_interval_seconds: float = Field(
        15.0, gt=0, description="How often the leader scans the treasuries for incoming transfers"
    )
    deposit_scan_max_blocks: int = Field(
        500, ge=1, le=100_000, description="Most blocks one scan of one chain reads"
    )

    @field_validator("chains")
    @classmethod
    def _unique_chains(cls, v: list[DepositChain]) -> list[DepositChain]:
        ids = [c.chain_id for c in v]
        if len(set(ids)) != len(ids):
            raise ValueError("a chain_id is configured twice")
        return v

    # what rented instances run (the bootstrap script, providers/bootstrap.py)
    worker_install_spec: str = Field(
        default_factory=default_install_spec,
        description="pip spec of swarmstation on instances; default: this control plane's version",
    )
    worker_constraints_file: Path | None = Field(
        None,
        description="pip constraints for instances (a lock file); default: requirements.lock of a checkout",
    )
    worker_comfyui_mode: Literal["install", "existing", "emulator"] = Field(
        "install", description="install ComfyUI on a stock CUDA image, use the image's, or the emulator"
    )

    # model catalog
    model_url_hosts: list[str] = Field(
        default_factory=lambda: ["huggingface.co", "hf.co", "civitai.com"],
        description="Hosts a model may be registered from by URL",
    )
    max_model_bytes: int = Field(64 * 1024**3, ge=1, description="Largest model upload")

    # the object store: an S3/R2 bucket when s3_bucket is set, else a folder under data_dir
    s3_bucket: str | None = Field(None, description="S3/R2 bucket for models, uploads and outputs")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint, e.g. R2's; AWS when unset")
    s3_region: str | None = Field(None, description="Signing region; 'auto' for R2, us-east-1 by default")
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = Field(None, repr=False)
    s3_prefix: str = Field("", description="Key prefix inside the bucket")
    s3_addressing_style: Literal["path", "virtual", "auto"] = "path"

    # Vast.ai: the `vastai` provider is offered whenever its API key is set
    vastai_api_key: SecretStr | None = Field(
        None,
        repr=False,
        validation_alias=AliasChoices("SWARMSTATION_VASTAI_API_KEY", "VASTAI_API_KEY"),
    )
    vastai_base_url: str = Field(
        "https://console.vast.ai",
        validation_alias=AliasChoices("SWARMSTATION_VASTAI_BASE_URL", "VASTAI_BASE_URL", "VAST_URL"),
    )

    # ComfyUI Deploy as a second executor (enabled by its API key)
    comfydeploy_api_key: SecretStr | None = Field(
        None,
        repr=False,
        validation_alias=AliasChoices("SWARMSTATION_COMFYDEPLOY_API_KEY", "COMFY_DEPLOY_API_KEY"),
    )
    comfydeploy_base_url: str = Field(
        "https://api.comfydeploy.com",
        validation_alias=AliasChoices("SWARMSTATION_COMFYDEPLOY_BASE_URL", "COMFY_DEPLOY_BASE_URL"),
    )
    comfydeploy_price_per_second: float = Field(
        0.000337, ge=0, description="What ComfyUI Deploy charges per GPU second (A10G), for cost reports"
    )
    comfydeploy_poll_seconds: float = Field(15.0, gt=0, description="Poll a run whose webhook is this late")

    # prices and charges (domain/prices.py, control/charging.py); money in integer credits
    price_markup: Decimal = Field(
        Decimal("2.0"), ge=0, description="A derived price is what a run costs us times this"
    )
    min_price_credits: int = Field(1, ge=0, description="The least a run with a derived price costs")
    default_gpu_seconds_estimate: Decimal = Field(
        Decimal("10"), gt=0, description="GPU seconds a tool is assumed to take until it has runs"
    )
    default_gpu_price_per_hour: Decimal = Field(
        Decimal("0.50"), ge=0, description="$/hour of a pool whose instances' price is unknown"
    )
    price_sample_runs: int = Field(50, ge=1, description="Recent runs whose p95 GPU seconds derive a price")
    lora_royalty_bps: int = Field(
        500, ge=0, le=10_000, description="A LoRA author's share of a job's charge, in basis points"
    )
    max_royalty_bps: int = Field(1500, ge=0, le=10_000, description="All royalties of one job at most")
    charge_admins: bool = Field(False, description="Charge admins' jobs too (off: admins run free)")

    # credits (domain/credits.py, control/ledger.py): their worth, new users' grant, an admin's bound
    credits_per_usd: int = Field(1000, ge=1, description="Credits worth $1 (1000: 1 credit = $0.001)")
    welcome_credits: int = Field(
        0, ge=0, le=10**12, description="Credits every new user is granted (a ledger entry)"
    )
    max_credit_grant: int = Field(
        10**12, ge=1, le=10**15, description="The most credits one admin grant or adjustment may move"
    )

    # pipelines (domain/pipelines/, control/runs.py, control/saved_pipelines.py)
    max_pipeline_steps: int = Field(20, ge=1, le=200, description="The most steps one pipeline may have")
    max_step_items: int = Field(
        16, ge=1, le=256, description="The most jobs one step may fan out to (variations, batches)"
    )
    pipeline_royalty_bps: int = Field(
        500, ge=0, le=10_000, description="A saved pipeline's author's share of others' runs' charges"
    )
    run_interval_seconds: float = Field(
        0.5, gt=0, le=60, description="How often the leader advances runs (it is also woken by jobs)"
    )

    # tools that run on the control plane (localtools/): LLM text tools and image utilities
    llm_base_url: str | None = Field(
        None,
        description="An OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 (unset: LLM tools "
        "are listed as unavailable)",
    )
    llm_api_key: SecretStr | None = Field(None, repr=False, description="The LLM endpoint's API key")
    llm_model: str = Field("gpt-4o-mini", min_length=1, description="The model of the LLM text tools")
    llm_vision_model: str | None = Field(
        None, description="The model that captions images (vision-capable); unset: llm_model"
    )
    llm_max_tokens: int = Field(512, ge=16, le=32_768, description="The most tokens one LLM answer may take")
    llm_timeout_seconds: float = Field(60.0, gt=0, le=600, description="How long one LLM call may take")
    llm_credits_per_1k_tokens: int = Field(2, ge=0, description="What LLM tools charge per 1000 tokens")
    # the chat agent's persona (GET /v1/agent/persona; the greeting opens every conversation)
    agent_name: str = Field("Swarm", min_length=1, max_length=60, description="The chat agent's name")
    agent_avatar_url: str | None = Field(
        None, max_length=2000, description="An image URL for the agent's avatar (unset: the studio's own)"
    )
    agent_greeting: str = Field(
        "Hello! Tell me what you would like to make or change: an image from a description, a "
        "bigger or reworked version of a picture you attach. I propose a plan with its price, and "
        "nothing runs until you approve it.",
        min_length=1,
        max_length=2000,
        description="The agent's first message in a new conversation",
    )
    agent_tone: Literal["friendly", "neutral", "concise"] = Field(
        "friendly", description="How the agent phrases its answers"
    )
    # the chat agent's LLM mode (control/agent_llm.py): auto uses the LLM when llm_base_url is set
    agent_mode: Literal["auto", "offline", "llm"] = Field(
        "auto",
        description="How the agent understands requests: offline (the planner), llm (function calling "
        "through llm_base_url, the planner as the fallback) or auto (llm when an endpoint is configured)",
    )
    agent_llm_max_rounds: int = Field(
        6, ge=1, le=20, description="The most tool-call rounds of the LLM in one reply"
    )
    agent_llm_timeout_seconds: float = Field(
        60.0, gt=0, le=600, description="The most one reply of the LLM agent may take, all rounds together"
    )
    agent_llm_stream: bool = Field(True, description="Stream the LLM agent's answers (deltas) or not")
    image_tool_credits: int = Field(1, ge=0, description="What one run of an image utility tool charges")
    local_tool_workers: int = Field(
        2, ge=1, le=64, description="Local tool jobs (LLM, image utilities) run at once on the leader"
    )
    local_tool_timeout_seconds: float = Field(
        60.0, gt=0, le=3600, description="The most one local tool job may take"
    )
    local_tool_max_pixels: int = Field(
        64 * 1024 * 1024, ge=1, description="The most pixels an image utility reads or writes"
    )

    # LoRAs
    max_loras_per_job: int = Field(8, ge=0, le=32)
    lora_max_bytes: int = Field(4 * 1024**3, ge=1, description="Largest LoRA file staged on approval")
    lora_staging_poll_seconds: float = Field(
        1.0, gt=0, le=60, description="How often the leader looks for approved LoRAs to stage"
    )
    civitai_base_url: str = "https://civitai.com"
    civitai_token: SecretStr | None = Field(
        None, repr=False, description="Civitai API token, for models that need one"
    )
    huggingface_base_url: str = "https://huggingface.co"
    huggingface_token: SecretStr | None = Field(
        None, repr=False, description="Hugging Face token, for gated repositories"
    )

    # outbound fetches of URLs from outside (LoRA downloads; workers read the same variable)
    outbound_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts (or host:port) fetched even when private, e.g. a mirror; comma separated",
    )

    # how instances come up (domain/startup.py): early give-up of a resume, start success
    resume_heartbeat_timeout_seconds: float = Field(
        120.0,
        gt=0,
        description="A resume with no ready worker within this is replaced (started another; itself"
        " given up at resume_timeout_seconds) until the pool has five past resumes to derive the bound",
    )
    resume_give_up_factor: float = Field(
        3.0, gt=0, description="The replace bound: this times the median of the pool's past resume times"
    )
    pool_count_start_success: bool = Field(
        False, description="Scaling counts a starting instance by the share of past starts that became ready"
    )
    pool_replace_overdue_resumes: bool = Field(
        False,
        description="Start a replacement for a resume past the bound (resume_heartbeat_timeout_seconds)",
    )
    start_success_window: int = Field(
        50, ge=1, description="Past launches (and resumes) that start success is estimated from"
    )

    @field_validator("outbound_allow_hosts", mode="before")
    @classmethod
    def _host_list(cls, v: Any) -> Any:
        from swarmstation.net.policy import OutboundRefused, parse_host_list, parse_host_rules

        hosts = parse_host_list(v) if isinstance(v, str | list | tuple) else v
        try:
            parse_host_rules(hosts)
        except OutboundRefused as exc:
            raise ValueError(str(exc)) from exc
        return hosts

    @field_validator(
        "s3_bucket",
        "s3_endpoint_url",
        "s3_region",
        "s3_access_key_id",
        "s3_secret_access_key",
        "vastai_api_key",
        "comfydeploy_api_key",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, v: Any) -> Any:
        # An exported but empty variable (VASTAI_API_KEY=) means "not configured", as it always has.
        if isinstance(v, str) and not v.strip():
            return None
        return v.strip() if isinstance(v, str) else v

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, v: str) -> str:
        if v not in {"local", "none"}:
            raise ValueError("must be 'local' or 'none'")
        return v

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'swarmstation.db').resolve()}"

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


def _field_env_names(name: str) -> tuple[str, ...]:
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    return (f"SWARMSTATION_{name.upper()}",)


# Which environment variables set each field (so that they beat the config file).
_ENV_NAMES: dict[str, tuple[str, ...]] = {name: _field_env_names(name) for name in Settings.model_fields}


class ClientSettings(BaseSettings):
    """What the CLI reads as a client of a control plane (not the server's settings)."""

    model_config = SettingsConfigDict(env_prefix="SWARMSTATION_", extra="ignore")

    url: str | None = Field(None, description="The control plane's URL (default http://127.0.0.1:8000)")
    api_key: SecretStr | None = Field(None, repr=False, description="An API key")
    data_dir: Path = Field(Path(".swarmstation"), description="Where `up` wrote admin.key")


def _file_values(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    section = data.get("swarmstation", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [swarmstation] must be a table")
    return section


def load_settings(**overrides: Any) -> Settings:
    """Build Settings; `overrides` with a None value are ignored, so CLI flags can pass through."""
    explicit = {k: v for k, v in overrides.items() if v is not None}
    try:
        from_env = Settings(**explicit)
        file_name = os.environ.get("SWARMSTATION_CONFIG_FILE")
        path = Path(file_name) if file_name else from_env.data_dir / "config.toml"
        if file_name or path.exists():
            file_values = _file_values(path)
            env_set = {name for name, names in _ENV_NAMES.items() if any(n in os.environ for n in names)}
            merged = {k: v for k, v in file_values.items() if k not in env_set and k not in explicit}
            return Settings(**{**merged, **explicit})
        return from_env
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc
