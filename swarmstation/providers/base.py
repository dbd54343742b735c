"""What the control plane needs from a compute provider."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from swarmstation.domain.errors import ProviderUnavailable
from swarmstation.domain.offers import OfferFilters


class ProviderError(ProviderUnavailable):
    """A provider could not do what was asked; providers translate their clients' errors into it."""


@dataclass(frozen=True)
class LaunchSpec:
    instance_id: str
    pool: str
    server_url: str
    worker_token: str  # secret: never logged
    preload_models: tuple[tuple[str, str], ...] = ()  # (folder, name)
    env: dict[str, str] = field(default_factory=dict)
    # For rented machines: what to run, and on what.
    image: str = ""
    onstart: str = ""  # the bootstrap script (providers/bootstrap.py); carries no secrets
    filters: OfferFilters = field(default_factory=OfferFilters)
    avoid_hosts: frozenset[str] = frozenset()  # machines whose instances recently never came up

    @property
    def label(self) -> str:
        """Unique per instance, so that a create whose answer was lost can be found by label."""
        return f"swarmstation-{self.instance_id}"


@dataclass(frozen=True)
class ProviderInstance:
    provider_id: str
    instance_id: str  # our id, from the label the provider keeps
    running: bool  # False once the provider says it exited / is gone for good
    price_per_hour: float | None = None
    gpu_name: str | None = None
    status: str = ""  # the provider's own word for its state
    host: str | None = None  # the physical machine, for avoiding hosts that failed us
    # Stopped with its disk kept (parked), or on its way there: it runs nothing but is not lost;
    # `running` stays True for it.
    stopped: bool = False
    # An interruptible (bid) rental: when it is stopped and we did not park it, it was outbid.
    interruptible: bool = False


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

    def stop(self, provider_id: str) -> None:
        """Stop an instance but keep its disk (and the models on it); idempotent. It costs storage
        only until it is started again or destroyed."""
        ...

    def start(self, provider_id: str) -> None:
        """Start a stopped instance again, with its disk; its bootstrap runs again. The call may
        succeed and the instance still never come up (e.g. its GPU was rented out meanwhile)."""
        ...
