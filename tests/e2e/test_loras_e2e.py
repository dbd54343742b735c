"""End to end: import a LoRA from (fake) Civitai, approve it, and generate with its trigger word;
the worker fetches the staged file into the emulated ComfyUI, which validates it like ComfyUI."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.e2e.conftest import Up, wait_for
from tests.fakes.model_hubs import FakeHubs

pytestmark = pytest.mark.slow


def test_trigger_word_generation_fetches_the_lora(up_factory) -> None:  # type: ignore[no-untyped-def]
    hubs = FakeHubs().start()
    content = hubs.add_civitai_lora(
        7, 70, name="Ink Wash", trained_words=["ink wash painting"], base_model="SDXL 1.0"
    )
    try:
        up: Up = up_factory(civitai_base_url=hubs.url, emulator_step_seconds=0.01)
        up.start()
        imported = up.cli("loras", "import", f"{hubs.url}/models/7", "--json")
        assert imported.returncode == 0, imported.stderr
        slug = json.loads(imported.stdout)["slug"]
        # Approval answers at once (the file is staged in the background)...
        queued = up.cli("loras", "approve", slug, "--no-wait", "--json")
        assert queued.returncode == 0, queued.stderr
        assert json.loads(queued.stdout)["moderation_status"] == "staging"
        # ...and without --no-wait the CLI follows the staging until the LoRA is approved.
        approved = up.cli("loras", "approve", slug)
        assert approved.returncode == 0, approved.stderr
        assert f"approved {slug}" in approved.stdout, approved.stdout
        shown = json.loads(up.cli("loras", "show", slug, "--json").stdout)
        assert shown["moderation_status"] == "approved" and shown["staging_bytes_done"] == len(content)
        resolved = json.loads(up.cli("loras", "resolve", "mountains, Ink Wash Painting", "--json").stdout)
        assert [lo["slug"] for lo in resolved["loras"]] == [slug]

        made = up.cli(
            "generate",
            "mountains at dawn, ink wash painting",
            "--tool",
            "sdxl-txt2img",
            "--out",
            "ink.png",
            "--json",
        )
        assert made.returncode == 0, made.stderr
        job = json.loads(made.stdout)
        assert job["state"] == "COMPLETED" and job["applied_loras"][0]["slug"] == slug
        assert job["timings"]["models_downloaded"] == 1
        files = list((up.data_dir / "instances").glob(f"*/comfyui/models/loras/{slug}.safetensors"))
        assert (
            len(files) == 1
            and hashlib.sha256(files[0].read_bytes()).digest() == hashlib.sha256(content).digest()
        )
        # The second job on the same instance finds the file in place.
        again = json.loads(
            up.cli("generate", "ink wash painting of a cat", "--out", "cat.png", "--json").stdout
        )
        if again["instance_id"] == job["instance_id"]:
            assert again["timings"]["models_downloaded"] == 0
        listed = wait_for(lambda: json.loads(up.cli("loras", "show", slug, "--json").stdout), 5, "lora")
        assert listed["usage_count"] == 2
    finally:
        hubs.stop()
