"""Binding: :func:`bind_inputs` checks a client's input values and writes them into a copy of the
workflow template, producing a :class:`BoundJob`."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from swarmstation.domain.tools.spec import BoundJob, ToolDefinitionError, ToolInputError, ToolSpec
from swarmstation.domain.tools.values import (
    _BadValue,
    check_many,
    check_value,
    draw_random_seed,
    format_value,
    is_random_seed,
    json_type,
)
from swarmstation.domain.workflow import (
    MODEL_INPUTS,
    WorkflowError,
    normalise_model_name,
    required_models,
)

# --------------------------------------------------------------------------- binding


def _model_input_names(node: Mapping[str, Any]) -> set[str]:
    class_type = node.get("class_type")
    if not isinstance(class_type, str):
        return set()
    return {name for name, _folder in MODEL_INPUTS.get(class_type, ())}


def bind_inputs(spec: ToolSpec, raw: Mapping[str, Any], *, random_seed: int) -> BoundJob:
    """Validate ``raw`` input values against ``spec`` and bind them into a copy of its workflow.

    Raises :class:`ToolInputError` for a non-object body, unknown input names (checked first, in
    sorted order), then per input in declaration order: a missing required input, a wrong type,
    a value out of range, too long, or not one of the choices, or a bound model name that is not
    a clean relative path. A ``many`` image input takes a list of 1..``max_items`` references.
    A non-ComfyUI tool (empty workflow, no bindings) gets its values checked the same way and an
    empty workflow back. ``random_seed`` (any int, taken modulo 2**64) supplies every random
    seed: the first seed input gets it directly (narrowed into its range), later ones get
    values mixed from it. ``spec.workflow`` is never mutated.
    """
    if isinstance(random_seed, bool) or not isinstance(random_seed, int):
        raise TypeError("random_seed must be an int")
    if not isinstance(raw, Mapping):
        raise ToolInputError("", f"the inputs must be a JSON object, not {json_type(raw)}")
    known = {inp.name for inp in spec.inputs}
    for key in sorted(raw, key=repr):
        if not isinstance(key, str):
            raise ToolInputError(str(key), "input names must be strings")
        if key not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise ToolInputError(key, f"unknown input (this tool's inputs are: {listed})")

    workflow: dict[str, Any] = copy.deepcopy(dict(spec.workflow))
    resolved: dict[str, Any] = {}
    images: dict[str, str | list[str]] = {}
    seed_index = 0
    for inp in spec.inputs:
        value = raw.get(inp.name)
        if value is None:
            if inp.required:
                raise ToolInputError(inp.name, "is required")
            value = inp.default
        if inp.type == "seed":
            if is_random_seed(value):
                value = draw_random_seed(inp, random_seed, seed_index)
            seed_index += 1
        elif value is None:
            first = inp.bindings[0] if inp.bindings else None
            node = workflow.get(first.node_id) if first else None
            if first is not None and isinstance(node, dict) and isinstance(node.get("inputs"), dict):
                resolved[inp.name] = copy.deepcopy(node["inputs"].get(first.input_name))
            else:
                resolved[inp.name] = None
            continue
        try:
            value = check_many(inp, value) if inp.many else check_value(inp, value)
        except _BadValue as exc:
            raise ToolInputError(inp.name, exc.reason) from None

        for binding in inp.bindings:
            node = workflow.get(binding.node_id)
            if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
                raise ToolDefinitionError(
                    f"inputs.{inp.name}", f"bound node {binding.node_id!r} is missing from the workflow"
                )
            if binding.input_name in _model_input_names(node):
                try:
                    ok = isinstance(value, str) and normalise_model_name(value) == value
                except WorkflowError:
                    ok = False
                if not ok:
                    raise ToolInputError(inp.name, f"{format_value(value)} is not a valid model file name")
            node["inputs"][binding.input_name] = value
        resolved[inp.name] = value
        if inp.type == "image":
            images[inp.name] = list(value) if isinstance(value, list) else value

    return BoundJob(
        workflow=workflow,
        inputs=resolved,
        required_models=required_models(workflow),
        input_images=images,
    )
