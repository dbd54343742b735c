"""The catalog as the chat agent's planner sees it: every tool in the `tools` table, whether it
can run with these settings (a local LLM tool needs an endpoint), and its example requests."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from swarmstation.config import Settings
from swarmstation.domain.agent.examples import EXAMPLES
from swarmstation.domain.agent.types import CatalogTool
from swarmstation.domain.tools import ToolDefinitionError, ToolSpec, tool_from_dict
from swarmstation.localtools.registry import unavailable_reason
from swarmstation.store.models import Tool

__all__ = ["catalog_for_agent", "catalog_from_specs"]


def catalog_from_specs(specs: list[ToolSpec], settings: Settings | None = None) -> list[CatalogTool]:
    """Specs as planner tools, sorted by slug; ``settings`` None: every tool counts as available."""
    return [
        CatalogTool(
            spec=spec,
            available=settings is None or unavailable_reason(spec.slug, settings) is None,
            examples=EXAMPLES.get(spec.slug, ()),
        )
        for spec in sorted(specs, key=lambda spec: spec.slug)
    ]


def catalog_for_agent(session: Session, settings: Settings) -> list[CatalogTool]:
    """Every tool of the `tools` table as the planner sees it (a row whose spec no longer reads
    is left out rather than failing the conversation)."""
    specs: list[ToolSpec] = []
    for row in session.scalars(select(Tool).order_by(Tool.slug)):
        try:
            specs.append(tool_from_dict(row.spec))
        except ToolDefinitionError:
            continue
    return catalog_from_specs(specs, settings)
