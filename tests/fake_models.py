"""Fake model files for tests: valid, tiny safetensors, because the emulator (like ComfyUI) refuses
a ``.safetensors`` file whose header does not parse."""

from __future__ import annotations

from pathlib import Path

from swarmstation.comfy.emulator.nodes import minimal_safetensors

__all__ = ["fake_weights", "write_fake_model"]


def fake_weights(payload: bytes = b"weights") -> bytes:
    """A valid safetensors file whose only tensor holds ``payload``: distinct payloads give distinct
    bytes, sizes and sha256 digests, as distinct models would."""
    return minimal_safetensors(payload)


def write_fake_model(path: Path, payload: bytes = b"weights") -> bytes:
    """Write ``fake_weights(payload)`` to ``path`` (parents created); returns the bytes written."""
    data = fake_weights(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data
