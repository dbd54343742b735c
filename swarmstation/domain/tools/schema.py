"""The JSON Schema (2020-12) of a tool's inputs, :func:`input_schema`, as the API documents it."""

from __future__ import annotations

from typing import Any

from swarmstation.domain.tools.spec import (
    DEFAULT_IMAGE_REF_MAX_LENGTH,
    DEFAULT_STRING_MAX_LENGTH,
    JSON_SCHEMA_DIALECT,
    InputSpec,
    ToolSpec,
)
from swarmstation.domain.tools.values import is_random_seed, max_items, seed_bounds

# --------------------------------------------------------------------------- JSON schema


def _property_schema(inp: InputSpec) -> dict[str, Any]:
    prop: dict[str, Any] = {}
    if inp.description:
        prop["description"] = inp.description
    if inp.type == "string":
        prop["type"] = "string"
        prop["maxLength"] = inp.max_length if inp.max_length is not None else DEFAULT_STRING_MAX_LENGTH
    elif inp.type == "image":
        ref = {
            "type": "string",
            "minLength": 1,
            "maxLength": inp.max_length if inp.max_length is not None else DEFAULT_IMAGE_REF_MAX_LENGTH,
        }
        if inp.many:
            prop.update({"type": "array", "items": ref, "minItems": 1, "maxItems": max_items(inp)})
        else:
            prop.update(ref)
    elif inp.type in ("integer", "number"):
        prop["type"] = inp.type
        if inp.minimum is not None:
            prop["minimum"] = inp.minimum
        if inp.maximum is not None:
            prop["maximum"] = inp.maximum
    elif inp.type == "boolean":
        prop["type"] = "boolean"
    elif inp.type == "seed":
        lo, hi = seed_bounds(inp)
        prop["anyOf"] = [
            {"type": "integer", "minimum": lo, "maximum": hi},
            {"const": -1},
            {"const": ""},
            {"type": "null"},
        ]
    if inp.choices is not None:
        prop["enum"] = list(inp.choices)
    if not inp.required:
        if inp.type == "seed":
            prop["default"] = -1 if is_random_seed(inp.default) else inp.default
        elif inp.default is not None:
            prop["default"] = inp.default
    prop["x-input-type"] = inp.type
    if inp.many:
        prop["x-many"] = True
    return prop


def input_schema(spec: ToolSpec) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) for the inputs object that :func:`bind_inputs` accepts.

    Each property carries ``x-input-type`` (the :data:`INPUT_TYPES` name) as an annotation, so a
    UI can tell an image reference or a seed from a plain string or integer; a ``many`` image
    input is an array of references (with ``x-many: true``). ``null`` is accepted
    by :func:`bind_inputs` for optional inputs (meaning "absent") but only published for seeds.
    """
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": spec.name,
        "description": spec.description,
        "type": "object",
        "properties": {inp.name: _property_schema(inp) for inp in spec.inputs},
        "required": [inp.name for inp in spec.inputs if inp.required],
        "additionalProperties": False,
    }
