"""Tools: a ComfyUI workflow template (or a local tool run on the control plane) plus typed,
validated inputs bound into it and typed output ports.

A :class:`ToolSpec` is what the platform publishes ("txt2img with SDXL", "4x upscale", ...). A
client sends a JSON object of input values; :func:`bind_inputs` checks them against the
:class:`InputSpec` list and writes them into a copy of the template at each
:class:`InputBinding` (``node_id``, ``input_name``), producing a :class:`BoundJob`.

Input types and their values (the API speaks JSON, so nothing is coerced from strings):

- ``"string"``: a str, at most ``max_length`` characters (default
  :data:`DEFAULT_STRING_MAX_LENGTH`).
- ``"integer"``: an int; ``bool`` is refused; a float with an integral value (``5.0``) is accepted
  and written as ``5``; ``5.5`` and ``"5"`` are refused.
- ``"number"``: an int or float (not bool), finite; written into the workflow as a float.
- ``"boolean"``: a bool.
- ``"image"``: an opaque, non-empty reference string (an object-store key the platform resolves
  later, e.g. after uploading to ComfyUI); it is written to the bound input (normally
  ``LoadImage.image``) and reported in :attr:`BoundJob.input_images`. ``max_length`` defaults to
  :data:`DEFAULT_IMAGE_REF_MAX_LENGTH`.
- ``"seed"``: an int in ``0..2**64-1`` (ComfyUI's KSampler range), narrowed by ``minimum`` /
  ``maximum`` when given. Absent, ``None``, ``-1`` or ``""`` means "random": the value is derived
  from the caller's ``random_seed`` (this module has no randomness of its own).

For an input that is not ``required``, an absent (or ``null``) value falls back to ``default``; if
that is ``None`` too, the template's own literal stays in place and is reported as the value.

Tools have a ``kind``: ``"comfyui"`` (a workflow run on a worker) or a local kind (``"llm"``,
``"image"``) run on the control plane, with an empty workflow, inputs without bindings and pool
``"control"``. An ``image`` input of a local tool may be ``many``: a list of references. Each tool
declares its output ports (:class:`OutputSpec`, typed by :data:`PORT_TYPES`); :func:`compatible`
says which output may feed which input, :func:`comfy_outputs` derives a workflow's default ports.

This package is pure: no I/O, clock or randomness, and nothing passed in is mutated.

The package: ``spec`` (the types, limits and errors), ``values`` (checking one value),
``definition`` (validating a tool, its JSON form), ``binding`` (:func:`bind_inputs`), ``schema``
(:func:`input_schema`) and ``ports`` (:func:`compatible`, :func:`comfy_outputs`); this module names
the public API.
"""

from __future__ import annotations

from swarmstation.domain.tools.binding import bind_inputs
from swarmstation.domain.tools.definition import tool_from_dict, tool_to_dict, validate_tool
from swarmstation.domain.tools.ports import comfy_outputs, compatible, node_port_types
from swarmstation.domain.tools.schema import input_schema
from swarmstation.domain.tools.spec import (
    BASE_MODELS,
    DEFAULT_IMAGE_REF_MAX_LENGTH,
    DEFAULT_MAX_ITEMS,
    DEFAULT_STRING_MAX_LENGTH,
    INPUT_TYPES,
    LOCAL_POOL,
    PORT_TYPES,
    RESERVED_PORT_TYPES,
    SEED_MAX,
    SLUG_PATTERN,
    TOOL_KINDS,
    BoundJob,
    InputBinding,
    InputSpec,
    InputType,
    OutputSpec,
    PortType,
    ToolDefinitionError,
    ToolInputError,
    ToolKind,
    ToolSpec,
)

__all__ = [
    "BASE_MODELS",
    "DEFAULT_IMAGE_REF_MAX_LENGTH",
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_STRING_MAX_LENGTH",
    "INPUT_TYPES",
    "LOCAL_POOL",
    "PORT_TYPES",
    "RESERVED_PORT_TYPES",
    "SEED_MAX",
    "SLUG_PATTERN",
    "TOOL_KINDS",
    "BoundJob",
    "InputBinding",
    "InputSpec",
    "InputType",
    "OutputSpec",
    "PortType",
    "ToolDefinitionError",
    "ToolInputError",
    "ToolKind",
    "ToolSpec",
    "bind_inputs",
    "comfy_outputs",
    "compatible",
    "input_schema",
    "node_port_types",
    "tool_from_dict",
    "tool_to_dict",
    "validate_tool",
]
