"""Tools: a ComfyUI workflow template plus typed, validated inputs bound into it.

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

This module is pure: no I/O, clock or randomness, and nothing passed in is mutated.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from swarmstation.domain.workflow import (
    MODEL_INPUTS,
    ModelRef,
    WorkflowError,
    normalise_model_name,
    required_models,
    validate_graph,
)

__all__ = [
    "BASE_MODELS",
    "DEFAULT_IMAGE_REF_MAX_LENGTH",
    "DEFAULT_STRING_MAX_LENGTH",
    "INPUT_TYPES",
    "SEED_MAX",
    "SLUG_PATTERN",
    "BoundJob",
    "InputBinding",
    "InputSpec",
    "InputType",
    "ToolDefinitionError",
    "ToolInputError",
    "ToolSpec",
    "bind_inputs",
    "input_schema",
    "tool_from_dict",
    "tool_to_dict",
    "validate_tool",
]

InputType = Literal["string", "integer", "number", "boolean", "image", "seed"]
INPUT_TYPES: tuple[InputType, ...] = ("string", "integer", "number", "boolean", "image", "seed")

#: Model families a tool can declare. Pony, Illustrious and NoobAI are SDXL-derived but need
#: their own checkpoints/LoRAs; "other" covers tools without a diffusion model (e.g. upscalers).
BASE_MODELS: tuple[str, ...] = ("SD1.5", "SDXL", "Pony", "Illustrious", "NoobAI", "FLUX", "SD3", "other")

SEED_MAX = 2**64 - 1
DEFAULT_STRING_MAX_LENGTH = 10_000
DEFAULT_IMAGE_REF_MAX_LENGTH = 1024
SLUG_PATTERN = r"[a-z0-9][a-z0-9-]{1,62}"

_SLUG_RE = re.compile(SLUG_PATTERN)
_CATEGORY_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_POOL_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_INPUT_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MAX_NAME_LENGTH = 200
_JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class ToolDefinitionError(ValueError):
    """A tool definition is invalid. ``field`` says where (``"slug"``, ``"inputs.seed.default"``)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


class ToolInputError(ValueError):
    """A client's input values are invalid. ``field`` is the input name (``""`` for the whole body)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


@dataclass(frozen=True)
class InputBinding:
    """Where an input's value goes: ``workflow[node_id]["inputs"][input_name]``."""

    node_id: str
    input_name: str


@dataclass(frozen=True)
class InputSpec:
    """One published input of a tool (see the module docstring for the type rules)."""

    name: str
    type: InputType
    bindings: tuple[InputBinding, ...]
    required: bool = False
    default: object = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    choices: tuple[object, ...] | None = None
    description: str = ""


@dataclass(frozen=True)
class ToolSpec:
    """A tool: metadata, an API-format workflow template and its inputs.

    ``output_classes`` names extra output node classes (custom nodes) that count as outputs when
    validating the workflow. ``pool`` is the worker pool that runs the tool.
    """

    slug: str
    name: str
    description: str
    category: str
    base_model: str
    workflow: Mapping[str, Any]
    inputs: tuple[InputSpec, ...]
    pool: str = "default"
    output_classes: frozenset[str] = frozenset()
    accepts_loras: bool = True


@dataclass(frozen=True)
class BoundJob:
    """The result of :func:`bind_inputs`.

    ``workflow`` is a fresh graph ready for ComfyUI (after image references are resolved);
    ``inputs`` holds every input's resolved value, including the chosen seed; ``input_images``
    maps image input names to their references.
    """

    workflow: dict[str, Any]
    inputs: dict[str, Any]
    required_models: tuple[ModelRef, ...]
    input_images: dict[str, str]


# --------------------------------------------------------------------------- value checking


