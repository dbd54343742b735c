"""What the control plane needs from a compute provider."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class ProviderError(Exception):
    pass


@dataclass(frozen=True)
class LaunchSpec:
    instance_id: str
    pool: str
    server_url: str
    worker_token: str  # secret: never logged
    preload_models: tuple[tuple[str, str], ...] = ()  # (folder, name)
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderInstance:
    provider_id: str
    instance_id: str  # our id, from the label the provider keeps
    running: bool


class ComputeProvider(Protocol):
    name: str

    def launch(self, spec: LaunchSpec) -> str:
        """Start an instance; returns the provider's id for it."""
        ...

    def list(self) -> list[ProviderInstance]:
        """Our instances as the provider sees them."""
        ...

    def destroy(self, provider_id: str) -> None:
        """Stop an instance and release it; idempotent."""
        ...
