"""How instances come up, from what the control plane has seen of earlier starts: when to give up
on a resume, and how likely a start is to end with a ready worker. Pure: observations in,
decisions out.

The live pool loop (``control/pools.py``, reading the instance transitions table) and the simulator
(``sim/pool.py``, from its own simulated transitions) call these functions with the same kind of
observations, :class:`StartOutcome`: when a start (a launch, or a resume of a parked instance)
began and how it ended (ready after so many seconds, or given up). Neither knows why a start
failed; both see only that no worker registered.

Early give-up of a resume (``resume_give_up_seconds``). A resumed instance whose worker has not
registered is given up (UNHEALTHY, destroyed, replaced) once it is past a bound derived from the
pool's own past resumes: ``factor`` times the median of the last ``window`` successful resume
times, at least ``min_seconds``, at most the hard ``resume_timeout_seconds``. Until
``min_samples`` resumes have succeeded, ``fallback_seconds`` (a setting) stands in. The median, not
a high percentile: the resumes seen succeed are only those that came up within the bound, so a
bound from their 90th percentile shrinks itself (each bound cuts off the slow tail the next one is
estimated from; in the simulator it fell to the minimum within days); the median barely moves
when the tail beyond three medians is cut. A resume that would have come up later than the bound
is lost by this (replaced like a failed one): with the simulator's lognormal resume time (sigma
0.5) 1.4% of the successful ones at factor 3, against the rest of the hard timeout saved on each
failed one.

Start success (``start_success``). The share of the last ``window`` finished starts of one kind
that ended ready, smoothed towards ``prior`` with the weight of ``prior_weight`` starts (so one
early failure does not read as "every launch fails"), and never below ``floor``. Scaling
(``domain.scaling``) counts an instance still starting as that share of its slots, so when two of
five launches usually fail it asks for more of them, within ``max_instances`` and the spend cap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from swarmstation.domain.states import InstanceState, InstanceTrigger
from swarmstation.domain.stats import percentile

__all__ = [
    "StartConfig",
    "StartKind",
    "StartOutcome",
    "Transition",
    "outcomes_from_transitions",
    "resume_give_up_seconds",
    "resume_overdue",
    "start_success",
]


class StartKind(StrEnum):
    LAUNCH = "launch"
    RESUME = "resume"


@dataclass(frozen=True)
class StartOutcome:
    """One finished start: ``ready_after_seconds`` from its start to a ready worker, None when it
    was given up (timed out, failed at the provider, lost before it was ready)."""

    kind: StartKind
    started_at: float  # epoch seconds (the simulator's virtual seconds)
    ready_after_seconds: float | None

    @property
    def ready(self) -> bool:
        return self.ready_after_seconds is not None


@dataclass(frozen=True)
class StartConfig:
    """The knobs of both estimates; the live values come from ``Settings``
    (``resume_heartbeat_timeout_seconds``, ``resume_give_up_factor``, ``resume_timeout_seconds``,
    ``start_success_window``)."""

    resume_timeout_seconds: float = 240.0  # the hard bound (Settings.resume_timeout_seconds)
    fallback_seconds: float = 120.0  # the bound until min_samples resumes have succeeded
    factor: float = 3.0  # times the median of past successful resume times
    min_seconds: float = 60.0
    min_samples: int = 5
    window: int = 50  # the last this many outcomes of a kind count
    prior: float = 0.8  # start success before any is seen
    prior_weight: float = 2.0  # worth this many observed starts
    floor: float = 0.2  # never count a start as less likely than this


def _recent(outcomes: Iterable[StartOutcome], kind: StartKind, window: int) -> list[StartOutcome]:
    mine = sorted((o for o in outcomes if o.kind == kind), key=lambda o: o.started_at)
    return mine[-window:] if window > 0 else mine


def resume_give_up_seconds(outcomes: Iterable[StartOutcome], config: StartConfig) -> float:
    """How long a resumed instance may go without a ready worker before it is given up."""
    hard = config.resume_timeout_seconds
    times: Sequence[float] = [
        o.ready_after_seconds
        for o in _recent(outcomes, StartKind.RESUME, config.window)
        if o.ready_after_seconds is not None
    ]
    if len(times) < max(1, config.min_samples):
        bound = config.fallback_seconds
    else:
        bound = max(config.min_seconds, config.factor * percentile(times, 0.50))
    return min(hard, bound)


def resume_overdue(elapsed_seconds: float, give_up_seconds: float) -> bool:
    """Whether a resume that started ``elapsed_seconds`` ago and has no ready worker is given up."""
    return elapsed_seconds > give_up_seconds


def start_success(outcomes: Iterable[StartOutcome], kind: StartKind, config: StartConfig) -> float:
    """The chance that a start of ``kind`` ends with a ready worker (see the module docstring)."""
    recent = _recent(outcomes, kind, config.window)
    ready = sum(1 for o in recent if o.ready)
    share = (ready + config.prior * config.prior_weight) / (len(recent) + config.prior_weight)
    return max(config.floor, min(1.0, share))


@dataclass(frozen=True)
class Transition:
    """One row of an instance's history, as the live control plane records it: ``from_state``
    None on the row that records its creation (a launch), ``trigger`` RESUME on a resume."""

    instance_id: str
    from_state: InstanceState | None
    to_state: InstanceState
    trigger: InstanceTrigger | None
    at: float  # epoch seconds


_GIVEN_UP = frozenset({InstanceState.UNHEALTHY, InstanceState.TERMINATED})


def outcomes_from_transitions(rows: Iterable[Transition]) -> list[StartOutcome]:
    """The finished starts in instance histories (each instance's rows in the order they happened):
    a start begins at its creation or a RESUME and ends ready at its first move to IDLE, or given
    up at a move to UNHEALTHY or TERMINATED before that. Starts still under way are left out."""
    open_starts: dict[str, tuple[StartKind, float]] = {}
    out: list[StartOutcome] = []
    for row in rows:
        if row.from_state is None:
            open_starts[row.instance_id] = (StartKind.LAUNCH, row.at)
            continue
        if row.trigger == InstanceTrigger.RESUME:
            open_starts[row.instance_id] = (StartKind.RESUME, row.at)
            continue
        started = open_starts.get(row.instance_id)
        if started is None:
            continue
        kind, began = started
        if row.to_state == InstanceState.IDLE:
            out.append(StartOutcome(kind, began, max(0.0, row.at - began)))
            del open_starts[row.instance_id]
        elif row.to_state in _GIVEN_UP:
            out.append(StartOutcome(kind, began, None))
            del open_starts[row.instance_id]
    return out
