"""Lifecycles (jobs, instances, and those that register here) kept as tables.

Theory of operation
-------------------
A lifecycle is a set of states, a set of *triggers* (the events that move a row: `ASSIGN`,
`LEASE_EXPIRED`, `BREAKER_TRIPPED`, ...) and one table, `(state, trigger) -> next state`. A
missing key *is* the illegal transition: `Lifecycle.apply` raises `IllegalTransition` naming the
lifecycle, the state, the target and the trigger, and leaves the row as it was. Keying by trigger
and not only by target means a change records *why* it happened: a RUNNING job goes back to
QUEUED on `LEASE_EXPIRED`, `INSTANCE_LOST`, `MACHINE_FAILED` or `RETRY`, and the event row says
which.

Everything that decides whether a state change is legal lives in this module, and nothing else
assigns a `state` attribute: `control/jobs.py`, `control/instances.py` (database rows) and the
simulator (its own in-memory rows) all call `apply`. Other lifecycles (LoRA moderation, holds,
pipeline runs) are built the same way and `register` into `ALL_TABLES`, from which
`domain/diagrams.py` draws docs/states.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from swarmstation.domain.errors import IllegalTransition

__all__ = [
    "ALL_TABLES",
    "INSTANCE",
    "JOB",
    "LEASED_JOB_STATES",
    "LIVE_INSTANCE_STATES",
    "SCHEDULABLE_INSTANCE_STATES",
    "TERMINAL_JOB_STATES",
    "IllegalTransition",
    "InstanceState",
    "InstanceTrigger",
    "JobState",
    "JobTrigger",
    "Lifecycle",
    "Rule",
    "register",
]

S = TypeVar("S", bound=StrEnum)
T = TypeVar("T", bound=StrEnum)


class Stateful(Protocol[S]):
    """Anything with a `state`: a database row, or one of the simulator's instances."""

    state: S


@dataclass(frozen=True)
class Rule(Generic[S, T]):
    """`trigger` moves a row in any of `sources` to `target`."""

    sources: tuple[S, ...]
    trigger: T
    target: S
    why: str = ""  # one line for the documentation


class Lifecycle(Generic[S, T]):
    """A state machine as a table. Rules are kept in the order given (the diagrams follow it)."""

    def __init__(
        self,
        kind: str,
        states: type[S],
        triggers: type[T],
        *,
        initial: S,
        rules: Sequence[Rule[S, T]],
        about: str = "",
    ) -> None:
        self.kind = kind
        self.states: tuple[S, ...] = tuple(states)
        self.triggers: tuple[T, ...] = tuple(triggers)
        self.initial = initial
        self.rules: tuple[Rule[S, T], ...] = tuple(rules)
        self.about = about
        table: dict[tuple[S, T], S] = {}
        for rule in self.rules:
            for source in rule.sources:
                if (source, rule.trigger) in table:
                    raise ValueError(f"{kind}: {source} has two rules for {rule.trigger}")
                table[(source, rule.trigger)] = rule.target
        unused = set(self.triggers) - {rule.trigger for rule in self.rules}
        if unused:
            raise ValueError(f"{kind}: triggers without a rule: {sorted(unused)}")
        self.table: Mapping[tuple[S, T], S] = table

    def can(self, current: S, trigger: T) -> bool:
        return (current, trigger) in self.table

    def targets(self, trigger: T) -> frozenset[S]:
        """Where `trigger` leads from any state."""
        return frozenset(rule.target for rule in self.rules if rule.trigger == trigger)

    def next_state(self, current: S, trigger: T) -> S:
        try:
            return self.table[(current, trigger)]
        except KeyError:
            wanted = "/".join(sorted(self.targets(trigger))) or "?"
            raise IllegalTransition(self.kind, current, f"{wanted} on {trigger}") from None

    def apply(self, row: Stateful[S], trigger: T) -> S:
        """Move `row` by `trigger` and return the state it left; an illegal pair raises
        `IllegalTransition` with the row unchanged."""
        current = row.state
        row.state = self.next_state(current, trigger)
        return current

    @property
    def terminal(self) -> frozenset[S]:
        """States no rule leaves."""
        leaving = {source for source, _ in self.table}
        return frozenset(st for st in self.states if st not in leaving)


