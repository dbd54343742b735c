"""Tool definitions: :func:`validate_tool` (a ToolSpec is consistent with its workflow) and the
JSON form (:func:`tool_from_dict`, :func:`tool_to_dict`)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from swarmstation.domain.tools.ports import (
    TEXT_OUTPUT_CLASSES,
    comfy_outputs,
    is_output_node,
    node_port_types,
)
from swarmstation.domain.tools.spec import (
    BASE_MODELS,
    CATEGORY_RE,
    INPUT_NAME_RE,
    INPUT_TYPES,
    LOCAL_POOL,
    MAX_NAME_LENGTH,
    POOL_RE,
    PORT_TYPES,
    SEED_MAX,
    SLUG_RE,
    TOOL_KINDS,
    InputBinding,
    InputSpec,
    OutputSpec,
    ToolDefinitionError,
    ToolSpec,
)
from swarmstation.domain.tools.values import (
    _BadValue,
    check_many,
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


def _validate_input_spec(spec: InputSpec, field: str, *, local: bool) -> None:
    if spec.type not in INPUT_TYPES:
        raise ToolDefinitionError(f"{field}.type", f"{spec.type!r} is not one of: " + ", ".join(INPUT_TYPES))
    if not isinstance(spec.required, bool):
        raise ToolDefinitionError(f"{field}.required", "must be true or false")
    if not isinstance(spec.description, str):
        raise ToolDefinitionError(f"{field}.description", "must be a string")
    if not isinstance(spec.many, bool):
        raise ToolDefinitionError(f"{field}.many", "must be true or false")
    if spec.many and spec.type != "image":
        raise ToolDefinitionError(f"{field}.many", f"only image inputs take a list, not {spec.type} inputs")
    if spec.many and not local:
        # A ComfyUI binding holds one value; a list of images has nowhere to go in the workflow.
        raise ToolDefinitionError(f"{field}.many", "a ComfyUI tool's image inputs take one image each")
    if spec.max_items is not None:
        if not spec.many:
            raise ToolDefinitionError(f"{field}.max_items", "applies only to inputs with many: true")
        if isinstance(spec.max_items, bool) or not isinstance(spec.max_items, int) or spec.max_items < 1:
            raise ToolDefinitionError(f"{field}.max_items", "must be a positive integer")

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
                check_many(spec, spec.default) if spec.many else check_value(spec, spec.default)
            except _BadValue as exc:
                raise ToolDefinitionError(f"{field}.default", exc.reason) from None


def _validate_metadata(spec: ToolSpec) -> None:
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
    if spec.kind not in TOOL_KINDS:
        raise ToolDefinitionError("kind", f"{spec.kind!r} is not one of: " + ", ".join(TOOL_KINDS))
    if not isinstance(spec.pool, str) or not POOL_RE.fullmatch(spec.pool):
        raise ToolDefinitionError("pool", "must be a lower-case name of a-z, 0-9, '-' and '_'")
    if not isinstance(spec.accepts_loras, bool):
        raise ToolDefinitionError("accepts_loras", "must be true or false")
    if not isinstance(spec.output_classes, frozenset | set) or not all(
        isinstance(c, str) and c for c in spec.output_classes
    ):
        raise ToolDefinitionError("output_classes", "must be a set of non-empty class names")


def _validate_workflow(spec: ToolSpec) -> dict[str, Any]:
    graph = dict(spec.workflow) if isinstance(spec.workflow, Mapping) else spec.workflow
    try:
        # Known text nodes are ComfyUI output nodes too, so a text-only workflow is not refused.
        validate_graph(graph, extra_output_classes=frozenset(spec.output_classes) | TEXT_OUTPUT_CLASSES)
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
    return graph


def _validate_local_shape(spec: ToolSpec) -> None:
    """A local tool runs on the control plane: nothing of a ComfyUI workflow applies to it."""
    if not isinstance(spec.workflow, Mapping) or spec.workflow:
        raise ToolDefinitionError("workflow", f"a {spec.kind} tool has no workflow (it must be {{}})")
    if spec.pool != LOCAL_POOL:
        raise ToolDefinitionError(
            "pool", f"a {spec.kind} tool runs in the {LOCAL_POOL!r} pool, not {spec.pool!r}"
        )
    if spec.accepts_loras:
        raise ToolDefinitionError("accepts_loras", f"a {spec.kind} tool takes no LoRAs")
    if spec.output_classes:
        raise ToolDefinitionError("output_classes", "apply only to ComfyUI tools")


def _validate_bindings(
    inp: InputSpec, field: str, graph: Mapping[str, Any], targets: dict[tuple[str, str], str]
) -> None:
    if not isinstance(inp.bindings, tuple) or not inp.bindings:
        raise ToolDefinitionError(f"{field}.bindings", "an input must be bound to at least one node input")
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


def _validate_outputs(spec: ToolSpec, graph: Mapping[str, Any]) -> None:
    if not isinstance(spec.outputs, tuple):
        raise ToolDefinitionError("outputs", "must be a tuple of OutputSpec")
    if not spec.outputs:
        raise ToolDefinitionError("outputs", "a tool must declare at least one output")
    names: set[str] = set()
    nodes: dict[str, str] = {}
    for index, out in enumerate(spec.outputs):
        field = f"outputs[{index}]"
        if not isinstance(out, OutputSpec):
            raise ToolDefinitionError(field, "must be an OutputSpec")
        if not isinstance(out.name, str) or not INPUT_NAME_RE.fullmatch(out.name):
            raise ToolDefinitionError(
                f"{field}.name", f"{out.name!r} must be an identifier (letters, digits, '_'; at most 64)"
            )
        if out.name in names:
            raise ToolDefinitionError(f"{field}.name", f"output {out.name!r} is defined twice")
        names.add(out.name)
        if out.type not in PORT_TYPES:
            raise ToolDefinitionError(
                f"{field}.type", f"{out.type!r} is not one of: " + ", ".join(PORT_TYPES)
            )
        if not isinstance(out.many, bool):
            raise ToolDefinitionError(f"{field}.many", "must be true or false")
        if not isinstance(out.description, str):
            raise ToolDefinitionError(f"{field}.description", "must be a string")
        if spec.kind != "comfyui":
            if out.node_id is not None:
                raise ToolDefinitionError(f"{field}.node_id", f"a {spec.kind} tool's outputs name no node")
            continue
        if not isinstance(out.node_id, str) or not out.node_id:
            raise ToolDefinitionError(f"{field}.node_id", "a ComfyUI tool's output names its output node")
        node = graph.get(out.node_id)
        if node is None:
            raise ToolDefinitionError(
                f"{field}.node_id", f"node {out.node_id!r} does not exist in the workflow"
            )
        class_type = node["class_type"]
        if not is_output_node(class_type, frozenset(spec.output_classes)):
            raise ToolDefinitionError(
                f"{field}.node_id",
                f"node {out.node_id!r} ({class_type}) is not an output node "
                "(name its class in output_classes if it is a custom one)",
            )
        fits = node_port_types(class_type, frozenset(spec.output_classes))
        if out.type not in fits:
            raise ToolDefinitionError(
                f"{field}.type",
                f"node {out.node_id!r} ({class_type}) produces " + " or ".join(fits) + f", not {out.type}",
            )
        if out.node_id in nodes:
            raise ToolDefinitionError(
                f"{field}.node_id", f"node {out.node_id!r} already fills output {nodes[out.node_id]!r}"
            )
        nodes[out.node_id] = out.name


def validate_tool(spec: ToolSpec) -> None:
    """Check a tool definition; raise :class:`ToolDefinitionError` on the first problem.

    Checked: the slug (:data:`SLUG_PATTERN`), a non-empty name, the category and pool (lower-case
    slugs), ``base_model`` in :data:`BASE_MODELS`, ``kind`` in :data:`TOOL_KINDS`, unique
    identifier-like input names, each input's type, bounds, choices and default, and the outputs:
    at least one, unique identifier-like names, a type in :data:`PORT_TYPES` (reserved types are
    accepted as declarations).

    A ComfyUI tool: the workflow (:func:`validate_graph`, with ``output_classes`` as extra
    outputs), model names already in normal form (:func:`normalise_model_name`), each binding
    (it must name an existing node and one of that node's existing inputs, must not target a
    linked input, and no two bindings may share a target), and each output's ``node_id`` (an
    existing output node whose class can produce the port's type, one port per node).

    A local tool (``llm``, ``image``): an empty workflow, inputs without bindings, pool
    :data:`LOCAL_POOL`, no LoRAs, no output classes, outputs without ``node_id``; only its image
    inputs may be ``many``.
    """
    _validate_metadata(spec)
    local = spec.kind != "comfyui"
    graph: Mapping[str, Any] = {}
    if local:
        _validate_local_shape(spec)
    else:
        graph = _validate_workflow(spec)

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
        _validate_input_spec(inp, field, local=local)
        if local:
            if inp.bindings != ():
                raise ToolDefinitionError(
                    f"{field}.bindings", f"a {spec.kind} tool's inputs bind to no workflow"
                )
        else:
            _validate_bindings(inp, field, graph, targets)

    _validate_outputs(spec, graph)


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
    "kind",
    "inputs",
    "outputs",
    "workflow",
)
_TOOL_REQUIRED = ("slug", "name", "category", "base_model", "inputs")
_INPUT_KEYS = (
    "name", "type", "description", "required", "default", "minimum", "maximum", "max_length", "choices",
    "many", "max_items", "bindings",
)  # fmt: skip
_OUTPUT_KEYS = ("name", "type", "node_id", "many", "description")


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


def _input_from_json(data: object, index: int, *, local: bool) -> InputSpec:
    field = f"inputs[{index}]"
    if not isinstance(data, Mapping):
        raise ToolDefinitionError(field, f"must be an object, not {json_type(data)}")
    for key in data:
        if key not in _INPUT_KEYS:
            raise ToolDefinitionError(f"{field}.{key}", "unknown field")
    for key in ("name", "type"):
        if key not in data:
            raise ToolDefinitionError(f"{field}.{key}", "is required")
    if "bindings" not in data and not local:
        raise ToolDefinitionError(f"{field}.bindings", "is required")
    name, kind = data["name"], data["type"]
    if not isinstance(name, str):
        raise ToolDefinitionError(f"{field}.name", f"must be a string, not {json_type(name)}")
    if kind not in INPUT_TYPES:
        raise ToolDefinitionError(f"{field}.type", f"{kind!r} is not one of: " + ", ".join(INPUT_TYPES))
    bindings = data.get("bindings", [])
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
    many = data.get("many", False)
    if not isinstance(many, bool):
        raise ToolDefinitionError(f"{field}.many", f"must be true or false, not {json_type(many)}")
    max_items = data.get("max_items")
    if max_items is not None and (isinstance(max_items, bool) or not isinstance(max_items, int)):
        raise ToolDefinitionError(f"{field}.max_items", "must be an integer")
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
        many=many,
        max_items=max_items,
    )


def _output_from_json(data: object, index: int) -> OutputSpec:
    field = f"outputs[{index}]"
    if not isinstance(data, Mapping):
        raise ToolDefinitionError(field, f"must be an object, not {json_type(data)}")
    for key in data:
        if key not in _OUTPUT_KEYS:
            raise ToolDefinitionError(f"{field}.{key}", "unknown field")
    for key in ("name", "type"):
        if key not in data:
            raise ToolDefinitionError(f"{field}.{key}", "is required")
    name, kind = data["name"], data["type"]
    if not isinstance(name, str):
        raise ToolDefinitionError(f"{field}.name", f"must be a string, not {json_type(name)}")
    if kind not in PORT_TYPES:
        raise ToolDefinitionError(f"{field}.type", f"{kind!r} is not one of: " + ", ".join(PORT_TYPES))
    node_id = data.get("node_id")
    if node_id is not None and not isinstance(node_id, str):
        raise ToolDefinitionError(f"{field}.node_id", f"must be a string, not {json_type(node_id)}")
    many = data.get("many", False)
    if not isinstance(many, bool):
        raise ToolDefinitionError(f"{field}.many", f"must be true or false, not {json_type(many)}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ToolDefinitionError(f"{field}.description", "must be a string")
    return OutputSpec(name=name, type=kind, node_id=node_id, many=many, description=description)


def tool_from_dict(data: Mapping[str, Any]) -> ToolSpec:
    """Build a :class:`ToolSpec` from its JSON form (as written by :func:`tool_to_dict`).

    Format: ``{"slug", "name", "description"?, "category", "base_model", "kind"?, "pool"?,
    "output_classes"?: [str], "accepts_loras"?: bool, "inputs": [input...], "outputs"?: [output...],
    "workflow": {...}}`` where each input is ``{"name", "type", "bindings", "description"?,
    "required"?, "default"?, "minimum"?, "maximum"?, "max_length"?, "choices"?: [...], "many"?,
    "max_items"?}`` and each output ``{"name", "type", "node_id"?, "many"?, "description"?}``.

    ``kind`` defaults to ``"comfyui"``. A ComfyUI tool without ``outputs`` gets the ports
    :func:`comfy_outputs` derives from its output nodes (tools saved before outputs existed). A
    local tool (``llm``, ``image``) must declare ``outputs``; its ``workflow`` and its inputs'
    ``bindings`` may be left out (empty), its ``pool`` defaults to ``"control"`` and
    ``accepts_loras`` to false. A binding is the string
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
    kind = data.get("kind", "comfyui")
    if kind not in TOOL_KINDS:
        raise ToolDefinitionError("kind", f"{kind!r} is not one of: " + ", ".join(TOOL_KINDS))
    local = kind != "comfyui"
    if not local and "workflow" not in data:
        raise ToolDefinitionError("workflow", "is required")
    strings: dict[str, str] = {}
    for key, fallback in (
        ("slug", None), ("name", None), ("description", ""), ("category", None), ("base_model", None),
        ("pool", LOCAL_POOL if local else "default"),
    ):  # fmt: skip
        value = data.get(key, fallback)
        if not isinstance(value, str):
            raise ToolDefinitionError(key, f"must be a string, not {json_type(value)}")
        strings[key] = value
    accepts_loras = data.get("accepts_loras", not local)
    if not isinstance(accepts_loras, bool):
        raise ToolDefinitionError("accepts_loras", f"must be true or false, not {json_type(accepts_loras)}")
    output_classes = data.get("output_classes", [])
    if not isinstance(output_classes, list) or not all(isinstance(c, str) for c in output_classes):
        raise ToolDefinitionError("output_classes", "must be a list of class names")
    workflow = data.get("workflow", {})
    if not isinstance(workflow, Mapping):
        raise ToolDefinitionError("workflow", f"must be an object, not {json_type(workflow)}")
    inputs = data["inputs"]
    if not isinstance(inputs, list):
        raise ToolDefinitionError("inputs", f"must be a list, not {json_type(inputs)}")
    if "outputs" in data:
        raw_outputs = data["outputs"]
        if not isinstance(raw_outputs, list):
            raise ToolDefinitionError("outputs", f"must be a list, not {json_type(raw_outputs)}")
        outputs = tuple(_output_from_json(item, i) for i, item in enumerate(raw_outputs))
    elif local:
        raise ToolDefinitionError("outputs", f"is required for a {kind} tool")
    else:
        outputs = comfy_outputs(workflow, frozenset(output_classes))
    return ToolSpec(
        slug=strings["slug"],
        name=strings["name"],
        description=strings["description"],
        category=strings["category"],
        base_model=strings["base_model"],
        workflow=copy.deepcopy(dict(workflow)),
        inputs=tuple(_input_from_json(item, i, local=local) for i, item in enumerate(inputs)),
        pool=strings["pool"],
        output_classes=frozenset(output_classes),
        accepts_loras=accepts_loras,
        kind=kind,
        outputs=outputs,
    )


