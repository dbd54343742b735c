from __future__ import annotations

import pytest

from swarmstation.catalog import bundled_tools
from swarmstation.domain.agent.examples import EXAMPLES
from swarmstation.domain.agent.types import CatalogTool
from swarmstation.domain.tools import ToolSpec
from swarmstation.localtools.registry import local_tools


def specs() -> dict[str, ToolSpec]:
    return {s.slug: s for s in [*bundled_tools(), *(t.spec for t in local_tools().values())]}


@pytest.fixture(scope="session")
def catalog() -> list[CatalogTool]:
    """The bundled catalog as the planner sees it, every tool available."""
    return [CatalogTool(spec, True, EXAMPLES.get(slug, ())) for slug, spec in sorted(specs().items())]