# Every lifecycle, by kind: the diagrams and the walk-the-table tests read this.
ALL_TABLES: dict[str, Lifecycle[Any, Any]] = {}


def register(lifecycle: Lifecycle[S, T]) -> Lifecycle[S, T]:
    if lifecycle.kind in ALL_TABLES:
        raise ValueError(f"a lifecycle named {lifecycle.kind} is already registered")
    ALL_TABLES[lifecycle.kind] = lifecycle
    return lifecycle


# -- jobs -------------------------------------------------------------------------------------


class JobState(StrEnum):
    QUEUED = "QUEUED"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class JobTrigger(StrEnum):
    ASSIGN = "ASSIGN"
    START = "START"
    COMPLETE = "COMPLETE"
    FAIL = "FAIL"
    CANCEL = "CANCEL"
    RETRY = "RETRY"
    LEASE_EXPIRED = "LEASE_EXPIRED"
    INSTANCE_LOST = "INSTANCE_LOST"
    MACHINE_FAILED = "MACHINE_FAILED"


_Q, _A, _R = JobState.QUEUED, JobState.ASSIGNED, JobState.RUNNING

JOB: Lifecycle[JobState, JobTrigger] = register(
    Lifecycle(
        "job",
        JobState,
        JobTrigger,
        initial=JobState.QUEUED,
        about="An assignment is a lease with a fencing token; a lease that ends early sends the "
        "job back to the queue, saying why.",
        rules=[
            Rule((_Q,), JobTrigger.ASSIGN, _A, "a lease on an instance (or the external backend)"),
            Rule((_A,), JobTrigger.START, _R, "the worker reports it running"),
            Rule((_A, _R), JobTrigger.COMPLETE, JobState.COMPLETED, "outputs uploaded"),
            Rule((_Q, _A, _R), JobTrigger.FAIL, JobState.FAILED, "its own error, or no attempts left"),
            Rule((_Q, _A, _R), JobTrigger.CANCEL, JobState.CANCELLED, "its owner cancelled it"),
            Rule((_A, _R), JobTrigger.RETRY, _Q, "a retryable failure, attempts left"),
            Rule((_A, _R), JobTrigger.LEASE_EXPIRED, _Q, "no report before the lease ran out"),
            Rule((_A, _R), JobTrigger.INSTANCE_LOST, _Q, "its instance stopped answering"),
            Rule(
                (_A, _R), JobTrigger.MACHINE_FAILED, _Q, "the machine failed, not the job: no attempt spent"
            ),
        ],
    )
)

TERMINAL_JOB_STATES = JOB.terminal
LEASED_JOB_STATES = frozenset({JobState.ASSIGNED, JobState.RUNNING})


# -- instances --------------------------------------------------------------------------------


class InstanceState(StrEnum):
    PROVISIONING = "PROVISIONING"
    INITIALIZING = "INITIALIZING"
    IDLE = "IDLE"
    BUSY = "BUSY"
    DRAINING = "DRAINING"
    STOPPED = "STOPPED"  # parked: stopped at the provider with its disk (and model cache) kept
    UNHEALTHY = "UNHEALTHY"
    TERMINATED = "TERMINATED"


class InstanceTrigger(StrEnum):
    STARTED = "STARTED"
    READY = "READY"
    ASSIGN = "ASSIGN"
    RELEASE = "RELEASE"
    PARK = "PARK"
    RESUME = "RESUME"
    DRAIN = "DRAIN"
    # what makes an instance UNHEALTHY
    STARTUP_TIMEOUT = "STARTUP_TIMEOUT"
    LAUNCH_FAILED = "LAUNCH_FAILED"
    BOOTSTRAP_FAILED = "BOOTSTRAP_FAILED"
    HEARTBEAT_LOST = "HEARTBEAT_LOST"
    COMFY_DOWN = "COMFY_DOWN"
    BREAKER_TRIPPED = "BREAKER_TRIPPED"
    INSTANCE_LOST = "INSTANCE_LOST"
    SHUTDOWN = "SHUTDOWN"
    RECOVER = "RECOVER"
    DESTROY = "DESTROY"
    DETACH = "DETACH"


