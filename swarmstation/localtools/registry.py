"""Which local tools exist (the tools that run on the control plane's side, not in ComfyUI), and
whether one can run with these settings.

The registry is code, not data: a local tool is a class in `localtools/llm.py` or
`localtools/images.py`. The `tools` table has a row for each (seeded by
`control/bootstrap.seed_tools`) so that listing, pricing and submission treat them like any
other tool; this module is what the executor (control/local_jobs.py) and the availability checks
(the tools API, pipeline validation) look tools up in.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from swarmstation.localtools.base import LocalTool
from swarmstation.localtools.images import IMAGE_TOOLS
from swarmstation.localtools.llm import LLM_TOOLS

if TYPE_CHECKING:
    from swarmstation.config import Settings

__all__ = ["local_tool", "local_tools", "unavailable_reason"]


@cache
def _by_slug() -> dict[str, LocalTool]:
    tools: dict[str, LocalTool] = {}
    for tool in [*LLM_TOOLS, *IMAGE_TOOLS]:
        slug = tool.spec.slug
        if slug in tools:  # two modules claiming one slug is a programming error, caught by tests
            raise RuntimeError(f"local tool {slug!r} is defined twice")
        tools[slug] = tool
    return tools


def local_tools() -> dict[str, LocalTool]:
    """Every local tool by slug (a fresh dict: callers may not change the registry)."""
    return dict(_by_slug())


def local_tool(slug: str) -> LocalTool | None:
    """The local tool `slug`, or None (a ComfyUI tool, or no tool at all)."""
    return _by_slug().get(slug)


def unavailable_reason(slug: str, settings: Settings) -> str | None:
    """Why tool `slug` cannot run with these settings ("no LLM endpoint is configured: ..."), or
    None: a ComfyUI tool (its availability is the pool's business) or a local tool that can run."""
    tool = local_tool(slug)
    return None if tool is None else tool.unavailable(settings)
