"""Tools that are not ComfyUI workflows and run on the control plane's side, with no GPU worker:
LLM text tools (an OpenAI-compatible endpoint) and image utilities (Pillow). They share the
ComfyUI tools' interface (typed inputs and outputs, a price, a job per run): `base` says what one
is, `registry` lists them, `control/local_jobs.py` runs their jobs."""
