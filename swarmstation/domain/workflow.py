"""ComfyUI API-format workflow graphs: validation, model discovery and copy-on-write edits.

An API-format workflow (the body's ``prompt`` in ``POST /prompt``) is a flat dict that maps a
**string** node id to ``{"class_type": str, "inputs": dict, "_meta": {...}?}``. Each input value
is either a literal (str, int, float, bool, ``None`` or a JSON object) or a *link*
``[source_node_id, output_index]``. ComfyUI reads every bare list as a link, so a literal list
has to be wrapped as ``{"__value__": [...]}``.

This module is pure: no I/O, no clock, no randomness. Functions never mutate their arguments.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarmstation.domain.errors import InvalidInput

__all__ = [
    "MODEL_FOLDERS",
    "MODEL_INPUTS",
    "OUTPUT_NODE_CLASSES",
    "ModelRef",
    "WorkflowError",
    "is_link",
    "normalise_model_name",
    "required_models",
    "set_input",
    "validate_graph",
]


class WorkflowError(InvalidInput):
    """A workflow graph (or a model name inside one) is malformed.

    ``problems`` lists every problem found, each a readable sentence such as
    ``"node '7': input 'model' links to missing node '99'"``.
    """

    code = "invalid_workflow"

    def __init__(self, problems: list[str] | str) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems) if self.problems else "invalid workflow")


#: Core and common custom node classes with ``OUTPUT_NODE = True``. ComfyUI only executes the
#: part of a graph that feeds one of these, and rejects a prompt without any (``prompt_no_outputs``).
OUTPUT_NODE_CLASSES: frozenset[str] = frozenset(
    {
        "SaveImage",
        "PreviewImage",
        "SaveAnimatedWEBP",
        "SaveAnimatedPNG",
        "SaveWEBM",
        "SaveVideo",
        "SaveAudio",
        "SaveLatent",
        "VHS_VideoCombine",
    }
)

#: ComfyUI ``folder_paths`` keys that hold model files (``models/<folder>``).
MODEL_FOLDERS: frozenset[str] = frozenset(
    {
        "checkpoints",
        "loras",
        "vae",
        "diffusion_models",
        "text_encoders",
        "upscale_models",
        "clip_vision",
        "controlnet",
        "embeddings",
        "style_models",
        "gligen",
        "hypernetworks",
        "photomaker",
    }
)

_CLIP1 = (("clip_name1", "text_encoders"), ("clip_name2", "text_encoders"))

#: Loader node class -> ((input name, ComfyUI folder key), ...): the inputs whose literal value
#: names a model file that must exist under ``models/<folder>`` on the worker.
MODEL_INPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    # core nodes.py
    "CheckpointLoaderSimple": (("ckpt_name", "checkpoints"),),
    "CheckpointLoader": (("ckpt_name", "checkpoints"),),
    "unCLIPCheckpointLoader": (("ckpt_name", "checkpoints"),),
    "ImageOnlyCheckpointLoader": (("ckpt_name", "checkpoints"),),
    "LoraLoader": (("lora_name", "loras"),),
    "LoraLoaderModelOnly": (("lora_name", "loras"),),
    "VAELoader": (("vae_name", "vae"),),
    "UNETLoader": (("unet_name", "diffusion_models"),),
    "CLIPLoader": (("clip_name", "text_encoders"),),
    "DualCLIPLoader": _CLIP1,
    "TripleCLIPLoader": (*_CLIP1, ("clip_name3", "text_encoders")),
    "QuadrupleCLIPLoader": (*_CLIP1, ("clip_name3", "text_encoders"), ("clip_name4", "text_encoders")),
    "ControlNetLoader": (("control_net_name", "controlnet"),),
    "DiffControlNetLoader": (("control_net_name", "controlnet"),),
    "CLIPVisionLoader": (("clip_name", "clip_vision"),),
    "StyleModelLoader": (("style_model_name", "style_models"),),
    "GLIGENLoader": (("gligen_name", "gligen"),),
    "HypernetworkLoader": (("hypernetwork_name", "hypernetworks"),),
    "PhotoMakerLoader": (("photomaker_model_name", "photomaker"),),
    # comfy_extras
    "UpscaleModelLoader": (("model_name", "upscale_models"),),
    # common custom nodes (city96/ComfyUI-GGUF, pysssss custom scripts)
    "UnetLoaderGGUF": (("unet_name", "diffusion_models"),),
    "CLIPLoaderGGUF": (("clip_name", "text_encoders"),),
    "DualCLIPLoaderGGUF": _CLIP1,
    "TripleCLIPLoaderGGUF": (*_CLIP1, ("clip_name3", "text_encoders")),
    "LoraLoader|pysssss": (("lora_name", "loras"),),
    "CheckpointLoader|pysssss": (("ckpt_name", "checkpoints"),),
}


@dataclass(frozen=True, order=True)
class ModelRef:
    """A model file a workflow needs: ``models/<folder>/<name>`` on the ComfyUI side.

    ``folder`` is ComfyUI's folder key (see :data:`MODEL_FOLDERS`); ``name`` is the path relative
    to that folder exactly as written in the workflow (``/`` separated).
    """

    folder: str
    name: str


def is_link(value: object) -> bool:
    """True when ``value`` is a well-formed link ``[node_id: str, output_index: int >= 0]``."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
        and value[1] >= 0
    )