class _BadValue(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _fmt(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadValue(f"expected an integer, got {_json_type(value)}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer() or abs(value) > 2**53:
            raise _BadValue(f"expected an integer, got {value!r}")
        return int(value)
    return value


def _seed_bounds(spec: InputSpec) -> tuple[int, int]:
    lo = 0 if spec.minimum is None else max(0, math.ceil(spec.minimum))
    hi = SEED_MAX if spec.maximum is None else min(SEED_MAX, math.floor(spec.maximum))
    return lo, hi


def _is_random_seed(value: object) -> bool:
    if value is None or value == "":
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and value == -1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & SEED_MAX
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & SEED_MAX
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & SEED_MAX
    return x ^ (x >> 31)


def _random_seed(spec: InputSpec, random_seed: int, index: int) -> int:
    base = random_seed % (SEED_MAX + 1)
    if index:
        base = _splitmix64(base + index)
    lo, hi = _seed_bounds(spec)
    return lo + base % (hi - lo + 1)


def _check_range(spec: InputSpec, value: float) -> None:
    if spec.minimum is not None and value < spec.minimum:
        raise _BadValue(f"{_fmt(value)} is out of range (the minimum is {_fmt(spec.minimum)})")
    if spec.maximum is not None and value > spec.maximum:
        raise _BadValue(f"{_fmt(value)} is out of range (the maximum is {_fmt(spec.maximum)})")


def _check_value(spec: InputSpec, value: object) -> Any:
    """Validate one concrete value for ``spec`` and return it as written into the workflow."""
    result: Any
    kind = spec.type
    if kind in ("string", "image"):
        if not isinstance(value, str):
            raise _BadValue(f"expected a string, got {_json_type(value)}")
        default_limit = DEFAULT_STRING_MAX_LENGTH if kind == "string" else DEFAULT_IMAGE_REF_MAX_LENGTH
        limit = spec.max_length if spec.max_length is not None else default_limit
        if len(value) > limit:
            raise _BadValue(f"too long ({len(value)} characters, the limit is {limit})")
        if kind == "image":
            if not value:
                raise _BadValue("an image reference must not be empty")
            if any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise _BadValue("an image reference must not contain control characters")
        result = value
    elif kind == "integer":
        result = _as_int(value)
        _check_range(spec, result)
    elif kind == "seed":
        result = _as_int(value)
        lo, hi = _seed_bounds(spec)
        if not lo <= result <= hi:
            raise _BadValue(f"{result} is out of range (a seed is {lo}..{hi}, or -1 for random)")
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _BadValue(f"expected a number, got {_json_type(value)}")
        try:
            result = float(value)
        except OverflowError:
            raise _BadValue(f"{value} is too large") from None
        if not math.isfinite(result):
            raise _BadValue(f"expected a finite number, got {value!r}")
        _check_range(spec, result)
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise _BadValue(f"expected a boolean, got {_json_type(value)}")
        result = value
    else:
        raise _BadValue(f"unknown input type {kind!r}")
    if spec.choices is not None and result not in spec.choices:
        raise _BadValue(
            f"{_fmt(result)} is not one of the choices: " + ", ".join(_fmt(c) for c in spec.choices)
        )
    return result


# --------------------------------------------------------------------------- validation


def _input_field(spec: InputSpec, index: int) -> str:
    if isinstance(spec.name, str) and _INPUT_NAME_RE.fullmatch(spec.name):
        return f"inputs.{spec.name}"
    return f"inputs[{index}]"


def _validate_input_spec(spec: InputSpec, field: str) -> None:
    if spec.type not in INPUT_TYPES:
        raise ToolDefinitionError(f"{field}.type", f"{spec.type!r} is not one of: " + ", ".join(INPUT_TYPES))
    if not isinstance(spec.required, bool):
        raise ToolDefinitionError(f"{field}.required", "must be true or false")
    if not isinstance(spec.description, str):
        raise ToolDefinitionError(f"{field}.description", "must be a string")

    if spec.max_length is not None:
        if spec.type not in ("string", "image"):
            raise ToolDefinitionError(f"{field}.max_length", f"does not apply to {spec.type} inputs")
        if isinstance(spec.max_length, bool) or not isinstance(spec.max_length, int) or spec.max_length < 1:
            raise ToolDefinitionError(f"{field}.max_length", "must be a positive integer")

    for key in ("minimum", "maximum"):
        bound = getattr(spec, key)
        if bound is None:
            continue
        if spec.type not in ("integer", "number", "seed"):
            raise ToolDefinitionError(f"{field}.{key}", f"does not apply to {spec.type} inputs")
        if isinstance(bound, bool) or not isinstance(bound, int | float) or not math.isfinite(bound):
            raise ToolDefinitionError(f"{field}.{key}", "must be a finite number")
    if spec.minimum is not None and spec.maximum is not None and spec.minimum > spec.maximum:
        raise ToolDefinitionError(f"{field}.minimum", "is greater than the maximum")
    if spec.type == "seed":
        lo, hi = _seed_bounds(spec)
        if lo > hi:
            raise ToolDefinitionError(f"{field}.maximum", f"leaves no valid seed in 0..{SEED_MAX}")

    if spec.choices is not None:
        if spec.type not in ("string", "integer", "number"):
            raise ToolDefinitionError(f"{field}.choices", f"do not apply to {spec.type} inputs")
        if not isinstance(spec.choices, tuple) or not spec.choices:
            raise ToolDefinitionError(f"{field}.choices", "must be a non-empty list")
        unchecked = InputSpec(
            spec.name, spec.type, spec.bindings, minimum=spec.minimum, maximum=spec.maximum,
            max_length=spec.max_length,
        )  # fmt: skip
        seen: list[object] = []
        for i, choice in enumerate(spec.choices):
            try:
                value = _check_value(unchecked, choice)
            except _BadValue as exc:
                raise ToolDefinitionError(f"{field}.choices[{i}]", exc.reason) from None
            if value in seen:
                raise ToolDefinitionError(f"{field}.choices[{i}]", f"{_fmt(choice)} is listed twice")
            seen.append(value)

    if spec.default is not None:
        if spec.required:
            raise ToolDefinitionError(f"{field}.default", "a required input cannot have a default")
        if not (spec.type == "seed" and _is_random_seed(spec.default)):
            try:
                _check_value(spec, spec.default)
            except _BadValue as exc:
                raise ToolDefinitionError(f"{field}.default", exc.reason) from None


def validate_tool(spec: ToolSpec) -> None:
    """Check a tool definition; raise :class:`ToolDefinitionError` on the first problem.

    Checked: the slug (:data:`SLUG_PATTERN`), a non-empty name, the category and pool (lower-case
    slugs), ``base_model`` in :data:`BASE_MODELS`, the workflow (:func:`validate_graph`, with
    ``output_classes`` as extra outputs), model names already in normal form
    (:func:`normalise_model_name`), unique identifier-like input names, each input's type, bounds,
    choices and default, and each binding: it must name an existing node and one of that node's
    existing inputs, must not target a linked input, and no two bindings may share a target.
    """
    if not isinstance(spec.slug, str) or not _SLUG_RE.fullmatch(spec.slug):
        raise ToolDefinitionError(
            "slug", "must be 2-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
        )
    if not isinstance(spec.name, str) or not spec.name.strip():
        raise ToolDefinitionError("name", "must not be empty")
    if len(spec.name) > _MAX_NAME_LENGTH:
        raise ToolDefinitionError("name", f"is longer than {_MAX_NAME_LENGTH} characters")
    if not isinstance(spec.description, str):
        raise ToolDefinitionError("description", "must be a string")
    if not isinstance(spec.category, str) or not _CATEGORY_RE.fullmatch(spec.category):
        raise ToolDefinitionError("category", "must be a lower-case slug such as 'text-to-image'")
    if spec.base_model not in BASE_MODELS:
        raise ToolDefinitionError(
            "base_model", f"{spec.base_model!r} is not one of: " + ", ".join(BASE_MODELS)
        )
    if not isinstance(spec.pool, str) or not _POOL_RE.fullmatch(spec.pool):
        raise ToolDefinitionError("pool", "must be a lower-case name of a-z, 0-9, '-' and '_'")
    if not isinstance(spec.output_classes, frozenset | set) or not all(
        isinstance(c, str) and c for c in spec.output_classes
    ):
        raise ToolDefinitionError("output_classes", "must be a set of non-empty class names")

    graph = dict(spec.workflow) if isinstance(spec.workflow, Mapping) else spec.workflow
    try:
        validate_graph(graph, extra_output_classes=frozenset(spec.output_classes))
    except WorkflowError as exc:
        raise ToolDefinitionError("workflow", "; ".join(exc.problems)) from None

    for node_id, node in graph.items():
        for input_name, _folder in MODEL_INPUTS.get(node["class_type"], ()):
            value = node["inputs"].get(input_name)
            if not isinstance(value, str):
                continue
            try:
                normal = normalise_model_name(value)
            except WorkflowError as exc:
                raise ToolDefinitionError("workflow", f"node {node_id!r}: {exc.problems[0]}") from None
            if normal != value:
                raise ToolDefinitionError(
                    "workflow", f"node {node_id!r}: model name {value!r} should be written {normal!r}"
                )

    if not isinstance(spec.inputs, tuple):
        raise ToolDefinitionError("inputs", "must be a tuple of InputSpec")
    names: set[str] = set()
    targets: dict[tuple[str, str], str] = {}
    for index, inp in enumerate(spec.inputs):
        if not isinstance(inp, InputSpec):
            raise ToolDefinitionError(f"inputs[{index}]", "must be an InputSpec")
        field = _input_field(inp, index)
        if not isinstance(inp.name, str) or not _INPUT_NAME_RE.fullmatch(inp.name):
            raise ToolDefinitionError(
                f"{field}.name", f"{inp.name!r} must be an identifier (letters, digits, '_'; at most 64)"
            )
        if inp.name in names:
            raise ToolDefinitionError(f"{field}.name", f"input {inp.name!r} is defined twice")
        names.add(inp.name)
        _validate_input_spec(inp, field)

        if not isinstance(inp.bindings, tuple) or not inp.bindings:
            raise ToolDefinitionError(
                f"{field}.bindings", "an input must be bound to at least one node input"
            )
        for b_index, binding in enumerate(inp.bindings):
            b_field = f"{field}.bindings[{b_index}]"
            if not isinstance(binding, InputBinding):
                raise ToolDefinitionError(b_field, "must be an InputBinding")
            node = graph.get(binding.node_id)
            if node is None:
                raise ToolDefinitionError(b_field, f"node {binding.node_id!r} does not exist in the workflow")
            node_inputs = node["inputs"]
            if binding.input_name not in node_inputs:
                raise ToolDefinitionError(
                    b_field,
                    f"node {binding.node_id!r} ({node['class_type']}) has no input {binding.input_name!r}",
                )
            if isinstance(node_inputs[binding.input_name], list):
                raise ToolDefinitionError(
                    b_field,
                    f"input {binding.input_name!r} of node {binding.node_id!r} is linked from node "
                    f"{node_inputs[binding.input_name][0]!r}; only literal inputs can be bound",
                )
            target = (binding.node_id, binding.input_name)
            if target in targets:
                raise ToolDefinitionError(
                    b_field,
                    f"input {binding.input_name!r} of node {binding.node_id!r} is already bound by "
                    f"input {targets[target]!r}",
                )
            targets[target] = inp.name


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
    a clean relative path. ``random_seed`` (any int, taken modulo 2**64) supplies every random
    seed: the first seed input gets it directly (narrowed into its range), later ones get
    values mixed from it. ``spec.workflow`` is never mutated.
    """
    if isinstance(random_seed, bool) or not isinstance(random_seed, int):
        raise TypeError("random_seed must be an int")
    if not isinstance(raw, Mapping):
        raise ToolInputError("", f"the inputs must be a JSON object, not {_json_type(raw)}")
    known = {inp.name for inp in spec.inputs}
    for key in sorted(raw, key=repr):
        if not isinstance(key, str):
            raise ToolInputError(str(key), "input names must be strings")
        if key not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise ToolInputError(key, f"unknown input (this tool's inputs are: {listed})")

    workflow: dict[str, Any] = copy.deepcopy(dict(spec.workflow))
    resolved: dict[str, Any] = {}
    images: dict[str, str] = {}
    seed_index = 0
    for inp in spec.inputs:
        value = raw.get(inp.name)
        if value is None:
            if inp.required:
                raise ToolInputError(inp.name, "is required")
            value = inp.default
        if inp.type == "seed":
            if _is_random_seed(value):
                value = _random_seed(inp, random_seed, seed_index)
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
            value = _check_value(inp, value)
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
                    raise ToolInputError(inp.name, f"{_fmt(value)} is not a valid model file name")
            node["inputs"][binding.input_name] = value
        resolved[inp.name] = value
        if inp.type == "image":
            images[inp.name] = value

    return BoundJob(
        workflow=workflow,
        inputs=resolved,
        required_models=required_models(workflow),
        input_images=images,
    )


# --------------------------------------------------------------------------- JSON schema


def _property_schema(inp: InputSpec) -> dict[str, Any]:
    prop: dict[str, Any] = {}
    if inp.description:
        prop["description"] = inp.description
    if inp.type == "string":
        prop["type"] = "string"
        prop["maxLength"] = inp.max_length if inp.max_length is not None else DEFAULT_STRING_MAX_LENGTH
    elif inp.type == "image":
        prop["type"] = "string"
        prop["minLength"] = 1
        prop["maxLength"] = inp.max_length if inp.max_length is not None else DEFAULT_IMAGE_REF_MAX_LENGTH
    elif inp.type in ("integer", "number"):
        prop["type"] = inp.type
        if inp.minimum is not None:
            prop["minimum"] = inp.minimum
        if inp.maximum is not None:
            prop["maximum"] = inp.maximum
    elif inp.type == "boolean":
        prop["type"] = "boolean"
    elif inp.type == "seed":
        lo, hi = _seed_bounds(inp)
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
            prop["default"] = -1 if _is_random_seed(inp.default) else inp.default
        elif inp.default is not None:
            prop["default"] = inp.default
    prop["x-input-type"] = inp.type
    return prop


def input_schema(spec: ToolSpec) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) for the inputs object that :func:`bind_inputs` accepts.

    Each property carries ``x-input-type`` (the :data:`INPUT_TYPES` name) as an annotation, so a
    UI can tell an image reference or a seed from a plain string or integer. ``null`` is accepted
    by :func:`bind_inputs` for optional inputs (meaning "absent") but only published for seeds.
    """
    return {
        "$schema": _JSON_SCHEMA_DIALECT,
        "title": spec.name,
        "description": spec.description,
        "type": "object",
        "properties": {inp.name: _property_schema(inp) for inp in spec.inputs},
        "required": [inp.name for inp in spec.inputs if inp.required],
        "additionalProperties": False,
    }


# --------------------------------------------------------------------------- (de)serialisation

_TOOL_KEYS = (
    "slug",
    "name",
    "description",
    "category",
    "base_model",
    "pool",
    "output_classes",
    "accepts_loras",
    "inputs",
    "workflow",
)
_TOOL_REQUIRED = ("slug", "name", "category", "base_model", "workflow", "inputs")
_INPUT_KEYS = (
    "name", "type", "description", "required", "default", "minimum", "maximum", "max_length", "choices",
    "bindings",
)  # fmt: skip


def _binding_to_json(binding: InputBinding) -> str | dict[str, str]:
    if "." in binding.node_id:
        return {"node_id": binding.node_id, "input_name": binding.input_name}
    return f"{binding.node_id}.{binding.input_name}"


def _binding_from_json(value: object, field: str) -> InputBinding:
    if isinstance(value, str):
        node_id, dot, input_name = value.partition(".")
        if not dot or not node_id or not input_name:
            raise ToolDefinitionError(field, f"{value!r} must be written 'node_id.input_name'")
        return InputBinding(node_id, input_name)
    if isinstance(value, Mapping):
        if set(value) != {"node_id", "input_name"}:
            raise ToolDefinitionError(field, "a binding object has exactly the keys node_id and input_name")
        node_id, input_name = value["node_id"], value["input_name"]
        if not isinstance(node_id, str) or not node_id or not isinstance(input_name, str) or not input_name:
            raise ToolDefinitionError(field, "node_id and input_name must be non-empty strings")
        return InputBinding(node_id, input_name)
    raise ToolDefinitionError(field, f"must be a 'node_id.input_name' string, not {_json_type(value)}")


def _optional_number(data: Mapping[str, Any], key: str, field: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolDefinitionError(f"{field}.{key}", f"must be a number, not {_json_type(value)}")
    return value


def _input_from_json(data: object, index: int) -> InputSpec:
    field = f"inputs[{index}]"
    if not isinstance(data, Mapping):
        raise ToolDefinitionError(field, f"must be an object, not {_json_type(data)}")
    for key in data:
        if key not in _INPUT_KEYS:
            raise ToolDefinitionError(f"{field}.{key}", "unknown field")
    for key in ("name", "type", "bindings"):
        if key not in data:
            raise ToolDefinitionError(f"{field}.{key}", "is required")
    name, kind = data["name"], data["type"]
    if not isinstance(name, str):
        raise ToolDefinitionError(f"{field}.name", f"must be a string, not {_json_type(name)}")
    if kind not in INPUT_TYPES:
        raise ToolDefinitionError(f"{field}.type", f"{kind!r} is not one of: " + ", ".join(INPUT_TYPES))
    bindings = data["bindings"]
    if not isinstance(bindings, list):
        raise ToolDefinitionError(f"{field}.bindings", f"must be a list, not {_json_type(bindings)}")
    required = data.get("required", False)
    if not isinstance(required, bool):
        raise ToolDefinitionError(f"{field}.required", "must be true or false")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ToolDefinitionError(f"{field}.description", "must be a string")
    max_length = data.get("max_length")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)):
        raise ToolDefinitionError(f"{field}.max_length", "must be an integer")
    choices = data.get("choices")
    if choices is not None and not isinstance(choices, list):
        raise ToolDefinitionError(f"{field}.choices", f"must be a list, not {_json_type(choices)}")
    return InputSpec(
        name=name,
        type=kind,
        bindings=tuple(_binding_from_json(b, f"{field}.bindings[{i}]") for i, b in enumerate(bindings)),
        required=required,
        default=copy.deepcopy(data.get("default")),
        minimum=_optional_number(data, "minimum", field),
        maximum=_optional_number(data, "maximum", field),
        max_length=max_length,
        choices=None if choices is None else tuple(copy.deepcopy(choices)),
        description=description,
    )


def tool_from_dict(data: Mapping[str, Any]) -> ToolSpec:
    """Build a :class:`ToolSpec` from its JSON form (as written by :func:`tool_to_dict`).

    Format: ``{"slug", "name", "description"?, "category", "base_model", "pool"?,
    "output_classes"?: [str], "accepts_loras"?: bool, "inputs": [input...], "workflow": {...}}``
    where each input is ``{"name", "type", "bindings", "description"?, "required"?, "default"?, "minimum"?,
    "maximum"?, "max_length"?, "choices"?: [...]}``. A binding is the string
    ``"node_id.input_name"`` (split at the first ``.``), or the object
    ``{"node_id": ..., "input_name": ...}``, which :func:`tool_to_dict` writes only when the node
    id itself contains a ``.``. Unknown keys are refused.

    Only the shape is checked here (raising :class:`ToolDefinitionError`, never KeyError or
    TypeError); call :func:`validate_tool` on the result to check its meaning. The workflow and
    values are deep-copied, so the result shares nothing mutable with ``data``.
    """
    if not isinstance(data, Mapping):
        raise ToolDefinitionError("", f"a tool definition must be a JSON object, not {_json_type(data)}")
    for key in data:
        if key not in _TOOL_KEYS:
            raise ToolDefinitionError(str(key), "unknown field")
    for key in _TOOL_REQUIRED:
        if key not in data:
            raise ToolDefinitionError(key, "is required")
    strings: dict[str, str] = {}
    for key, fallback in (
        ("slug", None), ("name", None), ("description", ""), ("category", None), ("base_model", None),
        ("pool", "default"),
    ):  # fmt: skip
        value = data.get(key, fallback)
        if not isinstance(value, str):
            raise ToolDefinitionError(key, f"must be a string, not {_json_type(value)}")
        strings[key] = value
    accepts_loras = data.get("accepts_loras", True)
    if not isinstance(accepts_loras, bool):
        raise ToolDefinitionError("accepts_loras", f"must be true or false, not {_json_type(accepts_loras)}")
    output_classes = data.get("output_classes", [])
    if not isinstance(output_classes, list) or not all(isinstance(c, str) for c in output_classes):
        raise ToolDefinitionError("output_classes", "must be a list of class names")
    workflow = data["workflow"]
    if not isinstance(workflow, Mapping):
        raise ToolDefinitionError("workflow", f"must be an object, not {_json_type(workflow)}")
    inputs = data["inputs"]
    if not isinstance(inputs, list):
        raise ToolDefinitionError("inputs", f"must be a list, not {_json_type(inputs)}")
    return ToolSpec(
        slug=strings["slug"],
        name=strings["name"],
        description=strings["description"],
        category=strings["category"],
        base_model=strings["base_model"],
        workflow=copy.deepcopy(dict(workflow)),
        inputs=tuple(_input_from_json(item, i) for i, item in enumerate(inputs)),
        pool=strings["pool"],
        output_classes=frozenset(output_classes),
        accepts_loras=accepts_loras,
    )


def tool_to_dict(spec: ToolSpec) -> dict[str, Any]:
    """The JSON form of ``spec`` (see :func:`tool_from_dict`); fresh objects, safe to mutate.

    Every top-level key is written. Per input, ``name``, ``type``, ``description``, ``required``
    and ``bindings`` are always written; ``default``, ``minimum``, ``maximum``, ``max_length`` and
    ``choices`` only when not ``None``. ``output_classes`` is sorted.
    """
    inputs: list[dict[str, Any]] = []
    for inp in spec.inputs:
        item: dict[str, Any] = {
            "name": inp.name,
            "type": inp.type,
            "description": inp.description,
            "required": inp.required,
        }
        for key in ("default", "minimum", "maximum", "max_length"):
            value = getattr(inp, key)
            if value is not None:
                item[key] = copy.deepcopy(value)
        if inp.choices is not None:
            item["choices"] = copy.deepcopy(list(inp.choices))
        item["bindings"] = [_binding_to_json(b) for b in inp.bindings]
        inputs.append(item)
    return {
        "slug": spec.slug,
        "name": spec.name,
        "description": spec.description,
        "category": spec.category,
        "base_model": spec.base_model,
        "pool": spec.pool,
        "output_classes": sorted(spec.output_classes),
        "accepts_loras": spec.accepts_loras,
        "inputs": inputs,
        "workflow": copy.deepcopy(dict(spec.workflow)),
    }
