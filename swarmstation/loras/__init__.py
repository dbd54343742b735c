"""The LoRA registry's edges: importing metadata from Civitai and Hugging Face, staging files."""
