"""The `vastai` provider: rented GPU machines through Vast.ai's REST API (protocol reference §2).

A thin synchronous client on `httpx.Client` (`VastAIClient`) and the `ComputeProvider` on top
of it (`VastAIProvider`).

Retries: 429 (except the daily `search_quota_exceeded`), 500/502/503/504 and connection errors
or timeouts are retried with exponential backoff and full jitter — sleep a uniform random time in
`[0, min(backoff_cap, backoff_base * 2^attempt)]` — since Vast sends no `Retry-After`. Auth
(401/403) and argument errors (other 4xx) are never retried. The sleep function and the random
source are injectable.

Creating an instance is not idempotent. When its answer is lost — a read timeout, a connection
closed without a response, a 5xx after the request may have been applied, or a 200 without
`new_contract` — the provider looks the instance up by its label (unique per instance, see
`LaunchSpec.label`) before it tries again, so that a retry never rents a second machine. Only
errors that prove the request was not applied (connection refused, 429) are retried blindly.
`launch` also starts with a lookup, so launching an instance id that already has a machine
adopts that machine instead of renting another.

Instances are created with `runtype="ssh_direct"`: the ssh/jupyter runtypes replace the image's
ENTRYPOINT with Vast's init, which is what runs our `onstart` bootstrap on a stock CUDA image,
and "direct" maps the requested ports (`-p 8188:8188`) straight onto the host's public IP rather
than through Vast's proxy. (`runtype="args"` keeps the image's ENTRYPOINT and does not run
`onstart`; it suits only a prebuilt worker image whose ENTRYPOINT starts everything.)

Stop and start (parking): `PUT /instances/{id}/` with `{"state": "stopped"}` or
`{"state": "running"}` (§2.6), retried like the other idempotent calls. A stopped instance keeps
its disk and bills storage only; `list()` shows it with `stopped=True` (and `running=True`: it is
not lost). A start may be accepted and still never run the container (its GPU was rented out
meanwhile); the control plane gives such a resume up after its resume timeout.

Interruptible rentals (`OfferFilters.interruptible`): the search asks for `"type": "bid"`
offers, they are ranked at their bid price (domain/offers.py), and the create sends
`"price": <bid>` (`min_bid * bid_margin`) — without `price` Vast rents on-demand (§2.4). The
instance then reports `is_bid`, and its `dph_total` is what we pay (the bid), which the control
plane records as its price. An outbid instance is stopped by Vast, not destroyed (§2.6): `list()`
shows it `stopped` and `interruptible`, and the control plane, which knows whether it parked the
instance itself, tells the two apart.

The API key is sent only as the `Authorization` header; it is never logged, and it is scrubbed
from every exception message and repr.
"""

from __future__ import annotations

import builtins
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from swarmstation.domain.offers import (
    Offer,
    OfferFilters,
    bid_price,
    offer_from_json,
    rank_offers,
    rental_price,
    search_query,
)
from swarmstation.providers.base import LaunchSpec, ProviderError, ProviderInstance

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://console.vast.ai"
LABEL_PREFIX = "swarmstation-"
COMFYUI_PORT = 8188
TERMINAL_STATUSES = frozenset({"exited", "unknown", "offline"})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Words in a `status_msg` that mean provisioning failed (e.g. a docker pull error).
STATUS_MSG_ERRORS = ("error", "failed", "failure", "unable", "denied", "not found", "no space")


class VastAIError(ProviderError):
    """A failed Vast.ai call. `retryable`: worth trying again; `ambiguous`: the request may have
    been applied even though no usable answer came back (matters for create)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retryable: bool = False,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retryable = retryable
        self.ambiguous = ambiguous

    @property
    def auth(self) -> bool:
        """A bad key or a key without permission: no other offer will do better."""
        if self.status == 401 or self.code == "auth_error":
            return True
        return self.status == 403 and "not your own" not in str(self).lower()

    @property
    def offer_gone(self) -> bool:
        return self.status in (404, 410) or self.code == "no_such_ask"


class VastAIQuotaError(VastAIError):
    """The daily search quota is spent (429 `search_quota_exceeded`); it resets at UTC midnight."""


def _strip(value: Any) -> Any:
    """Vast's string values may carry trailing whitespace or newlines: strip them, recursively."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        return {key: _strip(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strip(item) for item in value]
    return value


