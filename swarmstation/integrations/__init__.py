"""Outside services swarmstation calls, one package each (ComfyUI Deploy first)."""
