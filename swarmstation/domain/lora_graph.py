"""Writing resolved LoRAs into a ComfyUI API-format workflow.

ComfyUI does not parse ``<lora:...>`` tags, so the graph is rewritten instead:

- **Checkpoint graphs** (``CheckpointLoaderSimple`` and the other checkpoint loaders whose
  outputs are MODEL 0, CLIP 1, VAE 2): a chain of ``LoraLoader`` nodes is inserted after the
  loader. The first takes the loader's MODEL and CLIP, each next one the previous one's outputs,
  and every node that consumed the loader's MODEL (output 0) or CLIP (output 1) is re-pointed at
  the end of the chain. VAE links are left alone. Each node gets ``strength_model`` and
  ``strength_clip`` from the :class:`~swarmstation.domain.loras.AppliedLora`.
- **Diffusion-model graphs** (FLUX style: ``UNETLoader`` or ``UnetLoaderGGUF`` provides MODEL and
  a separate ``DualCLIPLoader`` / ``CLIPLoader`` provides CLIP): a chain of
  ``LoraLoaderModelOnly`` nodes on the model path, as ComfyUI's own FLUX LoRA examples do.
  ``strength_clip`` is not used there: FLUX LoRAs (ai-toolkit, the usual trainer) carry no
  text-encoder weights, and the CLIP loader's consumers stay as they are.

New node ids are decimal strings above the largest numeric id in the graph, so they never
collide; their ``_meta.title`` names the LoRA slug. With no LoRAs the graph is returned as an
unchanged copy. This module is pure: nothing passed in is mutated.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

from swarmstation.domain.loras import AppliedLora
from swarmstation.domain.workflow import ModelRef, WorkflowError, is_link, normalise_model_name

__all__ = [
    "CHECKPOINT_LOADERS",
    "DIFFUSION_MODEL_LOADERS",
    "LoraGraphError",
    "apply_loras",
    "find_model_loader",
    "find_positive_text",
    "lora_models",
]

#: Loader classes whose outputs are MODEL 0 and CLIP 1 (then VAE, ...): they take ``LoraLoader``.
CHECKPOINT_LOADERS: frozenset[str] = frozenset(
    {"CheckpointLoaderSimple", "CheckpointLoader", "CheckpointLoader|pysssss", "unCLIPCheckpointLoader"}
)
#: Loader classes that provide MODEL 0 only: they take ``LoraLoaderModelOnly``.
DIFFUSION_MODEL_LOADERS: frozenset[str] = frozenset({"UNETLoader", "UnetLoaderGGUF"})

_TEXT_ENCODERS = frozenset({"CLIPTextEncode"})


class LoraGraphError(WorkflowError):
    """The workflow cannot take the LoRAs (no model loader, an ambiguous one, a bad file name...)."""


def lora_models(loras: Sequence[AppliedLora]) -> tuple[ModelRef, ...]:
    """The model files the LoRAs need, as ``ModelRef("loras", file_name)``, sorted and deduplicated."""
    return tuple(sorted({ModelRef("loras", lora.file_name) for lora in loras}))


def find_model_loader(graph: Mapping[str, Any]) -> str | None:
    """The id of the graph's single checkpoint or diffusion-model loader, or None if it has none.

    Raises :class:`LoraGraphError` when there are several (e.g. SDXL base + refiner): the caller
    must then say which one takes the LoRAs (``apply_loras(..., model_node=...)``).
    """
    found = sorted(
        node_id
        for node_id, node in graph.items()
        if isinstance(node, Mapping)
        and node.get("class_type") in CHECKPOINT_LOADERS | DIFFUSION_MODEL_LOADERS
    )
    if len(found) > 1:
        raise LoraGraphError(
            "the workflow has several model loaders (" + ", ".join(repr(n) for n in found) + "); "
            "name the one that takes the LoRAs"
        )
    return found[0] if found else None


def find_positive_text(graph: Mapping[str, Any]) -> tuple[str, str]:
    """``(node_id, "text")`` of the ``CLIPTextEncode`` that feeds the samplers' ``positive`` input.

    Raises :class:`LoraGraphError` unless exactly one such encoder exists.
    """
    found: set[str] = set()
    for node in graph.values():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping):
            continue
        link = inputs.get("positive")
        if isinstance(link, list) and is_link(link):
            source_id: str = link[0]
            source = graph.get(source_id)
            if isinstance(source, Mapping) and source.get("class_type") in _TEXT_ENCODERS:
                found.add(source_id)
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise LoraGraphError(
            f"the workflow has {what} positive CLIPTextEncode nodes; bind the prompt explicitly"
        )
    return (found.pop(), "text")


def _new_ids(graph: Mapping[str, Any], count: int) -> list[str]:
    numeric = [int(node_id) for node_id in graph if isinstance(node_id, str) and node_id.isdigit()]
    next_id = max(numeric, default=0) + 1
    ids: list[str] = []
    while len(ids) < count:
        if str(next_id) not in graph:
            ids.append(str(next_id))
        next_id += 1
    return ids


def _check_lora(lora: AppliedLora) -> None:
    try:
        name = normalise_model_name(lora.file_name)
    except WorkflowError as exc:
        raise LoraGraphError(f"LoRA {lora.slug!r}: {exc}") from None
    if name != lora.file_name:
        raise LoraGraphError(f"LoRA {lora.slug!r}: file name {lora.file_name!r} is not normalised ({name!r})")
    for value in (lora.strength_model, lora.strength_clip):
        if not math.isfinite(value):
            raise LoraGraphError(f"LoRA {lora.slug!r}: strengths must be finite numbers")


def apply_loras(
    graph: Mapping[str, Any],
    loras: Sequence[AppliedLora],
    *,
    prompt_text: str | None = None,
    text_binding: tuple[str, str] | None = None,
    model_node: str | None = None,
) -> dict[str, Any]:
    """Return a new graph with ``loras`` chained after the model loader (see the module docstring).

    ``prompt_text``, when given, replaces the literal at ``text_binding`` (``(node_id,
    input_name)``), by default the text of the positive ``CLIPTextEncode``
    (:func:`find_positive_text`): pass the :class:`~swarmstation.domain.loras.Resolution`'s
    ``prompt`` so that the encoder never sees ``<lora:...>`` tags. ``model_node`` picks the loader
    when the graph has several (:func:`find_model_loader`).

    With no LoRAs and no ``prompt_text`` the result is a plain deep copy, so applying nothing twice
    is the identity. Raises :class:`LoraGraphError` when LoRAs are given and the graph has no
    checkpoint or diffusion-model loader (an upscaler, say), when the loader is ambiguous, when
    the text binding does not point at a literal string input, or when a LoRA's file name is not a
    normalised relative path. The result's ``required_models`` include :func:`lora_models`.
    """
    new: dict[str, Any] = copy.deepcopy(dict(graph))

    if prompt_text is not None:
        node_id, input_name = text_binding if text_binding is not None else find_positive_text(new)
        node = new.get(node_id)
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            raise LoraGraphError(f"text binding: node {node_id!r} does not exist or has no inputs")
        if input_name in inputs and not isinstance(inputs[input_name], str):
            raise LoraGraphError(
                f"text binding: input {input_name!r} of node {node_id!r} is not a literal text"
            )
        inputs[input_name] = prompt_text

    if not loras:
        return new

    for lora in loras:
        _check_lora(lora)
    loader_id = model_node if model_node is not None else find_model_loader(new)
    if loader_id is None:
        raise LoraGraphError(
            "the workflow has no checkpoint or diffusion-model loader, so it cannot take LoRAs"
        )
    loader = new.get(loader_id)
    class_type = loader.get("class_type") if isinstance(loader, dict) else None
    if class_type in CHECKPOINT_LOADERS:
        with_clip = True
    elif class_type in DIFFUSION_MODEL_LOADERS:
        with_clip = False
    else:
        raise LoraGraphError(f"node {loader_id!r} is not a checkpoint or diffusion-model loader")

    ids = _new_ids(new, len(loras))
    # Re-point consumers first (before the chain exists, so the chain's own links stay put).
    for node in new.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for name, value in inputs.items():
            if is_link(value) and value[0] == loader_id and (value[1] == 0 or (with_clip and value[1] == 1)):
                inputs[name] = [ids[-1], value[1]]

    previous = loader_id
    for node_id, lora in zip(ids, loras, strict=True):
        if with_clip:
            new[node_id] = {
                "class_type": "LoraLoader",
                "inputs": {
                    "model": [previous, 0],
                    "clip": [previous, 1],
                    "lora_name": lora.file_name,
                    "strength_model": float(lora.strength_model),
                    "strength_clip": float(lora.strength_clip),
                },
                "_meta": {"title": f"LoRA {lora.slug}"},
            }
        else:
            new[node_id] = {
                "class_type": "LoraLoaderModelOnly",
                "inputs": {
                    "model": [previous, 0],
                    "lora_name": lora.file_name,
                    "strength_model": float(lora.strength_model),
                },
                "_meta": {"title": f"LoRA {lora.slug}"},
            }
        previous = node_id
    return new