def tool_to_dict(spec: ToolSpec) -> dict[str, Any]:
    """The JSON form of ``spec`` (see :func:`tool_from_dict`); fresh objects, safe to mutate.

    Every top-level key is written. Per input, ``name``, ``type``, ``description``, ``required``
    and ``bindings`` are always written; ``default``, ``minimum``, ``maximum``, ``max_length``,
    ``choices`` and ``max_items`` only when not ``None``, ``many`` only when true. Per output,
    ``name`` and ``type`` always; ``node_id`` when set, ``many`` when true, ``description`` when
    not empty. ``output_classes`` is sorted.
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
        if inp.many:
            item["many"] = True
        if inp.max_items is not None:
            item["max_items"] = inp.max_items
        item["bindings"] = [_binding_to_json(b) for b in inp.bindings]
        inputs.append(item)
    outputs: list[dict[str, Any]] = []
    for out in spec.outputs:
        port: dict[str, Any] = {"name": out.name, "type": out.type}
        if out.node_id is not None:
            port["node_id"] = out.node_id
        if out.many:
            port["many"] = True
        if out.description:
            port["description"] = out.description
        outputs.append(port)
    return {
        "slug": spec.slug,
        "name": spec.name,
        "description": spec.description,
        "category": spec.category,
        "base_model": spec.base_model,
        "pool": spec.pool,
        "output_classes": sorted(spec.output_classes),
        "accepts_loras": spec.accepts_loras,
        "kind": spec.kind,
        "inputs": inputs,
        "outputs": outputs,
        "workflow": copy.deepcopy(dict(spec.workflow)),
    }
