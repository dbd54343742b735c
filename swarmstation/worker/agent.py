"""The worker agent: one per GPU instance, beside ComfyUI.

It pulls: registers with its instance token, heartbeats, long-polls for the job the scheduler
assigned to it, runs it on ComfyUI, uploads the outputs through presigned URLs and reports the
result with the lease's fencing token. Calls to the control plane are retried with backoff, so
the worker rides out a control-plane restart; a 409 means the lease moved on and the job is
dropped, a 410 means this instance is being stopped and the worker exits.

The worker also exits, with one log line saying why, when the control plane does not know its
token (401: a new database, a replaced token) or has not answered for `retry_for` seconds: a
worker whose control plane is gone for good must not run forever.

A failure of the machine is not the job's: while ComfyUI does not answer the worker takes no job
(and its heartbeats say so), and a job that fails because ComfyUI went away (or the local disk
did) is reported as an *infrastructure* failure, which the control plane requeues without
spending an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
import random
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from swarmstation import __version__
from swarmstation.comfy.client import (
    ComfyClient,
    ComfyError,
    ComfyExecutionError,
    ComfyUnavailable,
    ComfyValidationError,
    ProgressEvent,
)
from swarmstation.domain.backoff import backoff_delays
from swarmstation.domain.heartbeats import inventory_digest
from swarmstation.net import outbound
from swarmstation.net.policy import OutboundPolicy, parse_host_list
from swarmstation.worker.cache import FetchReport, ModelCache
from swarmstation.worker.downloads import ModelFetchError

log = logging.getLogger("swarmstation.worker")


class LeaseLost(Exception):
    """The control plane gave the job to someone else (409) or cancelled it."""


class InstanceStopped(Exception):
    """The control plane says this instance is terminated or being replaced (410)."""


class InstanceUnknown(Exception):
    """The control plane does not know this instance's token (401); retrying changes nothing."""


class ControlPlaneUnreachable(Exception):
    """The control plane has not answered for `retry_for` seconds. Not an OSError on purpose: a
    job's own error handling must not take it for a failure of this machine."""


def _detail(resp: httpx.Response, default: str) -> str:
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        return default
    return detail if isinstance(detail, str) and detail else default


@dataclass
class WorkerConfig:
    server_url: str
    token: str
    comfyui_url: str
    comfy_dir: Path | None = None  # ComfyUI's folder: models are fetched into it
    cache_budget_bytes: int | None = None  # disk budget for models; None = the disk
    poll_wait: float = 20.0
    comfy_ready_timeout: float = 600.0
    # how long to keep retrying while the control plane is away; past it the worker exits
    retry_for: float = 600.0
    progress_interval: float = 0.25
    # hosts fetched even when private (a MinIO, a model mirror); None: SWARMSTATION_OUTBOUND_ALLOW_HOSTS
    outbound_allow_hosts: tuple[str, ...] | None = None


def outbound_policy(config: WorkerConfig, environ: Mapping[str, str] = os.environ) -> OutboundPolicy:
    """Where the bare client (model downloads, presigned GET/PUT) may connect: public addresses,
    and, even when private, the control plane's own origin (its local object store serves
    ``/objects/...``), the object store endpoint this instance was configured with
    (``SWARMSTATION_S3_ENDPOINT_URL``) and the operator's allow-list."""
    hosts = (
        list(config.outbound_allow_hosts)
        if config.outbound_allow_hosts is not None
        else parse_host_list(environ.get("SWARMSTATION_OUTBOUND_ALLOW_HOSTS"))
    )
    endpoint = environ.get("SWARMSTATION_S3_ENDPOINT_URL", "").strip() or None
    return outbound.policy_from_hosts(hosts, config.server_url, endpoint)


@dataclass
class RunningJob:
    job_id: str
    lease_token: int
    task: asyncio.Task[None] | None = None
    cancelled: bool = False


