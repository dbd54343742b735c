"""The control plane as a FastAPI app: `create_app(settings)`.

Creating the app migrates the database and seeds it (default pool, bundled tools, first admin).
The lifespan starts the scheduler and pool loops, which act only while this replica holds the
leader lock.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from swarmstation import __version__
from swarmstation.api import account as account_api
from swarmstation.api import admin, comfydeploy, loras, models, objects, public, worker, worker_install
from swarmstation.api import admin_series as series_api
from swarmstation.api import auth as auth_api
from swarmstation.api import catalog as catalog_api
from swarmstation.api import conversations as conversations_api
from swarmstation.api import deposits as deposits_api
from swarmstation.api import docs_pages as docs_api
from swarmstation.api import keys as keys_api
from swarmstation.api import pipelines as pipelines_api
from swarmstation.api import pools as pools_api
from swarmstation.api import prices as prices_api
from swarmstation.api import quotes as quotes_api
from swarmstation.api import runs as runs_api
from swarmstation.api import wallets as wallets_api
from swarmstation.api import workspaces as workspaces_api
from swarmstation.api.deps import AppState, current_instance, current_user
from swarmstation.api.errors import install_error_handlers
from swarmstation.api.limits import AuthThrottle, BodyLimits, EdgeLimits
from swarmstation.api.metrics import make_registry, render, require_metrics_token
from swarmstation.api.studio import mount_studio
from swarmstation.config import ConfigError, Settings, reveal
from swarmstation.control.bootstrap import ensure_admin, ensure_default_pool, seed_tools, write_secret_file
from swarmstation.control.deposits import Deposits
from swarmstation.control.leader import LOOP_CHECK_SECONDS, LOOP_RETRY_SECONDS, LeaderLock
from swarmstation.control.local_jobs import LocalExecutor
from swarmstation.control.loops import ControlLoops
from swarmstation.control.moderation import LoraStager
from swarmstation.control.notify import SCHEDULER_IDLE_KEY, SCHEDULER_KEY, Notifier, PgBridge
from swarmstation.control.pools import PoolController
from swarmstation.control.replicas import ReplicaPresence
from swarmstation.control.runs import Runner
from swarmstation.domain.replicas import NO_SHARED_ADDRESS, may_join
from swarmstation.integrations.comfydeploy.client import ComfyDeployClient
from swarmstation.integrations.comfydeploy.dispatcher import ComfyDeployDispatcher
from swarmstation.objectstore.base import ObjectStore
from swarmstation.objectstore.local import LocalObjectStore
from swarmstation.objectstore.s3 import S3ObjectStore
from swarmstation.providers.base import ComputeProvider
from swarmstation.providers.bootstrap import compact_onstart, render_onstart
from swarmstation.providers.local import LocalProvider
from swarmstation.providers.vastai.provider import VastAIProvider
from swarmstation.store.db import make_engine, make_read_engine, make_sessionmaker, migrate, ping, transaction
from swarmstation.store.models import Pool, utcnow

log = logging.getLogger(__name__)

#: Threads for sync request handlers (anyio's default is 40).
REQUEST_THREADS = 1000
#: How often the process hands freed heap back to the system (glibc's malloc keeps it otherwise:
#: after a burst of large answers the resident size stayed 25% above idle).
TRIM_SECONDS = 10.0


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0), or None where there is no glibc."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return lambda: trim(0)


async def _trim_heap_forever(every: float) -> None:
    trim = _malloc_trim()
    if trim is None:
        return
    while True:
        await asyncio.sleep(every)
        await asyncio.to_thread(trim)


def _secret(settings: Settings) -> bytes:
    configured = reveal(settings.secret_key)
    if configured:
        return configured.encode()
    path = settings.data_dir / "secret.key"
    if not path.exists():
        write_secret_file(path, secrets.token_hex(32))
    return path.read_text().strip().encode()


def default_providers(settings: Settings) -> dict[str, ComputeProvider]:
    """`local` when the settings ask for it; `vastai` whenever its API key is set (pools say
    which provider runs them)."""
    providers: dict[str, ComputeProvider] = {}
    if settings.vastai_api_key is not None:
        providers["vastai"] = VastAIProvider.from_settings(settings)
    if settings.provider == "local":
        providers["local"] = LocalProvider(
            settings.data_dir / "instances",
            emulator_step_seconds=settings.emulator_step_seconds,
            emulator_model_load_seconds=settings.emulator_model_load_seconds,
        )
    return providers


class ControlPlane:
    """Everything `create_app` built, for the CLI and tests."""

    def __init__(self, app: FastAPI, state: AppState, admin_key: str | None, pools: PoolController) -> None:
        self.app = app
        self.state = state
        self.admin_key = admin_key
        self.pools = pools
        # `up` owns its local instances and stops them when it exits; `serve` leaves them running.
        self._stop_instances_on_exit = False

    @property
    def stop_instances_on_exit(self) -> bool:
        return self._stop_instances_on_exit

    @stop_instances_on_exit.setter
    def stop_instances_on_exit(self, value: bool) -> None:
        # Instances that end with the control plane also end when it is killed (PR_SET_PDEATHSIG).
        self._stop_instances_on_exit = value
        for provider in self.pools.providers.values():
            if isinstance(provider, LocalProvider):
                provider.die_with_parent = value

    def begin_shutdown(self) -> None:
        """Called as soon as the server is asked to stop (from its signal handler): workers' long
        polls answer at once, so the server's graceful shutdown takes a moment, not a poll's
        length."""
        self.state.notifier.close()

    @property
    def admin_key_file(self) -> Path:
        return self.state.settings.data_dir / "admin.key"


def build(
    settings: Settings,
    *,
    provider: ComputeProvider | str | None = "default",
    providers: dict[str, ComputeProvider] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> ControlPlane:
    """`provider="default"` takes the providers the settings name; None runs without any;
    `providers` names several explicitly."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    read_engine = make_read_engine(settings.sqlalchemy_url)  # after migrate: the schema exists
    # Workers keep the URL they were launched with: beside another replica, only an address shared
    # by all of them survives the loss of one (domain/replicas.py).
    presence = ReplicaPresence(engine)
    if not may_join(settings.public_url, presence.others()):
        raise ConfigError(NO_SHARED_ADDRESS)
    now = clock()
    with transaction(sessions) as s:
        ensure_default_pool(s, settings, now)
        seed_tools(s, now, settings)
        admin_key = ensure_admin(s, settings, now)

    if providers is None:
        if provider == "default":
            providers = default_providers(settings)
        elif isinstance(provider, str) or provider is None:
            providers = {}
        else:
            providers = {provider.name: provider}
    notifier = Notifier()

    def onstart(pool: Pool) -> str:
        # The pool's own startup script runs as its own reported stage, without the token.
        script = render_onstart(
            swarmstation_spec=settings.worker_install_spec,
            comfyui_mode=settings.worker_comfyui_mode,
            startup_script=pool.startup_script,
        )
        return compact_onstart(script)  # Vast refuses long onstart scripts

    pools = PoolController(settings, sessions, providers, clock, onstart=onstart, presence=presence)
    leader = LeaderLock(
        engine,
        settings.data_dir / "leader.lock",
        check_seconds=LOOP_CHECK_SECONDS,
        retry_seconds=LOOP_RETRY_SECONDS,
    )
    loops = ControlLoops(settings, sessions, notifier, leader, pools, clock)
    # Replicas on one PostgreSQL wake each other's waiters (LISTEN/NOTIFY), and one that does not
    # lead asks the leader for a pass (ControlLoops.poke publishes it).
    bridge = PgBridge(engine, notifier, others=presence.others) if presence.shared else None
    notifier.subscribe(SCHEDULER_KEY, lambda: loops.poke() if loops.leader.held else None)
    notifier.subscribe(SCHEDULER_IDLE_KEY, lambda: loops.poke(change=False) if loops.leader.held else None)
    store: ObjectStore = (
        S3ObjectStore.from_settings(settings)
        if settings.s3_bucket
        else LocalObjectStore(
            settings.data_dir / "objects", base_url=settings.base_url, secret=_secret(settings)
        )
    )
    secret = _secret(settings)
    deploy_client = (
        ComfyDeployClient.from_settings(settings) if settings.comfydeploy_api_key is not None else None
    )
    state = AppState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        store=store,
        notifier=notifier,
        loops=loops,
        clock=clock,
        webhook_key=secret,
        comfydeploy=deploy_client,
        auth_throttle=AuthThrottle(settings.auth_failures_per_minute),
        read_sessions=make_sessionmaker(read_engine) if read_engine is not None else None,
    )
    # Pipeline runs advance on the leader: steps start as their inputs are ready (control/runs.py);
    # each change wakes the run's event streams.
    runner = Runner(settings, sessions, clock, matchers=state.matchers, wake=notifier.wake)
    loops.extra.append(("runs", settings.run_interval_seconds, runner.tick))
    if deploy_client is not None:
        dispatcher = ComfyDeployDispatcher(
            settings,
            sessions,
            deploy_client,
            store,
            secret,
            clock,
            on_change=lambda j: notifier.wake(f"job:{j}"),
        )
        loops.extra.append(("comfydeploy", settings.scheduler_interval_seconds, dispatcher.tick))
    # Approved LoRAs are staged in the background, by the leader (control/moderation.py).
    lora_stager = LoraStager(settings, sessions, store, clock, leader=loops.leader)

    # Tools that are not ComfyUI workflows (LLM text, image utilities) run here, by the leader.
    def local_job_changed(job_id: str) -> None:
        notifier.wake(f"job:{job_id}")
        loops.poke()

    local_executor = LocalExecutor(settings, sessions, store, clock, on_change=local_job_changed)
    loops.extra.append(("local-tools", 0.2, local_executor.tick))
    loops.extra.append(("lora-staging", settings.lora_staging_poll_seconds, lora_stager.tick))
    # Deposits on the configured chains: reported by users, and found by the leader's scanner.
    deposits = Deposits(settings, sessions, clock)
    if deposits.configs:
        loops.extra.append(("deposit-scanner", settings.deposit_scan_interval_seconds, deposits.tick))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        notifier.bind(asyncio.get_running_loop())
        # Sync handlers and the validation of their answers share this pool: with anyio's 40
        # threads, 40 requests waiting for a database connection starved the one that held it and
        # only had its answer left to validate (see api/worker.py). Threads start on demand.
        anyio.to_thread.current_default_thread_limiter().total_tokens = REQUEST_THREADS
        trimming = asyncio.create_task(_trim_heap_forever(TRIM_SECONDS), name="malloc-trim")
        await asyncio.to_thread(presence.announce)
        if bridge is not None:
            await asyncio.to_thread(bridge.start)
        lora_stager.start()
        loops.start()
        try:
            yield
        finally:
            trimming.cancel()
            await asyncio.to_thread(lora_stager.stop)
            await loops.stop()
            if bridge is not None:
                await asyncio.to_thread(bridge.stop)
            await asyncio.to_thread(local_executor.close)
            deposits.close()
            await asyncio.to_thread(presence.leave)
            if plane.stop_instances_on_exit:
                log.warning("stopping local instances")
                await asyncio.to_thread(pools.shutdown)

    app = FastAPI(
        title="swarmstation",
        version=__version__,
        description="Run ComfyUI tools on an autoscaled pool of GPU instances.",
        lifespan=lifespan,
    )
    app.state.swarm = state
    app.state.deposits = deposits
    install_error_handlers(app)
    # Body sizes and authentication are checked before FastAPI reads a body (api/limits.py).
    app.add_middleware(
        EdgeLimits,
        limits=BodyLimits.from_settings(settings),
        authenticators=(current_user, current_instance),
    )
    # Starlette matches a request against the routes in order: the worker protocol and the object
    # store's URLs (most of a job's requests, and all of an idle instance's) come first, so that
    # they are not tried against some sixty other routes before their own.
    app.include_router(worker.router)
    app.include_router(objects.router)
    app.include_router(public.router)
    app.include_router(account_api.router)
    app.include_router(quotes_api.router)
    app.include_router(prices_api.router)
    app.include_router(series_api.router)
    app.include_router(admin.router)
    app.include_router(loras.router)
    app.include_router(pools_api.router)
    app.include_router(models.router)
    app.include_router(comfydeploy.router)
    app.include_router(worker_install.router)
    app.include_router(deposits_api.router)
    app.include_router(auth_api.router)
    app.include_router(wallets_api.router)
    app.include_router(keys_api.router)
    app.include_router(runs_api.router)
    app.include_router(pipelines_api.router)
    app.include_router(workspaces_api.router)
    app.include_router(conversations_api.router)
    app.include_router(docs_api.router)
    app.include_router(catalog_api.router)
    registry = make_registry(state)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> JSONResponse:
        ok = ping(engine)
        return JSONResponse({"ok": ok, "database": "up" if ok else "down"}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"])
    def metrics(request: Request) -> Response:
        require_metrics_token(request, state)
        return Response(render(state, registry), media_type="text/plain; version=0.0.4")

    mount_studio(app, settings)  # last: its fallback answers any GET no route above took
    plane = ControlPlane(app, state, admin_key, pools)
    return plane
