"""The chat agent's planner: pure, a snapshot of the catalog and the conversation in, one decision out
(see :mod:`swarmstation.domain.agent.types`)."""

from swarmstation.domain.agent.planner import decide

__all__ = ["decide"]
