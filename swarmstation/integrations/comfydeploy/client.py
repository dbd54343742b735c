"""A thin synchronous client for the ComfyUI Deploy API, and pure helpers for its webhooks.

Where each shape comes from (keep this list honest when a shape is changed):

- Base URL `https://api.comfydeploy.com`, Bearer auth (the key: `Settings.comfydeploy_api_key`, read
  from `COMFY_DEPLOY_API_KEY`), the endpoint paths
  `/api/run/deployment/queue` (submit), `/api/run/{id}` (status), `/api/run/{id}/cancel`,
  `/api/deployments`, `/api/machines`: prior-system reference §4 (the earlier platform's `config.js`).
- Queue body `{deployment_id, inputs, machine_id?, webhook, webhook_intermediate_status: true}` answered
  with `{run_id}`: prior-system reference §4 (`runManager.js`); seed roadmap §2 shows the same body.
- Webhook body fields `run_id, status, progress, live_status, outputs, event_type`, and the statuses
  queued/started/running/uploading/success/failed: prior-system reference §4 (`webhookProcessor.js`).
- Run object `{id, status, progress, live_status, outputs: [{data: {images|files|gifs: [{url, filename,
  type}]}}]}`, outputs as a list of `{data: ...}` entries, and the statuses `not-started`, `cancelled`,
  `timeout`: public ComfyUI Deploy SDK / docs found by search (the `comfydeploy` JS client's zod schema
  has `outputs: [{data}]` and statuses success/failed/running/uploading; the prior system's
  `ResponsePayloadNormalizer` handles `[{data:{images|files|text}}]`). NOT verified against the live
  service: `progress` is taken as a fraction 0..1 (values above 1 are read as percent), and
  deployment/machine fields beyond `id`/`name` are read tolerantly.

Nothing here logs, reprs or raises the API key: exceptions carry the method, the path, the status and
a short redacted body excerpt only.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx

from swarmstation.config import Settings, reveal
from swarmstation.domain.backoff import backoff_delay
from swarmstation.domain.comfydeploy_webhooks import RunOutput, RunUpdate, WebhookError, run_update_from
from swarmstation.domain.errors import UpstreamError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.comfydeploy.com"


class ComfyDeployError(UpstreamError):
    """An API call failed. `status_code` is None for connection errors; `retryable` says whether
    the failure was of a kind that retries were (or would have been) tried for."""

    code = "comfydeploy_error"

    def __init__(self, message: str, *, status_code: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable


@dataclass(frozen=True)
class Deployment:
    id: str
    name: str
    machine_id: str | None = None
    workflow_id: str | None = None
    environment: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Machine:
    id: str
    name: str
    gpu: str | None = None
    status: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


# -------------------------------------------------------------------------------------------- client


class ComfyDeployClient:
    """Synchronous client. Retries 429, 5xx and connection errors with exponential backoff and
    jitter (`sleep` and `rand` are injectable); never retries other 4xx. Queueing a run is not
    idempotent, so it is retried only where the run surely was not created: 429, 503 and failures
    to connect."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        key = api_key.strip()
        if not key:
            raise ComfyDeployError("no ComfyUI Deploy API key (COMFY_DEPLOY_API_KEY is not set)")
        self._key = key
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._rand = rand
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> ComfyDeployClient:
        """From `comfydeploy_api_key` (COMFY_DEPLOY_API_KEY) and `comfydeploy_base_url`."""
        key = reveal(settings.comfydeploy_api_key) or ""
        return cls(key, base_url=settings.comfydeploy_base_url, **options)

    def __repr__(self) -> str:
        return f"ComfyDeployClient(base_url={self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ComfyDeployClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = backoff_delay(attempt, base=self.backoff, cap=self.max_backoff, rand=self._rand)
        if retry_after:
            try:
                delay = max(delay, min(self.max_backoff, float(retry_after)))
            except ValueError:
                pass
        return delay

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        idempotent: bool = True,
        absolute: bool = False,
    ) -> httpx.Response:
        # Only send the key to the API's own host (output URLs are usually pre-signed elsewhere).
        headers: dict[str, str] = {}
        if not absolute or urlparse(path).netloc == urlparse(self.base_url).netloc:
            headers["Authorization"] = f"Bearer {self._key}"
        shown = urlparse(path).path if absolute else path
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, json=json_body, headers=headers)
            except httpx.TransportError as exc:
                connect = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                retryable = idempotent or connect
                if retryable and attempt < self.retries:
                    delay = self._delay(attempt, None)
                    log.warning(
                        "comfydeploy %s %s: %s; retry in %.2fs", method, shown, type(exc).__name__, delay
                    )
                    self._sleep(delay)
                    attempt += 1
                    continue
                raise ComfyDeployError(
                    f"{method} {shown}: {type(exc).__name__}", retryable=retryable
                ) from None
            code = response.status_code
            if code < 400:
                log.debug("comfydeploy %s %s -> %d", method, shown, code)
                return response
            retryable = code == 429 or code >= 500
            if not idempotent:
                retryable = code in (429, 503)
            if retryable and attempt < self.retries:
                delay = self._delay(attempt, response.headers.get("retry-after"))
                log.warning("comfydeploy %s %s -> %d; retry in %.2fs", method, shown, code, delay)
                self._sleep(delay)
                attempt += 1
                continue
            excerpt = self._redact(response.text[:200])
            raise ComfyDeployError(
                f"{method} {shown} -> {code}: {excerpt}", status_code=code, retryable=retryable
            )

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ComfyDeployError(
                f"{response.request.method} {response.request.url.path}: response is not JSON",
                status_code=response.status_code,
            ) from None

    # -- API

    def queue_run(
        self,
        deployment_id: str,
        inputs: Mapping[str, Any],
        webhook_url: str | None = None,
        *,
        machine_id: str | None = None,
        intermediate_status: bool = True,
    ) -> str:
        body: dict[str, Any] = {"deployment_id": deployment_id, "inputs": dict(inputs)}
        if machine_id:
            body["machine_id"] = machine_id
        if webhook_url:
            body["webhook"] = webhook_url
            body["webhook_intermediate_status"] = intermediate_status
        data = self._json(
            self._request("POST", "/api/run/deployment/queue", json_body=body, idempotent=False)
        )
        run_id = data.get("run_id") if isinstance(data, Mapping) else None
        if not run_id:
            raise ComfyDeployError("POST /api/run/deployment/queue: no run_id in the answer")
        log.info("comfydeploy queued run %s for deployment %s", run_id, deployment_id)
        return str(run_id)

    def get_run(self, run_id: str) -> RunUpdate:
        data = self._json(self._request("GET", f"/api/run/{run_id}"))
        if not isinstance(data, Mapping):
            raise ComfyDeployError(f"GET /api/run/{run_id}: not an object")
        try:
            return run_update_from({**data, "run_id": data.get("id") or data.get("run_id") or run_id})
        except WebhookError as exc:
            raise ComfyDeployError(f"GET /api/run/{run_id}: {exc}") from None

    def cancel_run(self, run_id: str) -> None:
        self._request("POST", f"/api/run/{run_id}/cancel")

    def outputs(self, run_id: str) -> list[RunOutput]:
        return list(self.get_run(run_id).outputs)

    def download(self, output: RunOutput | str) -> bytes:
        url = output.url if isinstance(output, RunOutput) else output
        return self._request("GET", url, absolute=True).content

    def deployments(self) -> list[Deployment]:
        result = []
        for d in _listing(self._json(self._request("GET", "/api/deployments")), "deployments"):
            result.append(
                Deployment(
                    id=str(d["id"]),
                    name=str(d.get("name") or d["id"]),
                    machine_id=_opt(d.get("machine_id")),
                    workflow_id=_opt(d.get("workflow_id")),
                    environment=_opt(d.get("environment")),
                    raw=d,
                )
            )
        return result

    def machines(self) -> list[Machine]:
        result = []
        for m in _listing(self._json(self._request("GET", "/api/machines")), "machines"):
            result.append(
                Machine(
                    id=str(m["id"]),
                    name=str(m.get("name") or m["id"]),
                    gpu=_opt(m.get("gpu")),
                    status=_opt(m.get("status")),
                    raw=m,
                )
            )
        return result


def _opt(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _listing(data: Any, key: str) -> list[Mapping[str, Any]]:
    if isinstance(data, Mapping):
        data = data.get(key) or data.get("data") or []
    if not isinstance(data, list):
        return []
    return [d for d in data if isinstance(d, Mapping) and d.get("id")]