@dataclass
class ControlPlaneClient:
    """HTTP calls to /worker/v1 with retries on connection errors, 429 and 5xx.

    `unreachable_since` is shared by every call: the control plane is unreachable from the first
    failed call until any call gets an answer, and past `retry_for` seconds of that every call
    raises ControlPlaneUnreachable."""

    http: httpx.AsyncClient
    retry_for: float
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    unreachable_since: float | None = None

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        delays = backoff_delays(base=0.2, cap=5.0, rand=random.random)
        while True:
            try:
                resp = await self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 500 and resp.status_code != 429:
                    self.unreachable_since = None
                if resp.status_code == 401:
                    raise InstanceUnknown(f"{_detail(resp, 'unknown instance')} (HTTP 401)")
                if resp.status_code == 409:
                    raise LeaseLost(_detail(resp, "lease lost"))
                if resp.status_code == 410:
                    raise InstanceStopped(_detail(resp, "instance stopped"))
                if resp.status_code < 500 and resp.status_code != 429:
                    resp.raise_for_status()
                    return resp
                problem = f"HTTP {resp.status_code}"
            now = time.monotonic()
            if self.unreachable_since is None:
                self.unreachable_since = now
            if now - self.unreachable_since > self.retry_for:
                raise ControlPlaneUnreachable(
                    f"the control plane has not answered for {self.retry_for:g}s (last: {problem})"
                )
            log.warning("control plane call %s %s failed (%s); retrying", method, path, problem)
            await self.sleep(next(delays))


@dataclass
class ProgressCoalescer:
    """Which of ComfyUI's progress events become reports: at most one per `interval` seconds,
    the first an interval after the run started (a job that ends sooner sends none: its
    completion says it all), and none that would say the same as the last one sent. The fraction
    stops at 0.95: decoding, saving and uploading come after sampling."""

    interval: float
    started: float
    last_sent: float | None = None
    last_fraction: float | None = None

    def offer(self, value: float, maximum: float, now: float) -> float | None:
        fraction = round(min(value / maximum if maximum else 0.0, 1.0) * 0.95, 4)
        since = now - (self.last_sent if self.last_sent is not None else self.started)
        if since < self.interval or fraction == self.last_fraction:
            return None
        self.last_sent, self.last_fraction = now, fraction
        return fraction