def _error_body(response: httpx.Response) -> tuple[str | None, str]:
    """(error code, message) from a JSON or plain-text error body."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text.strip()
    if isinstance(body, dict):
        code = body.get("error")
        message = body.get("msg") or body.get("message") or body.get("detail") or ""
        return (str(code).strip() if code else None), str(message).strip()
    return None, str(body)


class VastAIClient:
    """Vast.ai's REST endpoints that the provider needs, with retries. Answers are plain dicts with
    their strings stripped."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        key = api_key.strip()
        if not key:
            raise ProviderError("a Vast.ai API key is required")
        self._key = key
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.sleep = sleep
        self.rng = rng or random.Random()
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"VastAIClient(base_url={self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VastAIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
        return self.rng.uniform(0.0, min(self.backoff_cap, self.backoff_base * (2.0**attempt)))

    def attempt(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None
    ) -> httpx.Response | VastAIError:
        """One try: the 2xx response, or the error it amounts to (never raises for HTTP trouble)."""
        what = f"Vast.ai {method} {path}"
        try:
            response = self._http.request(method, path, json=json, params=params)
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
            return VastAIError(self.redact(f"{what}: {type(exc).__name__}: {exc}"))
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing reached the server: safe to send again.
            return VastAIError(self.redact(f"{what}: {type(exc).__name__}: {exc}"), retryable=True)
        except httpx.TransportError as exc:
            # Sent, but the answer was lost (read timeout, connection reset or closed).
            return VastAIError(
                self.redact(f"{what}: no answer ({type(exc).__name__}: {exc})"),
                retryable=True,
                ambiguous=True,
            )
        status = response.status_code
        if 200 <= status < 300:
            return response
        code, message = _error_body(response)
        text = self.redact(f"{what} → {status}{f' {code}' if code else ''}: {message}"[:500])
        if status == 429 and code == "search_quota_exceeded":
            return VastAIQuotaError(text, status=status, code=code)
        return VastAIError(
            text,
            status=status,
            code=code,
            retryable=status in RETRY_STATUSES,
            ambiguous=status >= 500,
        )

    def request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None
    ) -> Any:
        """An idempotent call with retries; the parsed, stripped JSON answer."""
        for attempt in range(self.max_retries + 1):
            outcome = self.attempt(method, path, json=json, params=params)
            if isinstance(outcome, httpx.Response):
                return self.parse(outcome)
            if not outcome.retryable or attempt == self.max_retries:
                raise outcome
            delay = self.backoff(attempt)
            log.warning(
                "Vast.ai %s %s failed (%s); retry %d/%d in %.2fs",
                method,
                path,
                outcome.status or "no answer",
                attempt + 1,
                self.max_retries,
                delay,
            )
            self.sleep(delay)
        raise AssertionError("unreachable")

    def parse(self, response: httpx.Response) -> Any:
        try:
            return _strip(response.json())
        except ValueError as exc:
            raise VastAIError(
                f"Vast.ai {response.request.method} {response.request.url.path}: answer is not JSON",
                status=response.status_code,
            ) from exc

    # -- endpoints ---------------------------------------------------------------------------------
    def current_user(self) -> dict[str, Any]:
        data = self.request("GET", "/api/v0/users/current/")
        return data if isinstance(data, dict) else {}

    def search_offers(self, query: Mapping[str, Any]) -> builtins.list[dict[str, Any]]:
        data = self.request("POST", "/api/v0/bundles/", json=dict(query))
        offers = data.get("offers") if isinstance(data, dict) else None
        return [offer for offer in offers or [] if isinstance(offer, dict)]

    def list_instances(self) -> builtins.list[dict[str, Any]]:
        data = self.request("GET", "/api/v0/instances/", params={"owner": "me"})
        instances = data.get("instances") if isinstance(data, dict) else None
        if isinstance(instances, dict):  # one instance, unwrapped
            instances = [instances]
        return [item for item in instances or [] if isinstance(item, dict)]

    def show_instance(self, instance_id: int) -> dict[str, Any] | None:
        """The instance, or None when Vast does not know it (404 or `{"instances": null}`)."""
        try:
            data = self.request("GET", f"/api/v0/instances/{instance_id}/", params={"owner": "me"})
        except VastAIError as exc:
            if exc.status == 404:
                return None
            raise
        instances = data.get("instances") if isinstance(data, dict) else None
        if isinstance(instances, list):  # tolerate the list shape too
            matching = [i for i in instances if isinstance(i, dict) and i.get("id") == instance_id]
            instances = matching[0] if matching else None
        return instances if isinstance(instances, dict) else None

    def destroy_instance(self, instance_id: int) -> bool:
        """True when destroyed now, False when it was already gone."""
        try:
            data = self.request("DELETE", f"/api/v0/instances/{instance_id}/", json={})
        except VastAIError as exc:
            if exc.status == 404:
                return False
            raise
        if not isinstance(data, dict):
            return True
        if "instances" in data and data["instances"] is None:
            return False
        if data.get("success") is False:
            code, message = data.get("error"), data.get("msg") or data.get("message") or ""
            if code == "not_found":
                return False
            raise VastAIError(self.redact(f"Vast.ai destroy {instance_id} failed: {code} - {message}"))
        return True

    def set_instance_state(self, instance_id: int, state: str) -> None:
        """Stop (`"stopped"`, the disk is kept) or start (`"running"`) an instance:
        `PUT /instances/{id}/ {"state": ...}` (§2.6). Idempotent, so retried like a read."""
        data = self.request("PUT", f"/api/v0/instances/{instance_id}/", json={"state": state})
        if isinstance(data, dict) and data.get("success") is False:
            code, message = data.get("error"), data.get("msg") or data.get("message") or ""
            raise VastAIError(
                self.redact(f"Vast.ai set state {state} on {instance_id} failed: {code} - {message}"),
                code=str(code) if code else None,
            )


