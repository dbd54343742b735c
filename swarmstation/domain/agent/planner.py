"""The offline planner: a request and a conversation snapshot in, one decision out.

Pure: no clock, no randomness (a new seed comes from ``context.seed``), no I/O.
"""

from __future__ import annotations

from swarmstation.domain.agent.types import Abstain, Context, Decision, Proposal, Retriever

__all__ = ["decide"]


def decide(text: str, context: Context, *, retriever: Retriever | None = None) -> Decision:
    """What to do with the user's message ``text`` given ``context`` (first version: text to
    image with the first available text-to-image tool)."""
    slugs = [t.spec.slug for t in context.catalog if t.available and t.spec.category == "text-to-image"]
    if not slugs or not text.strip():
        return Abstain("no tool can serve this request")
    slug = "sdxl-txt2img" if "sdxl-txt2img" in slugs else slugs[0]
    pipeline = {"inputs": {}, "steps": {"gen": {"tool": slug, "inputs": {"prompt": text.strip()}}}}
    return Proposal(pipeline=pipeline, chain=(slug,), params={}, explanation=f"{slug} from your prompt")
