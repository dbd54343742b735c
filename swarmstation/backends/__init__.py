"""Execution backends other than the self-hosted pool (ComfyUI Deploy first)."""