# -- instances ---------------------------------------------------------------------------------------


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


def _provider_int(provider_id: str) -> int:
    text = str(provider_id).strip()
    if not text.isdigit():
        raise ProviderError(f"not a Vast.ai instance id: {provider_id!r}")
    return int(text)


class VastAIProvider:
    name = "vastai"

    def __init__(
        self,
        api_key: str | None = None,
        *,
        client: VastAIClient | None = None,
        base_url: str = DEFAULT_BASE_URL,
        runtype: str = "ssh_direct",
        default_image: str = "",
        max_offers: int = 5,
        search_limit: int = 64,
        label_lookup_attempts: int = 3,
        label_lookup_interval: float = 5.0,
        **client_options: Any,
    ) -> None:
        if client is None:
            if api_key is None:
                raise ProviderError("VastAIProvider needs an API key or a client")
            client = VastAIClient(api_key, base_url=base_url, **client_options)
        self.client = client
        self.runtype = runtype
        self.default_image = default_image
        self.max_offers = max_offers
        self.search_limit = search_limit
        self.label_lookup_attempts = max(1, label_lookup_attempts)
        self.label_lookup_interval = label_lookup_interval

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> VastAIProvider:
        """From `VASTAI_API_KEY` (required) and `VASTAI_BASE_URL` or `VAST_URL` (optional)."""
        env = os.environ if environ is None else environ
        key = env.get("VASTAI_API_KEY", "").strip()
        if not key:
            raise ProviderError("VASTAI_API_KEY is not set")
        base_url = env.get("VASTAI_BASE_URL") or env.get("VAST_URL") or DEFAULT_BASE_URL
        return cls(key, base_url=base_url, **options)

    def __repr__(self) -> str:
        return f"VastAIProvider(base_url={self.client.base_url!r})"

    def close(self) -> None:
        self.client.close()

    # -- offers ------------------------------------------------------------------------------------
    def search_offers(self, filters: OfferFilters) -> builtins.list[Offer]:
        """Offers matching the filters, best first."""
        raw = self.client.search_offers(search_query(filters, limit=self.search_limit))
        parsed = [offer for offer in map(offer_from_json, raw) if offer is not None]
        return rank_offers(parsed, filters)

    # -- launch ------------------------------------------------------------------------------------
    def create_body(self, spec: LaunchSpec) -> dict[str, Any]:
        image = spec.image or self.default_image
        if not image:
            raise ProviderError(f"no image to launch {spec.label} with (LaunchSpec.image is empty)")
        return {
            "client_id": "me",
            "image": image,
            "disk": spec.filters.disk_gb,
            "label": spec.label,
            "onstart": spec.onstart,
            "runtype": self.runtype,
            "env": {
                **spec.env,
                "SWARMSTATION_WORKER_TOKEN": spec.worker_token,
                "SWARMSTATION_SERVER_URL": spec.server_url,
                f"-p {COMFYUI_PORT}:{COMFYUI_PORT}": "1",
            },
        }

    @staticmethod
    def body_for_offer(body: dict[str, Any], offer: Offer, filters: OfferFilters) -> dict[str, Any]:
        """The create body for one offer: with our bid as `price` for an interruptible rental
        (§2.4: without `price` Vast rents on-demand), unchanged otherwise."""
        if not filters.interruptible:
            return body
        price = bid_price(offer, filters.bid_margin)
        if price is None:  # rank_offers never yields one; a bid without a floor would be a guess
            raise ProviderError(f"offer {offer.id} has no min_bid: it cannot be rented interruptible")
        return {**body, "price": price}

    def _by_label(self, label: str) -> builtins.list[dict[str, Any]]:
        return [i for i in self.client.list_instances() if str(i.get("label") or "").strip() == label]

    @staticmethod
    def _newest_live(instances: builtins.list[dict[str, Any]], ignore: frozenset[str]) -> str | None:
        """The newest of these instances that is not terminal and not in `ignore`."""
        found = [
            mapped
            for mapped in map(instance_from_json, instances)
            if mapped is not None and mapped.running and mapped.provider_id not in ignore
        ]
        return max(found, key=lambda m: int(m.provider_id)).provider_id if found else None

    def _lookup_after_lost_answer(self, label: str, ignore: frozenset[str]) -> str | None:
        for attempt in range(self.label_lookup_attempts):
            if attempt:
                self.client.sleep(self.label_lookup_interval)
            try:
                found = self._newest_live(self._by_label(label), ignore)
            except VastAIError as exc:
                log.warning("Vast.ai lookup of %s after a lost create answer failed: %s", label, exc)
                continue
            if found is not None:
                log.info("Vast.ai create answer for %s was lost; found instance %s by label", label, found)
                return found
        return None

    def _create_on(self, offer: Offer, body: dict[str, Any], label: str, ignore: frozenset[str]) -> str:
        """Rent one offer. Returns the instance id; raises VastAIError (`offer_gone` → try another)."""
        path = f"/api/v0/asks/{offer.id}/"
        uncertain = False  # a previous try may have created the instance
        last: VastAIError | None = None
        for attempt in range(self.client.max_retries + 1):
            outcome = self.client.attempt("PUT", path, json=body)
            if isinstance(outcome, httpx.Response):
                try:
                    data = self.client.parse(outcome)
                except VastAIError:
                    data = None
                if isinstance(data, dict) and data.get("success") is False:
                    raise VastAIError(
                        self.client.redact(
                            f"Failed to create instance on offer {offer.id}: "
                            f"{data.get('error')} - {data.get('msg') or data.get('message') or ''}"
                        ),
                        status=outcome.status_code,
                        code=str(data.get("error") or "") or None,
                    )
                contract = data.get("new_contract") if isinstance(data, dict) else None
                if isinstance(contract, int | str) and str(contract).strip().isdigit():
                    return str(contract).strip()
                outcome = VastAIError(
                    f"Vast.ai create on offer {offer.id} answered without new_contract",
                    status=outcome.status_code,
                    retryable=True,
                    ambiguous=True,
                )
            last = outcome
            if outcome.ambiguous or (uncertain and outcome.offer_gone):
                uncertain = True
                found = self._lookup_after_lost_answer(label, ignore)
                if found is not None:
                    return found
            if not outcome.retryable or attempt == self.client.max_retries:
                raise outcome
            delay = self.client.backoff(attempt)
            log.warning(
                "Vast.ai create on offer %s failed (%s); retry %d/%d in %.2fs",
                offer.id,
                outcome.status or "no answer",
                attempt + 1,
                self.client.max_retries,
                delay,
            )
            self.client.sleep(delay)
        assert last is not None
        raise last

    def launch(self, spec: LaunchSpec) -> str:
        body = self.create_body(spec)
        previous = self._by_label(spec.label)
        existing = self._newest_live(previous, frozenset())
        if existing is not None:
            log.info("Vast.ai instance %s already carries label %s; adopting it", existing, spec.label)
            return existing
        # Dead machines that carry this label from an earlier launch must not pass for the new one.
        ignore = frozenset(str(i.get("id")).strip() for i in previous)
        offers = self.search_offers(spec.filters)
        if not offers:
            raise ProviderError(f"no Vast.ai offer matches pool {spec.pool!r}'s filters ({spec.filters})")
        # Machines where an instance of ours recently never became ready: try the others first.
        fresh = [o for o in offers if o.machine_id is None or str(o.machine_id) not in spec.avoid_hosts]
        if not fresh:
            raise ProviderError(
                f"every matching Vast.ai offer is on a machine that recently failed ({len(offers)})"
            )
        offers = fresh
        failures: builtins.list[str] = []
        kind = "interruptible" if spec.filters.interruptible else "on-demand"
        for offer in offers[: self.max_offers]:
            price = rental_price(offer, spec.filters) or offer.price_per_hour
            try:
                provider_id = self._create_on(
                    offer, self.body_for_offer(body, offer, spec.filters), spec.label, ignore
                )
            except VastAIError as exc:
                if exc.auth:
                    raise
                failures.append(f"offer {offer.id} ({offer.gpu_name}, {kind} ${price:.4f}/h): {exc}")
                if exc.retryable:  # retries exhausted: the API is in trouble, not the offer
                    break
                log.warning("Vast.ai offer %s not rented for %s: %s", offer.id, spec.label, exc)
                continue
            log.info(
                "Vast.ai instance %s rented for %s on offer %s (%s, %s, $%.4f/h)",
                provider_id,
                spec.label,
                offer.id,
                offer.gpu_name,
                kind,
                price,
            )
            return provider_id
        raise ProviderError(
            f"could not rent a Vast.ai machine for {spec.label} "
            f"({len(failures)} of {len(offers)} offers tried): " + "; ".join(failures)
        )

    # -- instances ---------------------------------------------------------------------------------
    def list(self) -> builtins.list[ProviderInstance]:
        found: builtins.list[ProviderInstance] = []
        for raw in self.client.list_instances():
            mapped = instance_from_json(raw)
            if mapped is not None and mapped.instance_id:
                found.append(mapped)
        return sorted(found, key=lambda m: int(m.provider_id))

    def get(self, provider_id: str) -> ProviderInstance | None:
        raw = self.client.show_instance(_provider_int(provider_id))
        return instance_from_json(raw) if raw is not None else None

    def comfyui_url(self, provider_id: str) -> str | None:
        raw = self.client.show_instance(_provider_int(provider_id))
        return comfyui_url_of(raw) if raw is not None else None

    def destroy(self, provider_id: str) -> None:
        instance_id = _provider_int(provider_id)
        if self.client.destroy_instance(instance_id):
            log.info("Vast.ai instance %s destroyed", instance_id)
        else:
            log.info("Vast.ai instance %s was already gone", instance_id)

    def stop(self, provider_id: str) -> None:
        """Stop the instance, keeping its disk: storage is billed, the GPU is not (§2.5)."""
        instance_id = _provider_int(provider_id)
        self.client.set_instance_state(instance_id, "stopped")
        log.info("Vast.ai instance %s stopped (disk kept)", instance_id)

    def start(self, provider_id: str) -> None:
        """Start a stopped instance again. Vast answers at once; the container may still never run
        (its GPU was rented out meanwhile), which the control plane's resume timeout catches."""
        instance_id = _provider_int(provider_id)
        self.client.set_instance_state(instance_id, "running")
        log.info("Vast.ai instance %s started again", instance_id)