_PROV, _INIT, _IDLE, _BUSY = (
    InstanceState.PROVISIONING,
    InstanceState.INITIALIZING,
    InstanceState.IDLE,
    InstanceState.BUSY,
)
_DRAINING, _STOPPED, _UNHEALTHY = InstanceState.DRAINING, InstanceState.STOPPED, InstanceState.UNHEALTHY
# Anything alive can be found unhealthy.
_CAN_FAIL = (_PROV, _INIT, _IDLE, _BUSY, _DRAINING, _STOPPED)
# BUSY never goes straight to TERMINATED: a busy instance is drained first, or found unhealthy.
_CAN_END = (_PROV, _INIT, _IDLE, _DRAINING, _STOPPED, _UNHEALTHY)
_I = InstanceTrigger

INSTANCE: Lifecycle[InstanceState, InstanceTrigger] = register(
    Lifecycle(
        "instance",
        InstanceState,
        InstanceTrigger,
        initial=InstanceState.PROVISIONING,
        about="Never terminated while running a job unless unhealthy: drained first. A rented "
        "UNHEALTHY instance is destroyed and replaced; an attached (static) one comes back.",
        rules=[
            Rule((_PROV,), _I.STARTED, _INIT, "its worker or bootstrap script reports in"),
            Rule((_PROV, _INIT), _I.READY, _IDLE, "ComfyUI answers"),
            Rule((_IDLE,), _I.ASSIGN, _BUSY, "a job is assigned"),
            Rule((_BUSY,), _I.RELEASE, _IDLE, "its last job left"),
            Rule((_IDLE,), _I.PARK, _STOPPED, "stopped at the provider, disk kept"),
            # it starts again like a new one: PROVISIONING until its worker registers
            Rule((_STOPPED,), _I.RESUME, _PROV, "a parked instance is started again"),
            Rule((_INIT, _IDLE, _BUSY, _STOPPED), _I.DRAIN, _DRAINING, "finish its jobs, then go"),
            Rule(_CAN_FAIL, _I.STARTUP_TIMEOUT, _UNHEALTHY, "not ready in time after launch or resume"),
            Rule(_CAN_FAIL, _I.LAUNCH_FAILED, _UNHEALTHY, "the provider refused the launch or resume"),
            Rule(_CAN_FAIL, _I.BOOTSTRAP_FAILED, _UNHEALTHY, "a bootstrap stage failed"),
            Rule(_CAN_FAIL, _I.HEARTBEAT_LOST, _UNHEALTHY, "no heartbeat in time"),
            Rule(_CAN_FAIL, _I.COMFY_DOWN, _UNHEALTHY, "ComfyUI has not answered for too long"),
            Rule(_CAN_FAIL, _I.BREAKER_TRIPPED, _UNHEALTHY, "jobs failed in a row for machine reasons"),
            Rule(_CAN_FAIL, _I.INSTANCE_LOST, _UNHEALTHY, "the provider lost it or reports it not running"),
            Rule(_CAN_FAIL, _I.SHUTDOWN, _UNHEALTHY, "the control plane shut its instances down"),
            Rule((_UNHEALTHY,), _I.RECOVER, _IDLE, "an attached machine is healthy again"),
            Rule(_CAN_END, _I.DESTROY, InstanceState.TERMINATED, "destroyed at the provider"),
            Rule(_CAN_END, _I.DETACH, InstanceState.TERMINATED, "an attached machine is detached"),
        ],
    )
)

# Instances that exist at the provider and will take (or are taking) work.
LIVE_INSTANCE_STATES = frozenset({_PROV, _INIT, _IDLE, _BUSY})
# Instances a scheduler may hand a job to.
SCHEDULABLE_INSTANCE_STATES = frozenset({_IDLE, _BUSY})
