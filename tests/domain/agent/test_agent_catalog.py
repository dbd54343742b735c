"""control/agent_catalog.py: the tools table as the planner sees it (availability, examples)."""

from __future__ import annotations

from typing import Any

from swarmstation.control.agent_catalog import catalog_for_agent
from swarmstation.store.db import transaction


def test_the_seeded_catalog_with_and_without_an_llm(plane: Any) -> None:
    settings = plane.state.settings
    with transaction(plane.state.sessions) as s:
        tools = {t.spec.slug: t for t in catalog_for_agent(s, settings)}
        with_llm = {
            t.spec.slug: t
            for t in catalog_for_agent(
                s, settings.model_copy(update={"llm_base_url": "http://127.0.0.1:9/v1"})
            )
        }
    assert {"sdxl-txt2img", "upscale-4x", "caption", "prompt-enhance", "image-resize"} <= set(tools)
    assert list(tools) == sorted(tools)
    assert tools["sdxl-txt2img"].available and tools["image-crop"].available
    assert not tools["caption"].available and not tools["prompt-enhance"].available  # no LLM endpoint
    assert with_llm["caption"].available and with_llm["prompt-enhance"].available
    assert tools["upscale-4x"].examples and tools["upscale-4x"].spec.outputs[0].type == "image"
