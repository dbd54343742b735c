"""Vast.ai's instance objects, read as `ProviderInstance`s (protocol reference §2.5, §2.6).

Stop and start (parking): `PUT /instances/{id}/` with `{"state": "stopped"}` or
`{"state": "running"}` (§2.6), retried like the other idempotent calls. A stopped instance keeps
its disk and bills storage only; `list()` shows it with `stopped=True` (and `running=True`: it is
not lost). A start may be accepted and still never run the container (its GPU was rented out
meanwhile); the control plane gives such a resume up after its resume timeout.

An outbid interruptible instance is stopped by Vast, not destroyed: it shows as `stopped` and
`interruptible`, and the control plane, which knows whether it parked the instance itself, tells
the two apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarmstation.providers.base import ProviderInstance

LABEL_PREFIX = "swarmstation-"
COMFYUI_PORT = 8188
TERMINAL_STATUSES = frozenset({"exited", "unknown", "offline"})
# Words in a `status_msg` that mean provisioning failed (e.g. a docker pull error).
STATUS_MSG_ERRORS = ("error", "failed", "failure", "unable", "denied", "not found", "no space")


def comfyui_url_of(instance: Mapping[str, Any], port: int = COMFYUI_PORT) -> str | None:
    """`http://{public_ipaddr}:{HostPort}` for the container port, or None while it is not mapped
    (`ports` exists only while running; `HostPort` is a string)."""
    ip = instance.get("public_ipaddr")
    ports = instance.get("ports")
    if not isinstance(ip, str) or not ip.strip() or not isinstance(ports, Mapping):
        return None
    bindings = ports.get(f"{port}/tcp")
    if not isinstance(bindings, list):
        return None
    for binding in bindings:
        if not isinstance(binding, Mapping):
            continue
        host_port = binding.get("HostPort")
        try:
            number = int(str(host_port).strip())
        except ValueError:
            continue
        if 0 < number < 65536:
            host = ip.strip()
            return f"http://[{host}]:{number}" if ":" in host else f"http://{host}:{number}"
    return None


def _status_msg_error(instance: Mapping[str, Any]) -> str | None:
    message = instance.get("status_msg")
    if not isinstance(message, str) or not message.strip():
        return None
    lowered = message.lower()
    return message.strip() if any(word in lowered for word in STATUS_MSG_ERRORS) else None


def instance_from_json(instance: Mapping[str, Any]) -> ProviderInstance | None:
    """Map one Vast instance. `running` is False once it can never run again: `actual_status`
    exited, unknown or offline, or — before it ever ran — a `status_msg` carrying an error (a
    failed image pull). Provisioning (`null`, created, loading) counts as running.

    `stopped`: `actual_status` stopped, or `intended_status` stopped (a stop on its way). Such an
    instance keeps its disk and still counts as running (not lost). One meant to stay stopped is
    not judged by its `status_msg`, which describes its last start; one being started again
    (intended running) is, so a start that fails with an error shows as a dead instance."""
    raw_id = instance.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, int | str) or not str(raw_id).strip().isdigit():
        return None
    label = str(instance.get("label") or "").strip()
    actual = instance.get("actual_status")
    status = str(actual).strip() if actual else "provisioning"
    intended = str(instance.get("intended_status") or "").strip()
    stopped = status == "stopped" or intended == "stopped"
    running = status not in TERMINAL_STATUSES
    error = _status_msg_error(instance) if intended != "stopped" else None
    if error and status != "running":
        running = False
        status = f"{status}: {error[:200]}"
    gpu = instance.get("gpu_name")
    return ProviderInstance(
        provider_id=str(raw_id).strip(),
        instance_id=label[len(LABEL_PREFIX) :] if label.startswith(LABEL_PREFIX) else "",
        running=running,
        price_per_hour=_price(instance.get("dph_total")),
        gpu_name=gpu.strip() if isinstance(gpu, str) and gpu.strip() else None,
        status=status,
        host=str(instance["machine_id"]).strip() if instance.get("machine_id") is not None else None,
        stopped=stopped,
        interruptible=_is_bid(instance.get("is_bid")),
    )


def _is_bid(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return value is True or (isinstance(value, int) and value == 1)


def _price(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None
