"""The pool loop: keep each pool at the size the scaling policy asks for, and sweep what died.

One tick: (1) reconcile the provider's list with the database — instances whose processes are
gone become UNHEALTHY, instances the database does not know are destroyed; (2) destroy UNHEALTHY
instances and DRAINING ones that have finished their jobs; (3) ask `plan_scaling` for each pool
and launch or drain. Provider calls happen outside database transactions: a row is written
before a launch, so a crash between the two leaves a PROVISIONING row that the provisioning
timeout sweeps, never an instance we do not know about.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from swarmstation.auth import WORKER_TOKEN_PREFIX, hash_secret, new_secret
from swarmstation.config import Settings
from swarmstation.control.instances import set_instance_state
from swarmstation.control.jobs import active_job_count
from swarmstation.domain.scaling import Drain, InstanceView, Launch, PoolConfig, plan_scaling
from swarmstation.domain.states import LIVE_INSTANCE_STATES, InstanceState, JobState
from swarmstation.domain.tools import tool_from_dict
from swarmstation.domain.workflow import required_models
from swarmstation.providers.base import ComputeProvider, LaunchSpec, ProviderError
from swarmstation.store.db import transaction
from swarmstation.store.models import Instance, InstanceTransition, Job, Pool, Tool

log = logging.getLogger(__name__)


def pool_config(pool: Pool) -> PoolConfig:
    return PoolConfig(
        name=pool.name,
        min_instances=pool.min_instances,
        max_instances=pool.max_instances,
        scale_up_queue_threshold=pool.scale_up_queue_threshold,
        idle_minutes=pool.idle_minutes,
        slots_per_instance=pool.slots_per_instance,
    )


def preload_models(s: Session, pool: str) -> tuple[tuple[str, str], ...]:
    """The models of every tool the pool serves."""
    wanted: set[tuple[str, str]] = set()
    for tool in s.scalars(select(Tool).where(Tool.pool == pool)):
        try:
            graph = tool_from_dict(tool.spec).workflow
        except ValueError:
            continue
        wanted.update((m.folder, m.name) for m in required_models(graph))
    return tuple(sorted(wanted))


class PoolController:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        provider: ComputeProvider | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.provider = provider
        self.clock = clock

    def tick(self) -> None:
        if self.provider is None:
            return
        self.reconcile()
        self.destroy_finished()
        self.scale()

    def reconcile(self) -> None:
        assert self.provider is not None
        seen = self.provider.list()
        now = self.clock()
        with transaction(self.sessions) as s:
            rows = {
                i.provider_instance_id: i
                for i in s.scalars(select(Instance).where(Instance.provider == self.provider.name))
            }
            orphans: list[str] = []
            for p in seen:
                inst = rows.get(p.provider_id)
                if inst is None or inst.state == InstanceState.TERMINATED:
                    orphans.append(p.provider_id)
                elif not p.running and InstanceState(inst.state) != InstanceState.UNHEALTHY:
                    set_instance_state(s, inst, InstanceState.UNHEALTHY, "its processes exited", now)
            listed = {p.provider_id for p in seen}
            for pid, inst in rows.items():
                state = InstanceState(inst.state)
                if (
                    pid is not None
                    and pid not in listed
                    and state in LIVE_INSTANCE_STATES | {InstanceState.DRAINING}
                ):
                    set_instance_state(s, inst, InstanceState.UNHEALTHY, "the provider lost it", now)
        for pid in orphans:
            log.warning("destroying orphan instance %s", pid)
            self._destroy(pid)

    def _destroy(self, provider_id: str) -> bool:
        assert self.provider is not None
        try:
            self.provider.destroy(provider_id)
            return True
        except ProviderError as exc:
            log.error("could not destroy %s: %s", provider_id, exc)
            return False

    def destroy_finished(self) -> None:
        with transaction(self.sessions) as s:
            doomed = [
                (i.id, i.provider_instance_id, i.state)
                for i in s.scalars(
                    select(Instance).where(
                        Instance.state.in_([InstanceState.UNHEALTHY, InstanceState.DRAINING])
                    )
                )
                if i.state == InstanceState.UNHEALTHY or active_job_count(s, i.id) == 0
            ]
        for instance_id, provider_id, state in doomed:
            if provider_id is not None and not self._destroy(provider_id):
                continue
            with transaction(self.sessions) as s:
                inst = s.get(Instance, instance_id)
                if inst is not None and inst.state == state:
                    reason = "unhealthy, destroyed" if state == InstanceState.UNHEALTHY else "drained"
                    set_instance_state(s, inst, InstanceState.TERMINATED, reason, self.clock())

    def scale(self) -> None:
        assert self.provider is not None
        now = self.clock()
        launches: list[LaunchSpec] = []
        with transaction(self.sessions) as s:
            for pool in s.scalars(select(Pool).where(Pool.provider == self.provider.name)):
                instances = list(
                    s.scalars(
                        select(Instance).where(
                            Instance.pool == pool.name,
                            Instance.state.in_([st.value for st in LIVE_INSTANCE_STATES]),
                        )
                    )
                )
                views = [
                    InstanceView(i.id, InstanceState(i.state), active_job_count(s, i.id), i.idle_since)
                    for i in instances
                ]
                queued = (
                    s.scalar(
                        select(func.count())
                        .select_from(Job)
                        .where(Job.pool == pool.name, Job.state == JobState.QUEUED)
                    )
                    or 0
                )
                for action in plan_scaling(pool_config(pool), views, queued, now=now):
                    if isinstance(action, Launch):
                        launches.append(self._new_instance(s, pool, action.reason, now))
                    elif isinstance(action, Drain):
                        inst = s.get(Instance, action.instance_id)
                        if inst is not None:
                            set_instance_state(s, inst, InstanceState.DRAINING, action.reason, now)
        for spec in launches:
            self._launch(spec)

    def _new_instance(self, s: Session, pool: Pool, reason: str, now: datetime) -> LaunchSpec:
        token = new_secret(WORKER_TOKEN_PREFIX)
        inst = Instance(
            id=str(uuid.uuid4()),
            pool=pool.name,
            provider=pool.provider,
            provider_instance_id=None,
            state=InstanceState.PROVISIONING,
            state_reason=reason,
            token_hash=hash_secret(token),
            created_at=now,
            state_changed_at=now,
            info={},
        )
        s.add(inst)
        s.flush()
        s.add(
            InstanceTransition(
                instance_id=inst.id,
                from_state=None,
                to_state=InstanceState.PROVISIONING,
                reason=reason,
                at=now,
            )
        )
        return LaunchSpec(
            instance_id=inst.id,
            pool=pool.name,
            server_url=self.settings.base_url,
            worker_token=token,
            preload_models=preload_models(s, pool.name),
        )

    def _launch(self, spec: LaunchSpec) -> None:
        assert self.provider is not None
        try:
            provider_id = self.provider.launch(spec)
        except (ProviderError, OSError) as exc:
            with transaction(self.sessions) as s:
                inst = s.get(Instance, spec.instance_id)
                if inst is not None:
                    set_instance_state(
                        s, inst, InstanceState.UNHEALTHY, f"launch failed: {exc}", self.clock()
                    )
            return
        with transaction(self.sessions) as s:
            inst = s.get(Instance, spec.instance_id)
            if inst is not None:
                inst.provider_instance_id = provider_id
        log.info("launched instance %s in pool %s", spec.instance_id, spec.pool)

    def shutdown(self) -> None:
        """Stop every instance this provider runs for us (used when `up` exits)."""
        if self.provider is None:
            return
        now = self.clock()
        for p in self.provider.list():
            self._destroy(p.provider_id)
        with transaction(self.sessions) as s:
            for inst in s.scalars(select(Instance).where(Instance.provider == self.provider.name)):
                state = InstanceState(inst.state)
                if state == InstanceState.TERMINATED:
                    continue
                if state in {
                    InstanceState.IDLE,
                    InstanceState.BUSY,
                    InstanceState.INITIALIZING,
                    InstanceState.PROVISIONING,
                }:
                    set_instance_state(s, inst, InstanceState.UNHEALTHY, "control plane shut down", now)
                if InstanceState(inst.state) in {InstanceState.UNHEALTHY, InstanceState.DRAINING}:
                    set_instance_state(s, inst, InstanceState.TERMINATED, "control plane shut down", now)
