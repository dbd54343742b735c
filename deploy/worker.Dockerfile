# The prebuilt swarmstation worker image: CUDA PyTorch, ComfyUI at a pinned tag, and the worker.
#
# Docker does not run on the machine where this file was written, so it has never been built
# there: it is kept correct by reading, and tests/providers/test_bootstrap.py checks it as text. What it
# runs is the onstart bootstrap (swarmstation/providers/bootstrap.py) that the tests do run for real.
#
# Build from the repository root:
#   docker build -f deploy/worker.Dockerfile -t swarmstation-worker:0.1.0 .
# Run it as a provider does; the control plane's URL and the instance's token come from the
# environment, never from the image:
#   docker run --gpus all -e SWARMSTATION_SERVER_URL=https://cp.example.org \
#     -e SWARMSTATION_WORKER_TOKEN=... swarmstation-worker:0.1.0
# On Vast the "args" runtype keeps this ENTRYPOINT; the ssh and jupyter runtypes replace it, so
# with those make the onstart `bash /opt/swarmstation/bootstrap.sh`.

# Python 3.11 (swarmstation needs >= 3.11) with torch 2.5.1, torchvision and torchaudio for CUDA 12.4.
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}
ARG COMFYUI_REF=v0.8.2
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1

# git fetches ComfyUI; curl serves the bootstrap's reports and probes (it falls back to Python).
RUN apt-get update \
 && apt-get install -y --no-install-recommends git curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Pin the base image's torch builds, so that no requirement below can swap them for other builds
# (kornia and spandrel pull torchvision, which would otherwise drag in another torch).
RUN python -c "import sys; assert sys.version_info >= (3, 11), sys.version" \
 && python -c "import importlib.metadata as m; print('\n'.join(f'{d}=={m.version(d)}' for d in ('torch', 'torchvision', 'torchaudio')))" > /opt/torch-constraints.txt \
 && cat /opt/torch-constraints.txt

# ComfyUI at the pinned tag; `requests` is imported by it but missing from its requirements.
RUN git clone --depth 1 --branch ${COMFYUI_REF} https://github.com/Comfy-Org/ComfyUI /opt/ComfyUI \
 && pip install -c /opt/torch-constraints.txt -r /opt/ComfyUI/requirements.txt requests

# swarmstation (the worker and the bootstrap), under the same pins. Only the package is copied, so
# a local .venv or data folder in the build context never lands in the image.
COPY pyproject.toml /opt/swarmstation/pyproject.toml
COPY swarmstation /opt/swarmstation/swarmstation
RUN pip install -c /opt/torch-constraints.txt /opt/swarmstation \
 && python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
 && python -c "from swarmstation.providers.bootstrap import render_onstart; print(render_onstart(comfyui_mode='existing', comfyui_dir='/opt/ComfyUI'), end='')" > /opt/swarmstation/bootstrap.sh \
 && bash -n /opt/swarmstation/bootstrap.sh

# Everything is installed already: the bootstrap goes straight to starting ComfyUI and the worker,
# reporting each stage to the control plane and restarting whichever crashes.
ENV SWARMSTATION_SKIP_INSTALL=1
WORKDIR /opt/ComfyUI
# ComfyUI listens on 127.0.0.1 (it has no auth, and the worker pulls its jobs, so nothing needs to
# reach it); set SWARMSTATION_COMFYUI_LISTEN=0.0.0.0 to publish it on this port on purpose.
EXPOSE 8188
ENTRYPOINT ["bash", "/opt/swarmstation/bootstrap.sh"]