def _is_json_literal(value: object, depth: int = 0) -> bool:
    """A JSON value (lists allowed) that ComfyUI could receive; floats must be finite."""
    if depth > 64:
        return False
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json_literal(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json_literal(v, depth + 1) for k, v in value.items())
    return False


def _check_input(node_id: str, name: str, value: object, graph: Mapping[Any, Any], out: list[str]) -> None:
    where = f"node {node_id!r}: input {name!r}"
    if isinstance(value, list):
        if len(value) != 2:
            out.append(
                f"{where} is a list of length {len(value)}; a link must be [node_id, output_index] "
                'and a literal list must be wrapped as {"__value__": [...]}'
            )
            return
        src, index = value
        if not isinstance(src, str):
            out.append(f"{where} links to node id {src!r}, which must be a string")
        elif src not in graph:
            out.append(f"{where} links to missing node {src!r}")
        if not isinstance(index, int) or isinstance(index, bool):
            out.append(f"{where} has output index {index!r}, which must be an integer")
        elif index < 0:
            out.append(f"{where} has negative output index {index}")
        return
    if isinstance(value, dict) and "__value__" in value:
        if not isinstance(value["__value__"], list) or len(value) != 1:
            out.append(f'{where}: a wrapped literal must be exactly {{"__value__": [...]}}')
        elif not _is_json_literal(value["__value__"]):
            out.append(f"{where}: the wrapped list holds a value that is not JSON")
        return
    if not _is_json_literal(value):
        out.append(f"{where} has a value of type {type(value).__name__} that is not a JSON literal")


def _find_cycle(graph: Mapping[str, Any]) -> list[str] | None:
    """Return one cycle as a list of node ids (first == last), or None. Iterative DFS."""
    edges: dict[str, list[str]] = {}
    for node_id, node in graph.items():
        deps: list[str] = []
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if isinstance(inputs, dict):
            for value in inputs.values():
                if is_link(value) and value[0] in graph:
                    deps.append(value[0])
        edges[node_id] = deps

    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(edges, white)
    for root in sorted(edges):
        if colour[root] != white:
            continue
        path: list[str] = [root]
        stack: list[tuple[str, int]] = [(root, 0)]
        colour[root] = grey
        while stack:
            node, i = stack[-1]
            deps = edges[node]
            if i >= len(deps):
                stack.pop()
                path.pop()
                colour[node] = black
                continue
            stack[-1] = (node, i + 1)
            nxt = deps[i]
            if colour[nxt] == grey:
                return [*path[path.index(nxt) :], nxt]
            if colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                stack.append((nxt, 0))
    return None


