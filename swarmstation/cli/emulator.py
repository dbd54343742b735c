"""`swarmstation comfy-emulator`: the ComfyUI emulator in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer()


@app.command("comfy-emulator")
def comfy_emulator(
    port: Annotated[int, typer.Option("--port")] = 8188,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    base_dir: Annotated[Path, typer.Option("--base-dir", help="Folder with models/, input/, output/")] = Path(
        "comfyui"
    ),
    step_seconds: Annotated[float, typer.Option("--step-seconds", min=0)] = 0.05,
    model_load_seconds: Annotated[float, typer.Option("--model-load-seconds", min=0)] = 0.2,
    preload_models: Annotated[
        str,
        typer.Option(
            "--preload-models",
            envvar="SWARMSTATION_PRELOAD_MODELS",
            help="JSON list of the pool's preload models, written as placeholder files",
        ),
    ] = "[]",
) -> None:
    """Run the ComfyUI emulator: the real ComfyUI API, with Pillow instead of a GPU."""
    from swarmstation.comfy.emulator import EmulatorConfig, run_emulator
    from swarmstation.providers.local import parse_preload_env, write_placeholder_models

    # An emulated instance "has" the pool's preload models: placeholder files, since it loads none.
    write_placeholder_models(base_dir, parse_preload_env(preload_models))
    run_emulator(
        host,
        port,
        EmulatorConfig(base_dir=base_dir, step_seconds=step_seconds, model_load_seconds=model_load_seconds),
    )