@dataclass
class Worker:
    config: WorkerConfig
    running: dict[str, RunningJob] = field(default_factory=dict)
    draining: bool = False
    stopped: bool = False
    heartbeat_seconds: float = 5.0
    ready: bool = False  # ComfyUI answered once; before that it is still starting
    cache: ModelCache | None = None
    loaded_checkpoint: str | None = None
    _prefetching: asyncio.Task[None] | None = None
    jobs_done: int = 0
    comfy_ok: bool = True  # ComfyUI answered the last probe
    comfy_retry_seconds: float = 1.0  # how often a worker whose ComfyUI is down probes it again
    exit_code: int = 0  # non-zero when the worker gave up (unknown instance, control plane gone)
    _heartbeat_now: asyncio.Event = field(default_factory=asyncio.Event)
    #: The digest of the model inventory the control plane said it holds for this instance
    inventory_held: str | None = None

    async def run(self) -> None:
        agent = {"User-Agent": f"swarmstation-worker/{__version__}"}
        timeout = httpx.Timeout(30.0, read=self.config.poll_wait + 30.0)
        # Two clients, so the instance token reaches the control plane and nothing else: `http`
        # carries it and refuses any other origin (and follows no redirect); `fetch` carries no
        # credentials and is for presigned object-store URLs and model hosts, redirects followed
        # with every hop checked (swarmstation.net.outbound). S3 also refuses a presigned URL
        # that comes with an Authorization header.
        async with (
            outbound.origin_bound_async_client(
                self.config.server_url,
                headers={"Authorization": f"Bearer {self.config.token}", **agent},
                timeout=timeout,
            ) as http,
            outbound.async_client(outbound_policy(self.config), headers=agent) as fetch,
            ComfyClient(self.config.comfyui_url) as comfy,
        ):
            self.cp = ControlPlaneClient(http, self.config.retry_for)
            if self.config.comfy_dir is not None:
                self.cache = ModelCache(
                    self.config.comfy_dir, fetch, budget_bytes=self.config.cache_budget_bytes
                )
                await asyncio.to_thread(self.cache.rescan)
            self.comfy = comfy
            self.http = http
            self.fetch = fetch
            try:
                first = await self._register(ready=False)
                self.heartbeat_seconds = float(first.get("heartbeat_seconds", 5.0))
                # Whichever ends first ends the worker: the job loop, or the heartbeats (which
                # learn first that the instance is stopped, unknown, or cut off).
                heartbeat = asyncio.create_task(self._heartbeat_loop())
                serving = asyncio.create_task(self._serve())
                try:
                    done, _ = await asyncio.wait({heartbeat, serving}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (heartbeat, serving):
                        task.cancel()
                    await asyncio.gather(heartbeat, serving, return_exceptions=True)
                for task in done:
                    task.result()  # raises why the worker stops, if it was an error
            except InstanceStopped as exc:
                log.info("stopping: %s", exc)
            except InstanceUnknown as exc:
                log.error("exiting: the control plane does not know this instance: %s", exc)
                self.exit_code = 1
            except ControlPlaneUnreachable as exc:
                log.error("exiting: %s", exc)
                self.exit_code = 1
            except ComfyUnavailable as exc:  # ComfyUI never came up
                log.error("exiting: %s", exc)
                self.exit_code = 1
            finally:
                self.stopped = True

    async def _serve(self) -> None:
        """Wait for ComfyUI, say the instance is ready, then take jobs until stopped."""
        preload: asyncio.Task[None] | None = None
        try:
            await self.comfy.wait_until_ready(self.config.comfy_ready_timeout)
            reg = await self._register(ready=True)
            self.ready = True
            # preload in the background: a job that needs a model being preloaded shares
            # its download (ModelCache fetches each model once), the others start at once
            preload = asyncio.create_task(self._preload())
            log.info("registered as instance %s", reg["instance_id"])
            await self._job_loop()
        finally:
            if preload is not None:
                preload.cancel()

    async def _register(self, *, ready: bool) -> dict[str, Any]:
        resp = await self.cp.call(
            "POST",
            "/worker/v1/register",
            params={"ready": str(ready).lower()},
            json={"comfyui_url": self.config.comfyui_url, "version": __version__},
        )
        data: dict[str, Any] = resp.json()
        return data

    # -- heartbeats ----------------------------------------------------------------------------
    def _inventory(self) -> tuple[int | None, list[str]]:
        """Free disk and the models on it, for the control plane's routing (after a control-plane
        restart its view of every cache is rebuilt from these)."""
        root = self.config.comfy_dir
        if root is None or self.cache is None:
            return None, []
        free = shutil.disk_usage(root).free if root.exists() else None
        return free, [str(m["key"]) for m in self.cache.inventory()][:10_000]

    def _cache_counters(self) -> dict[str, float]:
        if self.cache is None:
            return {}
        st = self.cache.stats()
        keys = ("hits", "misses", "bytes_hit", "bytes_downloaded", "evictions", "bytes_cached")
        return {k: float(st[k]) for k in keys if isinstance(st.get(k), int | float)}

    async def _comfyui_ok(self) -> bool:
        """Probe ComfyUI; a worker whose ComfyUI died must not keep taking jobs."""
        try:
            async with asyncio.timeout(5.0):
                await self.comfy.system_stats()
            return True
        except (ComfyError, TimeoutError, OSError, httpx.HTTPError):
            return False

    async def _probe_comfy(self) -> bool:
        """Probe ComfyUI and say when that changes; a ComfyUI that went down is reported in a
        heartbeat at once, so the control plane routes nothing more here."""
        ok = await self._comfyui_ok()
        if ok != self.comfy_ok:
            if ok:
                log.info("ComfyUI at %s answers again; taking jobs", self.config.comfyui_url)
            else:
                log.warning(
                    "ComfyUI at %s is not answering; taking no jobs until it does", self.config.comfyui_url
                )
                self._heartbeat_now.set()
        self.comfy_ok = ok
        return ok

    def _inventory_and_digest(self) -> tuple[int | None, list[str], str]:
        free, models = self._inventory()
        return free, models, inventory_digest(models)

    async def heartbeat_once(self) -> None:
        free, models, digest = await asyncio.to_thread(self._inventory_and_digest)
        body: dict[str, Any] = {
            "running": [{"job_id": j.job_id, "lease_token": j.lease_token} for j in self.running.values()],
            "disk_free_bytes": free,
            "comfyui_ok": await self._probe_comfy() if self.ready else True,
            "loaded_checkpoint": self.loaded_checkpoint,
            "cache": self._cache_counters(),
        }
        # The inventory (up to 10,000 keys) only when the control plane does not hold this one: its
        # last answer named the digest of what it holds (a control plane older than the digest
        # names none, and gets the inventory every time).
        if self.inventory_held == digest:
            body["inventory_digest"] = digest
        else:
            body["models"] = models
        resp = await self.cp.call("POST", "/worker/v1/heartbeat", json=body)
        data = resp.json()
        self.inventory_held = data.get("inventory_digest")
        if data.get("send_inventory"):  # it lost it (another replica, an edit): at once, in full
            self.inventory_held = None
            self._heartbeat_now.set()
        self.draining = bool(data.get("drain"))
        prefetch = [m for m in data.get("prefetch", []) if m.get("url")]
        if prefetch and self.cache is not None and not self.running and self._prefetching is None:
            self._prefetching = asyncio.create_task(self._prefetch(prefetch))
        for job_id in [*data.get("cancel", []), *data.get("stale", [])]:
            job = self.running.get(job_id)
            if job is not None and job.task is not None:
                log.info("job %s was cancelled or reassigned; interrupting it", job_id)
                job.cancelled = True
                job.task.cancel()

    async def _heartbeat_loop(self) -> None:
        """Heartbeats until the control plane stops this instance, does not know it, or stays
        away: those end the worker (raised to `run`); any other failure is logged and retried."""
        while True:
            try:
                await self.heartbeat_once()
            except (InstanceStopped, InstanceUnknown, ControlPlaneUnreachable):
                raise
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
            try:
                async with asyncio.timeout(self.heartbeat_seconds):
                    await self._heartbeat_now.wait()
            except TimeoutError:
                pass
            self._heartbeat_now.clear()

    # -- jobs ----------------------------------------------------------------------------------
    async def _job_loop(self) -> None:
        while not self.stopped:
            if self.draining and not self.running:
                log.info("drained; waiting to be stopped")
                await asyncio.sleep(1.0)
                continue
            # Probe before asking for work: a worker whose ComfyUI died would fail every job it
            # took, one after another, within seconds.
            if not await self._probe_comfy():
                await asyncio.sleep(self.comfy_retry_seconds)
                continue
            # start=true: the answer counts as the job's start (one round trip fewer); a control
            # plane older than it ignores the parameter, and its answer has no `started`.
            resp = await self.cp.call(
                "GET",
                "/worker/v1/jobs/next",
                params={"wait": self.config.poll_wait, "start": "true", "holding": list(self.running)},
            )
            if resp.status_code == 204:
                continue
            assignment = resp.json()
            job = RunningJob(assignment["job_id"], assignment["lease_token"])
            self.running[job.job_id] = job
            job.task = asyncio.create_task(self.run_job(assignment, job))
            try:
                await job.task
            except asyncio.CancelledError:
                if not job.cancelled:
                    raise
            finally:
                self.running.pop(job.job_id, None)

    async def _report(self, job: RunningJob, action: str, body: dict[str, Any]) -> httpx.Response:
        return await self.cp.call(
            "POST", f"/worker/v1/jobs/{job.job_id}/{action}", json={"lease_token": job.lease_token, **body}
        )

    async def run_job(self, assignment: dict[str, Any], job: RunningJob) -> None:
        t0 = time.monotonic()
        try:
            if not assignment.get("started"):
                await self._report(job, "started", {})
            required = assignment.get("required_models", [])
            report = await self._ensure_models(required)
            t_models = time.monotonic()
            workflow = await self._stage_inputs(assignment)
            t_inputs = time.monotonic()
            coalesce = ProgressCoalescer(self.config.progress_interval, started=t_inputs)

            async def on_progress(ev: ProgressEvent) -> None:
                if ev.kind != "progress":
                    return
                fraction = coalesce.offer(ev.value, ev.max, time.monotonic())
                if fraction is None:
                    return
                detail = {"node": ev.node, "value": ev.value, "max": ev.max, "stage": "sampling"}
                await self._report(job, "progress", {"progress": fraction, **detail})

            try:
                result = await self.comfy.run(workflow, on_progress=on_progress, prompt_id=None)
            finally:
                if self.cache is not None:
                    self.cache.release(required)  # in use until ComfyUI is done with them
            self.loaded_checkpoint = checkpoint_of(workflow) or self.loaded_checkpoint
            t_run = time.monotonic()
            output_ids = await self._upload_outputs(job, result.outputs)
            t_done = time.monotonic()
            timings = {
                "model_fetch_seconds": round(t_models - t0, 4),
                "models_downloaded": report.downloaded if report else 0,
                "model_bytes_downloaded": report.bytes_downloaded if report else 0,
                "model_cache_hits": report.hits if report else 0,
                "inputs_seconds": round(t_inputs - t_models, 4),
                "run_seconds": round(t_run - t_inputs, 4),
                "upload_seconds": round(t_done - t_run, 4),
            }
            await self._report(job, "complete", {"outputs": output_ids, "timings": timings})
            self.jobs_done += 1
            log.info("job %s completed in %.2fs", job.job_id, t_done - t0)
        except LeaseLost as exc:
            log.warning("job %s: %s", job.job_id, exc)
        except asyncio.CancelledError:
            await self._interrupt()
            raise
        except (InstanceStopped, InstanceUnknown, ControlPlaneUnreachable):
            raise  # the worker stops; not the job's failure
        except ComfyValidationError as exc:
            await self._fail(job, f"ComfyUI rejected the workflow: {exc}", retryable=False)
        except ComfyExecutionError as exc:
            await self._fail(job, f"ComfyUI failed: {exc}", retryable=False)
        except ComfyUnavailable as exc:
            # ComfyUI went away (crashed, killed, out of memory): this machine's failure
            await self._fail(job, f"ComfyUI is not answering: {exc}", retryable=True, infrastructure=True)
        except ModelFetchError as exc:
            # a download the source refused or corrupted is not this machine's fault; its disk is
            await self._fail(job, str(exc), retryable=True, infrastructure=_local_disk_error(exc))
        except OSError as exc:  # the local disk (full, read-only): this machine's failure
            await self._fail(job, f"{type(exc).__name__}: {exc}", retryable=True, infrastructure=True)
        except (ComfyError, httpx.HTTPError) as exc:
            await self._fail(job, f"{type(exc).__name__}: {exc}", retryable=True)

    async def _preload(self) -> None:
        """Fetch the pool's preload models, in the background while jobs are taken (failures are
        logged, not fatal: jobs fetch what they miss)."""
        if self.config.comfy_dir is None:
            return
        try:
            models = (await self.cp.call("GET", "/worker/v1/preload")).json()
            if self.cache is not None and models:
                report = await self.cache.preload(models)
                log.info("preloaded %d models (%d downloaded)", len(models), report.downloaded)
        # OSError (disk full, ...) too, as in _prefetch: nothing awaits this task, so an error
        # that escaped would go unreported
        except (ModelFetchError, httpx.HTTPError, OSError) as exc:
            log.warning("preload failed: %s", exc)

    async def _prefetch(self, models: list[dict[str, Any]]) -> None:
        """Fetch popular models while idle; they are evictable like any other."""
        assert self.cache is not None
        try:
            async with self.cache.using(models) as report:
                if report.downloaded:
                    log.info("prefetched %d models", report.downloaded)
        except (ModelFetchError, httpx.HTTPError, OSError) as exc:
            log.warning("prefetch failed: %s", exc)
        finally:
            self._prefetching = None

    async def _ensure_models(self, models: list[dict[str, Any]]) -> FetchReport | None:
        """Download what ComfyUI lacks and hold the job's models in use (the caller releases)."""
        if self.cache is None:
            return None  # no access to ComfyUI's folders: it must already hold the models
        return await self.cache.ensure(models)

    async def _interrupt(self) -> None:
        try:
            await self.comfy.interrupt()
        except Exception:
            log.warning("could not interrupt ComfyUI")

    async def _fail(
        self, job: RunningJob, error: str, *, retryable: bool, infrastructure: bool = False
    ) -> None:
        log.warning("job %s failed%s: %s", job.job_id, " (machine failure)" if infrastructure else "", error)
        body: dict[str, Any] = {"error": error[:4000], "retryable": retryable}
        if infrastructure:  # only when set: a control plane older than the field refuses it
            body["infrastructure"] = True
        try:
            await self._report(job, "fail", body)
        except LeaseLost:
            pass

    async def _stage_inputs(self, assignment: dict[str, Any]) -> dict[str, Any]:
        """Fetch input images from the object store and upload them into ComfyUI's input folder."""
        workflow: dict[str, Any] = {
            k: {**v, "inputs": dict(v["inputs"])} for k, v in assignment["workflow"].items()
        }
        for img in assignment.get("input_images", []):
            resp = await self.fetch.get(img["url"])  # presigned: no credentials
            resp.raise_for_status()
            name = await self.comfy.upload_image(img["filename"], resp.content, subfolder="swarmstation")
            workflow[img["node_id"]]["inputs"][img["input_name"]] = name
        return workflow

    async def _upload_outputs(self, job: RunningJob, files: list[Any]) -> list[str]:
        if not files:
            return []
        blobs = [await self.comfy.download(f) for f in files]
        body = {
            "files": [
                {
                    "filename": f.filename,
                    "content_type": mimetypes.guess_type(f.filename)[0] or "application/octet-stream",
                    "size": len(blob),
                    "node_id": f.node_id,
                }
                for f, blob in zip(files, blobs, strict=True)
            ]
        }
        uploads = (await self._report(job, "outputs", body)).json()["uploads"]
        for upload, blob in zip(uploads, blobs, strict=True):
            resp = await self.fetch.put(upload["upload_url"], content=blob)  # presigned: no credentials
            resp.raise_for_status()
        return [u["output_id"] for u in uploads]


_LOADER_INPUTS = {
    "CheckpointLoaderSimple": ("checkpoints", "ckpt_name"),
    "UNETLoader": ("diffusion_models", "unet_name"),
}


def checkpoint_of(workflow: dict[str, Any]) -> str | None:
    """The checkpoint (or diffusion model) a workflow loads, as a cache key."""
    for node in workflow.values():
        spec = _LOADER_INPUTS.get(node.get("class_type", "")) if isinstance(node, dict) else None
        if spec is not None and isinstance(node.get("inputs", {}).get(spec[1]), str):
            return f"{spec[0]}/{node['inputs'][spec[1]]}"
    return None


def _local_disk_error(exc: BaseException) -> bool:
    """Whether a model fetch failed on this machine's own disk rather than at the source."""
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, httpx.HTTPError):
            return False  # the network or the host (an httpx error may wrap a socket's OSError)
        if isinstance(cause, OSError):
            return True
        cause = cause.__cause__
    return False


def run_worker(config: WorkerConfig) -> int:
    """Run a worker until it stops; its exit status (non-zero when it gave up)."""
    worker = Worker(config)
    asyncio.run(worker.run())
    return worker.exit_code
