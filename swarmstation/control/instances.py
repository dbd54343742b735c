"""Instance rows: state changes with their history, and what counts as alive.

Every change of an instance's state goes through `move_instance`, which applies a trigger through
the domain's table (`domain.states.INSTANCE`) and records the transition with its trigger and
reason (shown to admins as the instance's history, and used by the cost reports)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from swarmstation.domain.breaker import breaker_trips
from swarmstation.domain.states import INSTANCE, InstanceState, InstanceTrigger
from swarmstation.store.models import Instance, InstanceTransition


def move_instance(s: Session, inst: Instance, trigger: InstanceTrigger, reason: str, now: datetime) -> bool:
    """Move `inst` by `trigger`, recording the transition. Returns False when it is already where
    the trigger leads (found UNHEALTHY twice: the first reason stays); an illegal trigger raises
    `IllegalTransition` and changes nothing."""
    if inst.state in INSTANCE.targets(trigger) and not INSTANCE.can(inst.state, trigger):
        return False
    current = INSTANCE.apply(inst, trigger)
    target = inst.state
    s.add(
        InstanceTransition(
            instance_id=inst.id, from_state=current, to_state=target, trigger=trigger, reason=reason, at=now
        )
    )
    inst.state_reason = reason
    inst.state_changed_at = now
    if target == InstanceState.IDLE:
        inst.idle_since = now
        if inst.ready_at is None:
            inst.ready_at = now
    elif target == InstanceState.BUSY:
        inst.idle_since = None
    elif target == InstanceState.TERMINATED:
        inst.terminated_at = now
    return True


def transitions(s: Session, instance_id: str) -> list[InstanceTransition]:
    return list(
        s.scalars(
            select(InstanceTransition)
            .where(InstanceTransition.instance_id == instance_id)
            .order_by(InstanceTransition.id)
        )
    )


def record_infrastructure_failure(s: Session, inst: Instance, *, threshold: int, now: datetime) -> bool:
    """Count a job this instance failed because of its machine; past `threshold` in a row the
    circuit breaker takes it out of routing (UNHEALTHY: the pool replaces it). True when it trips."""
    inst.consecutive_infra_failures = (inst.consecutive_infra_failures or 0) + 1
    if not breaker_trips(inst.consecutive_infra_failures, threshold):
        return False
    if not INSTANCE.can(inst.state, InstanceTrigger.BREAKER_TRIPPED):
        return False  # already out (UNHEALTHY, TERMINATED)
    reason = f"failed {inst.consecutive_infra_failures} jobs in a row for machine reasons"
    return move_instance(s, inst, InstanceTrigger.BREAKER_TRIPPED, reason, now)


def record_machine_worked(inst: Instance) -> None:
    """A job ended on this instance for reasons of its own (completed, or the job's own error)."""
    inst.consecutive_infra_failures = 0
