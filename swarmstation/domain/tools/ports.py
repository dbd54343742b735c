"""Typed ports: which output can feed which input (:func:`compatible`), which port types an output
node class can produce (:func:`node_port_types`), and the default ports of a ComfyUI workflow
(:func:`comfy_outputs`).

A pipeline connects a step's output port to another step's input. The rule is deliberately narrow
(explicit conversions only): the same type, or ``text`` into ``string``. An integer never feeds a
seed and an image never feeds a string, so a mistake shows up when the pipeline is validated, not
as a strange job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from swarmstation.domain.tools.spec import PORT_TYPES, InputType, OutputSpec, PortType
from swarmstation.domain.workflow import OUTPUT_NODE_CLASSES

#: Output node classes and the port types each can fill. Animated WEBP/PNG files are images to
#: a viewer and a video to a player, so both are allowed.
NODE_PORT_TYPES: Mapping[str, tuple[PortType, ...]] = {
    "SaveImage": ("image",),
    "PreviewImage": ("image",),
    "SaveAnimatedWEBP": ("image", "video"),
    "SaveAnimatedPNG": ("image", "video"),
    "SaveWEBM": ("video",),
    "SaveVideo": ("video",),
    "VHS_VideoCombine": ("video",),
    "SaveAudio": ("audio",),
    "SaveLatent": ("latent",),
}

#: Common custom nodes that return text (``OUTPUT_NODE = True`` in ComfyUI). The worker reports
#: file outputs only, so a ``text`` port's value is read from ``job.result[port]``, which the
#: worker would have to report; the catalog declares none yet.
TEXT_OUTPUT_CLASSES: frozenset[str] = frozenset(
    {"ShowText|pysssss", "SaveText|pysssss", "PreviewAny", "Display Any (rgthree)"}
)

_NON_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")


def compatible(output_type: PortType, input_type: InputType) -> bool:
    """Whether an output port of ``output_type`` may feed a tool input of ``input_type``: the
    same type, or ``text`` into ``string``. Nothing else (no implicit conversions)."""
    return output_type == input_type or (output_type == "text" and input_type == "string")


def node_port_types(class_type: str, output_classes: frozenset[str] = frozenset()) -> tuple[PortType, ...]:
    """The port types an output node of ``class_type`` can fill; ``()`` when it is no output node.

    A custom class named in the tool's ``output_classes`` is trusted with any type: the platform
    cannot know what a custom node saves, and the tool's author declares it.
    """
    if class_type in NODE_PORT_TYPES:
        return NODE_PORT_TYPES[class_type]
    if class_type in TEXT_OUTPUT_CLASSES:
        return ("text",)
    if class_type in output_classes:
        return PORT_TYPES
    return ()


def is_output_node(class_type: str, output_classes: frozenset[str] = frozenset()) -> bool:
    """Whether ComfyUI treats a node of ``class_type`` as an output (it fills a port)."""
    return class_type in OUTPUT_NODE_CLASSES or bool(node_port_types(class_type, output_classes))


def _default_type(class_type: str, output_classes: frozenset[str]) -> PortType | None:
    if class_type in NODE_PORT_TYPES:
        return NODE_PORT_TYPES[class_type][0]
    if class_type in TEXT_OUTPUT_CLASSES:
        return "text"
    if class_type in output_classes:
        return "image"  # custom output nodes are image savers unless the tool says otherwise
    return None


def _sort_key(node_id: str) -> tuple[int, int, str]:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def comfy_outputs(
    workflow: Mapping[str, Any], output_classes: frozenset[str] = frozenset()
) -> tuple[OutputSpec, ...]:
    """The default output ports of a ComfyUI workflow, one per output node, in node-id order.

    SaveImage/PreviewImage and custom output classes give ``image`` ports, known text nodes
    ``text`` ports, video/audio/latent savers their reserved types. A type with one node gives a
    port named after the type (``image``); with several, ``<type>_<node id>`` (non-identifier
    characters as ``_``). Malformed nodes are skipped: :func:`validate_tool` reports them.
    """
    found: list[tuple[str, PortType]] = []
    if not isinstance(workflow, Mapping):
        return ()
    for node_id in sorted((k for k in workflow if isinstance(k, str)), key=_sort_key):
        node = workflow[node_id]
        class_type = node.get("class_type") if isinstance(node, Mapping) else None
        if not isinstance(class_type, str):
            continue
        kind = _default_type(class_type, output_classes)
        if kind is not None:
            found.append((node_id, kind))
    counts: dict[str, int] = {}
    for _node_id, kind in found:
        counts[kind] = counts.get(kind, 0) + 1
    ports: list[OutputSpec] = []
    used: set[str] = set()
    for node_id, kind in found:
        name = kind if counts[kind] == 1 else f"{kind}_{_NON_IDENTIFIER.sub('_', node_id)}"
        base, n = name, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        ports.append(OutputSpec(name=name, type=kind, node_id=node_id))
    return tuple(ports)
