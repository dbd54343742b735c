"""`VastAIProvider`: the `ComputeProvider` that rents Vast.ai machines (protocol reference §2).

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

Interruptible rentals (`OfferFilters.interruptible`): the search asks for `"type": "bid"`
offers, they are ranked at their bid price (domain/offers.py), and the create sends
`"price": <bid>` (`min_bid * bid_margin`) — without `price` Vast rents on-demand (§2.4). The
instance then reports `is_bid`, and its `dph_total` is what we pay (the bid), which the control
plane records as its price. An outbid instance is stopped by Vast, not destroyed (§2.6): `list()`
shows it `stopped` and `interruptible`, and the control plane, which knows whether it parked the
instance itself, tells the two apart.
"""

from __future__ import annotations

import builtins
import logging
from typing import Any

import httpx

from swarmstation.config import Settings, reveal
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
from swarmstation.providers.vastai.client import DEFAULT_BASE_URL, VastAIClient, VastAIError
from swarmstation.providers.vastai.instances import (
    COMFYUI_PORT,
    comfyui_url_of,
    instance_from_json,
)

log = logging.getLogger(__name__)


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
    def from_settings(cls, settings: Settings, **options: Any) -> VastAIProvider:
        """From `vastai_api_key` (VASTAI_API_KEY, required) and `vastai_base_url` (VASTAI_BASE_URL)."""
        key = reveal(settings.vastai_api_key)
        if not key:
            raise ProviderError("no Vast.ai API key is configured (VASTAI_API_KEY)")
        return cls(key, base_url=settings.vastai_base_url, **options)

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
                        vast_code=str(data.get("error") or "") or None,
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
