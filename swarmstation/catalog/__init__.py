"""The bundled tool templates: one ``<slug>.json`` file per tool, in :func:`tool_to_dict` form."""

from __future__ import annotations

import json
from importlib import resources

from swarmstation.domain.tools import ToolDefinitionError, ToolSpec, tool_from_dict, validate_tool

__all__ = ["bundled_tools"]


def bundled_tools() -> list[ToolSpec]:
    """Load, validate and return every bundled tool, sorted by slug.

    Raises :class:`ToolDefinitionError` (its ``field`` prefixed with the file name) when a file
    is not valid JSON, is not a valid tool, or is not named after its slug.
    """
    tools: list[ToolSpec] = []
    files = sorted(
        (entry for entry in resources.files(__name__).iterdir() if entry.name.endswith(".json")),
        key=lambda entry: entry.name,
    )
    for entry in files:
        try:
            data = json.loads(entry.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ToolDefinitionError(entry.name, f"not valid JSON: {exc}") from None
        try:
            spec = tool_from_dict(data)
            validate_tool(spec)
        except ToolDefinitionError as exc:
            raise ToolDefinitionError(f"{entry.name}: {exc.field}", exc.reason) from None
        if entry.name != f"{spec.slug}.json":
            raise ToolDefinitionError(entry.name, f"the file must be named {spec.slug}.json")
        tools.append(spec)
    return sorted(tools, key=lambda spec: spec.slug)
