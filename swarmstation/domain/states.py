"""Job and instance states, and the transitions between them, kept as tables.

Everything that decides whether a state change is legal lives in this module. A missing key in a
table *is* the illegal transition: `require_transition` raises naming the object, the state and
the target, and the caller's state is left as it was. The same tables drive the API's
documentation of the states.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "QUEUED"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class InstanceState(StrEnum):
    PROVISIONING = "PROVISIONING"
    INITIALIZING = "INITIALIZING"
    IDLE = "IDLE"
    BUSY = "BUSY"
    DRAINING = "DRAINING"
    STOPPED = "STOPPED"  # parked: stopped at the provider with its disk (and model cache) kept
    UNHEALTHY = "UNHEALTHY"
    TERMINATED = "TERMINATED"


JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.ASSIGNED, JobState.CANCELLED, JobState.FAILED}),
    # An assignment is a lease: it can start running, or go back to the queue when the lease
    # expires or the instance dies.
    JobState.ASSIGNED: frozenset(
        {JobState.RUNNING, JobState.QUEUED, JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.RUNNING: frozenset({JobState.COMPLETED, JobState.FAILED, JobState.QUEUED, JobState.CANCELLED}),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}

INSTANCE_TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    InstanceState.PROVISIONING: frozenset(
        {InstanceState.INITIALIZING, InstanceState.IDLE, InstanceState.UNHEALTHY, InstanceState.TERMINATED}
    ),
    InstanceState.INITIALIZING: frozenset(
        {InstanceState.IDLE, InstanceState.UNHEALTHY, InstanceState.DRAINING, InstanceState.TERMINATED}
    ),
    InstanceState.IDLE: frozenset(
        {
            InstanceState.BUSY,
            InstanceState.DRAINING,
            InstanceState.STOPPED,
            InstanceState.UNHEALTHY,
            InstanceState.TERMINATED,
        }
    ),
    # BUSY never goes straight to TERMINATED: a busy instance is drained first, or found unhealthy.
    InstanceState.BUSY: frozenset({InstanceState.IDLE, InstanceState.DRAINING, InstanceState.UNHEALTHY}),
    InstanceState.DRAINING: frozenset({InstanceState.TERMINATED, InstanceState.UNHEALTHY}),
    # A parked instance is resumed (it starts again like a new one: PROVISIONING until its worker
    # registers), drained to be destroyed, or lost by the provider.
    InstanceState.STOPPED: frozenset(
        {
            InstanceState.PROVISIONING,
            InstanceState.DRAINING,
            InstanceState.UNHEALTHY,
            InstanceState.TERMINATED,
        }
    ),
    # A rented instance that is UNHEALTHY is destroyed and replaced; an attached (static) one stays
    # registered and comes back when its worker heartbeats healthy (providers/static.py decides).
    InstanceState.UNHEALTHY: frozenset({InstanceState.TERMINATED, InstanceState.IDLE}),
    InstanceState.TERMINATED: frozenset(),
}

TERMINAL_JOB_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
LEASED_JOB_STATES = frozenset({JobState.ASSIGNED, JobState.RUNNING})
# Instances that exist at the provider and will take (or are taking) work.
LIVE_INSTANCE_STATES = frozenset(
    {InstanceState.PROVISIONING, InstanceState.INITIALIZING, InstanceState.IDLE, InstanceState.BUSY}
)
# Instances a scheduler may hand a job to.
SCHEDULABLE_INSTANCE_STATES = frozenset({InstanceState.IDLE, InstanceState.BUSY})


class IllegalTransition(ValueError):
    def __init__(self, kind: str, current: str, target: str) -> None:
        super().__init__(f"{kind} cannot go from {current} to {target}")
        self.kind = kind
        self.current = current
        self.target = target


def can_transition_job(current: JobState, target: JobState) -> bool:
    return target in JOB_TRANSITIONS[current]


def can_transition_instance(current: InstanceState, target: InstanceState) -> bool:
    return target in INSTANCE_TRANSITIONS[current]


def require_job_transition(current: JobState, target: JobState) -> None:
    if not can_transition_job(current, target):
        raise IllegalTransition("job", current, target)


def require_instance_transition(current: InstanceState, target: InstanceState) -> None:
    if not can_transition_instance(current, target):
        raise IllegalTransition("instance", current, target)
