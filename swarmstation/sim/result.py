"""What one policy's run over a trace produced."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PolicyResult:
    policy: str
    jobs: int
    completed: int
    cost: float
    waits: list[float]  # queued -> run start, per completed job (trace order)
    cold_starts: int = 0
    cache_hits: int = 0
    cache_lookups: int = 0
    run_seconds: float = 0.0
    instance_seconds: float = 0.0
    launches: int = 0
    never_ready: int = 0
    parks: int = 0
    resumes: int = 0
    resume_failures: int = 0  # resumes given up at the resume timeout
    resumes_given_up_slow: int = 0  # of those, ones that would have come up later than the timeout
    outbids: int = 0
    deaths: int = 0
    requeued: int = 0
    downloaded_bytes: int = 0
    unattributed_cost: float = 0.0
    first_ready_at: float | None = None
    waits_after_first_start: list[float] = field(default_factory=list)
    series: list[tuple[float, int, int]] = field(default_factory=list)  # (t, queued, live instances)
    sim_seconds: float = 0.0
    notes: str = ""