def validate_graph(graph: object, *, extra_output_classes: frozenset[str] = frozenset()) -> None:
    """Check that ``graph`` is a well-formed API-format workflow; raise :class:`WorkflowError`.

    Checked: a non-empty dict; non-empty string node ids; each node a dict with a non-empty string
    ``class_type``, a dict ``inputs`` with string names, and an optional dict ``_meta``; every
    list input is a link ``[existing_node_id, int >= 0]``; other literals are JSON values; no
    cycles; at least one output node (:data:`OUTPUT_NODE_CLASSES` or ``extra_output_classes``).
    All problems are collected and reported together.
    """
    if not isinstance(graph, dict):
        raise WorkflowError(f"the workflow must be a JSON object of nodes, not {type(graph).__name__}")
    if not graph:
        raise WorkflowError("the workflow has no nodes")

    problems: list[str] = []
    outputs = OUTPUT_NODE_CLASSES | extra_output_classes
    has_output = False
    for node_id, node in graph.items():
        if not isinstance(node_id, str) or not node_id:
            problems.append(f"node id {node_id!r} must be a non-empty string")
            continue
        if not isinstance(node, dict):
            problems.append(f"node {node_id!r} must be an object, not {type(node).__name__}")
            continue
        class_type = node.get("class_type")
        if not isinstance(class_type, str) or not class_type:
            problems.append(f"node {node_id!r} has no class_type")
        elif class_type in outputs:
            has_output = True
        if "_meta" in node and not isinstance(node["_meta"], dict):
            problems.append(f"node {node_id!r}: _meta must be an object")
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            problems.append(f"node {node_id!r} has no inputs object")
            continue
        for name, value in inputs.items():
            if not isinstance(name, str) or not name:
                problems.append(f"node {node_id!r}: input name {name!r} must be a non-empty string")
                continue
            _check_input(node_id, name, value, graph, problems)

    cycle = _find_cycle({k: v for k, v in graph.items() if isinstance(k, str)})
    if cycle is not None:
        problems.append("the workflow has a cycle: " + " -> ".join(repr(n) for n in cycle))
    if not has_output:
        problems.append("the workflow has no output node (one of: " + ", ".join(sorted(outputs)) + ")")
    if problems:
        raise WorkflowError(problems)


def required_models(graph: Mapping[str, Any]) -> tuple[ModelRef, ...]:
    """The model files the graph's loader nodes name, sorted and deduplicated.

    Only literal, non-empty string values of the inputs listed in :data:`MODEL_INPUTS` count;
    linked inputs (e.g. a name produced by another node) are skipped, as are malformed nodes.
    Names are returned as written: ComfyUI matches them exactly.
    """
    found: set[ModelRef] = set()
    for node in graph.values():
        if not isinstance(node, Mapping):
            continue
        class_type = node.get("class_type")
        spec = MODEL_INPUTS.get(class_type) if isinstance(class_type, str) else None
        inputs = node.get("inputs")
        if spec is None or not isinstance(inputs, Mapping):
            continue
        for input_name, folder in spec:
            value = inputs.get(input_name)
            if isinstance(value, str) and value:
                found.add(ModelRef(folder, value))
    return tuple(sorted(found))


def normalise_model_name(name: str) -> str:
    """Return the canonical relative form of a model file name, or raise :class:`WorkflowError`.

    Rejected: empty names, non-strings, NUL or other control characters, backslashes, absolute
    paths (``/x``, ``C:...``), ``..`` segments and names ending in ``/``. ``.`` segments and
    repeated slashes are collapsed: ``"./sdxl//a.safetensors"`` -> ``"sdxl/a.safetensors"``.
    """
    if not isinstance(name, str):
        raise WorkflowError(f"model name {name!r} must be a string")
    if not name:
        raise WorkflowError("model name is empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise WorkflowError(f"model name {name!r} contains a control character")
    if "\\" in name:
        raise WorkflowError(f"model name {name!r} contains a backslash; use '/'")
    if name.startswith("/") or (len(name) >= 2 and name[1] == ":" and name[0].isalpha()):
        raise WorkflowError(f"model name {name!r} is an absolute path")
    if name.endswith("/"):
        raise WorkflowError(f"model name {name!r} ends with '/'")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise WorkflowError(f"model name {name!r} contains a '..' segment")
    if not parts:
        raise WorkflowError(f"model name {name!r} names no file")
    return "/".join(parts)


def set_input(graph: Mapping[str, Any], node_id: str, input_name: str, value: object) -> dict[str, Any]:
    """Return a deep copy of ``graph`` with ``graph[node_id]["inputs"][input_name] = value``.

    The input graph is never mutated and the result shares no mutable objects with it (``value``
    is copied too). The input may be new to the node. Raises :class:`WorkflowError` when the node
    does not exist or has no inputs object.
    """
    node = graph.get(node_id)
    if not isinstance(node, Mapping):
        raise WorkflowError(f"node {node_id!r} does not exist")
    if not isinstance(node.get("inputs"), Mapping):
        raise WorkflowError(f"node {node_id!r} has no inputs object")
    new: dict[str, Any] = copy.deepcopy(dict(graph))
    new[node_id]["inputs"][input_name] = copy.deepcopy(value)
    return new
