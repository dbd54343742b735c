"""A failure of the machine is not the job's failure: when it spends an attempt, when it trips.

A worker reports a failure as *infrastructure* when its own machine is at fault (ComfyUI gone,
its disk): the job goes back to the queue without spending an attempt, up to a bound so that no
job bounces forever, and the instance counts the failure. An instance that fails
`threshold` jobs in a row this way is taken out of routing at once (UNHEALTHY, then replaced),
instead of failing the queue until its heartbeats give it away. Any other outcome of a job on
the instance (completed, or failed for the job's own reasons) shows that the machine works and
resets the count.
"""

from __future__ import annotations


def breaker_trips(consecutive_failures: int, threshold: int) -> bool:
    """Whether an instance with this many machine failures in a row is taken out."""
    return consecutive_failures >= threshold


def keeps_attempt(infra_requeues: int, max_infra_requeues: int) -> bool:
    """Whether a job failed by its machine goes back to the queue without spending an attempt;
    past the bound it is an ordinary retryable failure (which the attempts bound)."""
    return infra_requeues < max_infra_requeues
