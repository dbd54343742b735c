"""Tool definitions: :func:`validate_tool` (a ToolSpec is consistent with its workflow) and the
JSON form (:func:`tool_from_dict`, :func:`tool_to_dict`)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from swarmstation.domain.tools.spec import (
    BASE_MODELS,
    CATEGORY_RE,
    INPUT_NAME_RE,
    INPUT_TYPES,
    MAX_NAME_LENGTH,
    POOL_RE,
    SEED_MAX,
    SLUG_RE,
    InputBinding,
    InputSpec,
    ToolDefinitionError,
    ToolSpec,
)
from swarmstation.domain.tools.values import (
    _BadValue,
    check_value,
    format_value,
    is_random_seed,
    json_type,
    seed_bounds,
)
from swarmstation.domain.workflow import (
    MODEL_INPUTS,
    WorkflowError,
    normalise_model_name,
    validate_graph,
)

# --------------------------------------------------------------------------- validation


def _input_field(spec: InputSpec, index: int) -> str:
    if isinstance(spec.name, str) and INPUT_NAME_RE.fullmatch(spec.name):
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
        lo, hi = seed_bounds(spec)
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
                value = check_value(unchecked, choice)
            except _BadValue as exc:
                raise ToolDefinitionError(f"{field}.choices[{i}]", exc.reason) from None
            if value in seen:
                raise ToolDefinitionError(f"{field}.choices[{i}]", f"{format_value(choice)} is listed twice")
            seen.append(value)

    if spec.default is not None:
        if spec.required:
            raise ToolDefinitionError(f"{field}.default", "a required input cannot have a default")
        if not (spec.type == "seed" and is_random_seed(spec.default)):
            try:
                check_value(spec, spec.default)
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
    if not isinstance(spec.slug, str) or not SLUG_RE.fullmatch(spec.slug):
        raise ToolDefinitionError(
            "slug", "must be 2-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
        )
    if not isinstance(spec.name, str) or not spec.name.strip():
        raise ToolDefinitionError("name", "must not be empty")
    if len(spec.name) > MAX_NAME_LENGTH:
        raise ToolDefinitionError("name", f"is longer than {MAX_NAME_LENGTH} characters")
    if not isinstance(spec.description, str):
        raise ToolDefinitionError("description", "must be a string")
    if not isinstance(spec.category, str) or not CATEGORY_RE.fullmatch(spec.category):
        raise ToolDefinitionError("category", "must be a lower-case slug such as 'text-to-image'")
    if spec.base_model not in BASE_MODELS:
        raise ToolDefinitionError(
            "base_model", f"{spec.base_model!r} is not one of: " + ", ".join(BASE_MODELS)
        )
    if not isinstance(spec.pool, str) or not POOL_RE.fullmatch(spec.pool):
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
        if not isinstance(inp.name, str) or not INPUT_NAME_RE.fullmatch(inp.name):
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
    raise ToolDefinitionError(field, f"must be a 'node_id.input_name' string, not {json_type(value)}")


def _optional_number(data: Mapping[str, Any], key: str, field: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolDefinitionError(f"{field}.{key}", f"must be a number, not {json_type(value)}")
    return value


def _input_from_json(data: object, index: int) -> InputSpec:
    field = f"inputs[{index}]"
    if not isinstance(data, Mapping):
        raise ToolDefinitionError(field, f"must be an object, not {json_type(data)}")
    for key in data:
        if key not in _INPUT_KEYS:
            raise ToolDefinitionError(f"{field}.{key}", "unknown field")
    for key in ("name", "type", "bindings"):
        if key not in data:
            raise ToolDefinitionError(f"{field}.{key}", "is required")
    name, kind = data["name"], data["type"]
    if not isinstance(name, str):
        raise ToolDefinitionError(f"{field}.name", f"must be a string, not {json_type(name)}")
    if kind not in INPUT_TYPES:
        raise ToolDefinitionError(f"{field}.type", f"{kind!r} is not one of: " + ", ".join(INPUT_TYPES))
    bindings = data["bindings"]
    if not isinstance(bindings, list):
        raise ToolDefinitionError(f"{field}.bindings", f"must be a list, not {json_type(bindings)}")
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
        raise ToolDefinitionError(f"{field}.choices", f"must be a list, not {json_type(choices)}")
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
        raise ToolDefinitionError("", f"a tool definition must be a JSON object, not {json_type(data)}")
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
            raise ToolDefinitionError(key, f"must be a string, not {json_type(value)}")
        strings[key] = value
    accepts_loras = data.get("accepts_loras", True)
    if not isinstance(accepts_loras, bool):
        raise ToolDefinitionError("accepts_loras", f"must be true or false, not {json_type(accepts_loras)}")
    output_classes = data.get("output_classes", [])
    if not isinstance(output_classes, list) or not all(isinstance(c, str) for c in output_classes):
        raise ToolDefinitionError("output_classes", "must be a list of class names")
    workflow = data["workflow"]
    if not isinstance(workflow, Mapping):
        raise ToolDefinitionError("workflow", f"must be an object, not {json_type(workflow)}")
    inputs = data["inputs"]
    if not isinstance(inputs, list):
        raise ToolDefinitionError("inputs", f"must be a list, not {json_type(inputs)}")
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
