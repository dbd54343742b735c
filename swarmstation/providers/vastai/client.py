"""A thin synchronous client of Vast.ai's REST endpoints on `httpx.Client` (protocol reference §2).

Retries: 429 (except the daily `search_quota_exceeded`), 500/502/503/504 and connection errors
or timeouts are retried with exponential backoff and full jitter — sleep a uniform random time in
`[0, min(backoff_cap, backoff_base * 2^attempt)]` — since Vast sends no `Retry-After`. Auth
(401/403) and argument errors (other 4xx) are never retried. The sleep function and the random
source are injectable.

The API key is sent only as the `Authorization` header; it is never logged, and it is scrubbed
from every exception message and repr.
"""

from __future__ import annotations

import builtins
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from swarmstation.domain.backoff import backoff_delay
from swarmstation.providers.base import ProviderError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://console.vast.ai"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class VastAIError(ProviderError):
    """A failed Vast.ai call. `retryable`: worth trying again; `ambiguous`: the request may have
    been applied even though no usable answer came back (matters for create)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        vast_code: str | None = None,
        retryable: bool = False,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.vast_code = vast_code  # Vast's own error code (`code` is ours, from the error tree)
        self.retryable = retryable
        self.ambiguous = ambiguous

    @property
    def auth(self) -> bool:
        """A bad key or a key without permission: no other offer will do better."""
        if self.status == 401 or self.vast_code == "auth_error":
            return True
        return self.status == 403 and "not your own" not in str(self).lower()

    @property
    def offer_gone(self) -> bool:
        return self.status in (404, 410) or self.vast_code == "no_such_ask"


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
        return backoff_delay(attempt, base=self.backoff_base, cap=self.backoff_cap, rand=self.rng.random)

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
            return VastAIQuotaError(text, status=status, vast_code=code)
        return VastAIError(
            text,
            status=status,
            vast_code=code,
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
                vast_code=str(code) if code else None,
            )
