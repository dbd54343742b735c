"""A small fake ComfyUI server that speaks the real HTTP and WebSocket API, with Pillow instead
of a GPU (mirrors ComfyUI's ``server.py``, ``execution.py`` and ``main.py`` at
``COMFYUI_VERSION``, first ported from 0.3.64; the protocol is described in section 1 of the
shared protocol reference).

One module per part, as ComfyUI splits them:

* ``validate`` — ``execution.validate_prompt``: the same rules and error shapes;
* ``execute`` — the prompt queue, ComfyUI's execution order, the node-output cache, messages;
* ``server`` — the aiohttp routes and WebSocket over one executor; how to run it;
* ``nodes`` — the node classes, value types, model folders and the fake image generation.

This module names the public API (what the CLI, the local provider and the tests use).
"""

from swarmstation.comfy.emulator.execute import EmulatorConfig
from swarmstation.comfy.emulator.server import (
    COMFYUI_VERSION,
    create_emulator_app,
    run_emulator,
    running_emulator,
)

__all__ = ["COMFYUI_VERSION", "EmulatorConfig", "create_emulator_app", "run_emulator", "running_emulator"]
