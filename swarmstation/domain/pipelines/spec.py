"""What a pipeline is: steps (a tool and where each of its inputs comes from), typed pipeline
inputs and the steps whose outputs are the result; and its JSON wire form.

The wire form, which the web canvas, the chat agent and the API all speak::

    {"inputs": {"idea": {"type": "string", "required": true, "default": null,
                         "label": "Idea", "description": ""}},
     "steps": {
       "gen": {"tool": "sdxl-txt2img", "inputs": {"prompt": {"input": "idea"}, "seed": 7},
               "variations": {"count": 4}},
       "big": {"tool": "upscale-4x", "inputs": {"image": {"from": "gen", "output": "image"}}}},
     "outputs": ["big"]}

A step input is a plain JSON value (a :class:`LiteralValue`), ``{"input": NAME}`` (a
:class:`FromInput`: a pipeline input) or ``{"from": STEP, "output": PORT}`` (a :class:`FromStep`:
another step's output port). No tool input takes a JSON object, so an object is always a
reference and one that is neither form is refused rather than guessed at.

``variations`` fans a step out into several jobs: ``{"count": N}`` varies the seed,
``{"input": NAME, "values": [...]}`` gives one tool input a value per job. ``outputs`` is
optional; without it the run's result is the steps no other step consumes (:func:`output_steps`).

Parsing (:func:`pipeline_from_dict`) checks only the shape; :mod:`.validate` checks the graph
against the tools. Both raise :class:`PipelineError`, whose field is a dotted path into the wire
form (``steps.big.inputs.image``) so that a 422 names the step and the port.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from swarmstation.domain.errors import FieldError, InvalidInput
from swarmstation.domain.tools import INPUT_TYPES, InputType

__all__ = [
    "IDENTIFIER_PATTERN",
    "FromInput",
    "FromStep",
    "LiteralValue",
    "Pipeline",
    "PipelineError",
    "PipelineInput",
    "Source",
    "Step",
    "Variations",
    "output_steps",
    "pipeline_from_dict",
    "pipeline_to_dict",
    "source_from_json",
    "source_to_json",
]

#: Step ids and pipeline input names: short identifiers, so that they read well in a field path.
IDENTIFIER_PATTERN = r"[A-Za-z_][A-Za-z0-9_-]{0,63}"
IDENTIFIER_RE = re.compile(IDENTIFIER_PATTERN)

_SOURCE_FORMS = 'a literal value, {"input": NAME} or {"from": STEP, "output": PORT}'


class PipelineError(InvalidInput):
    """A pipeline (or a run's input values) is invalid.

    ``field`` is a dotted path into the wire form (``steps.big.inputs.image``, ``steps.big.tool``,
    ``inputs.idea``, ``steps`` for the graph as a whole); ``step`` and ``port`` name the step and
    its input (or the pipeline input) at fault, when there is one, so that clients can point at it.
    """

    code = "invalid_pipeline"

    def __init__(self, field: str, reason: str, *, step: str | None = None, port: str | None = None) -> None:
        super().__init__(f"{field}: {reason}" if field else reason, errors=[FieldError(field, reason)])
        self.field = field
        self.reason = reason
        self.step = step
        self.port = port


# --------------------------------------------------------------------------- the types


@dataclass(frozen=True)
class LiteralValue:
    """A value written in the pipeline itself. JSON lists are kept as tuples (immutable)."""

    value: Any


@dataclass(frozen=True)
class FromInput:
    """The value of the pipeline input ``name``, given when the run is created."""

    name: str


@dataclass(frozen=True)
class FromStep:
    """Output port ``output`` of step ``step``; for an image, an object-store reference."""

    step: str
    output: str


Source = LiteralValue | FromInput | FromStep


@dataclass(frozen=True)
class Variations:
    """Fan a step out into ``count`` jobs.

    With ``input`` None, item ``i`` gets the seed plus ``i`` (the tool's seed input). Otherwise item
    ``i`` gets ``values[i]`` for the tool input ``input``, and ``count == len(values)``.
    """

    count: int
    input: str | None = None
    values: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Step:
    """One step: the tool it runs and the source of each input it sets."""

    id: str
    tool: str
    inputs: Mapping[str, Source] = field(default_factory=dict)
    variations: Variations | None = None


@dataclass(frozen=True)
class PipelineInput:
    """A value the pipeline asks for when it runs; ``type`` is one of the tools' input types."""

    name: str
    type: InputType
    required: bool = True
    default: Any = None
    label: str = ""
    description: str = ""


@dataclass(frozen=True)
class Pipeline:
    """A graph of steps. ``outputs`` is empty when the wire form gave none (see :func:`output_steps`)."""

    inputs: Mapping[str, PipelineInput] = field(default_factory=dict)
    steps: Mapping[str, Step] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()


def output_steps(p: Pipeline) -> tuple[str, ...]:
    """The steps whose outputs are the run's result: ``p.outputs``, or else every step that no
    other step consumes (the ends of the graph), in the pipeline's order."""
    if p.outputs:
        return p.outputs
    consumed = {
        src.step for step in p.steps.values() for src in step.inputs.values() if isinstance(src, FromStep)
    }
    return tuple(sid for sid in p.steps if sid not in consumed)


# --------------------------------------------------------------------------- JSON form


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_thaw(v) for v in value]
    return value


def _identifier(value: object, where: str, what: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER_RE.fullmatch(value):
        shown = repr(value) if isinstance(value, str) else "a non-string"
        raise PipelineError(
            where,
            f"{shown} is not a valid {what} (letters, digits, '_' and '-', starting with a letter "
            "or '_', at most 64 characters)",
        )
    return value


def source_from_json(raw: object, where: str = "") -> Source:
    """One step input in wire form as a :class:`Source`."""
    if isinstance(raw, Mapping):
        keys = set(raw)
        if keys == {"input"}:
            name = raw["input"]
            if not isinstance(name, str) or not name:
                raise PipelineError(where, '"input" must name a pipeline input')
            return FromInput(name)
        if keys == {"from", "output"}:
            step, port = raw["from"], raw["output"]
            if not isinstance(step, str) or not step:
                raise PipelineError(where, '"from" must name a step')
            if not isinstance(port, str) or not port:
                raise PipelineError(where, '"output" must name an output port of the step')
            return FromStep(step, port)
        if "from" in keys and "output" not in keys:
            raise PipelineError(where, '{"from": STEP} needs "output": PORT, the output port to take')
        raise PipelineError(where, f"an object here must be one of {_SOURCE_FORMS}")
    return LiteralValue(_freeze(raw))


def source_to_json(src: Source) -> Any:
    """A :class:`Source` in wire form (the inverse of :func:`source_from_json`)."""
    if isinstance(src, FromInput):
        return {"input": src.name}
    if isinstance(src, FromStep):
        return {"from": src.step, "output": src.output}
    return _thaw(src.value)


def _variations_from_json(raw: object, where: str) -> Variations:
    if not isinstance(raw, Mapping):
        raise PipelineError(where, 'expected {"count": N} or {"input": NAME, "values": [...]}')
    unknown = sorted(set(raw) - {"count", "input", "values"})
    if unknown:
        raise PipelineError(f"{where}.{unknown[0]}", "unknown field")
    count = raw.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        raise PipelineError(f"{where}.count", "expected an integer")
    if "input" not in raw and "values" not in raw:
        if count is None:
            raise PipelineError(where, 'expected {"count": N} or {"input": NAME, "values": [...]}')
        if count < 1:
            raise PipelineError(f"{where}.count", "must be at least 1")
        return Variations(count=count)
    name = raw.get("input")
    if not isinstance(name, str) or not name:
        raise PipelineError(f"{where}.input", "must name an input of the step's tool")
    values = raw.get("values")
    if not isinstance(values, list | tuple) or not values:
        raise PipelineError(f"{where}.values", "expected a non-empty list of values, one per variation")
    if count is not None and count != len(values):
        raise PipelineError(f"{where}.count", f"is {count} but there are {len(values)} values")
    return Variations(count=len(values), input=name, values=tuple(_freeze(v) for v in values))


def _variations_to_json(v: Variations) -> dict[str, Any]:
    if v.input is None:
        return {"count": v.count}
    return {"input": v.input, "values": [_thaw(x) for x in (v.values or ())]}


def _step_from_json(sid: str, raw: object) -> Step:
    where = f"steps.{sid}"
    if not isinstance(raw, Mapping):
        raise PipelineError(where, 'expected an object {"tool": SLUG, "inputs": {...}}', step=sid)
    unknown = sorted(set(raw) - {"tool", "inputs", "variations"})
    if unknown:
        raise PipelineError(f"{where}.{unknown[0]}", "unknown field", step=sid)
    tool = raw.get("tool")
    if not isinstance(tool, str) or not tool:
        raise PipelineError(f"{where}.tool", "must name a tool (its slug)", step=sid)
    raw_inputs = raw.get("inputs", {})
    if raw_inputs is None:
        raw_inputs = {}
    if not isinstance(raw_inputs, Mapping):
        raise PipelineError(f"{where}.inputs", "expected an object of input name to value", step=sid)
    inputs: dict[str, Source] = {}
    for name, value in raw_inputs.items():
        if not isinstance(name, str):
            raise PipelineError(f"{where}.inputs", "input names must be strings", step=sid)
        try:
            inputs[name] = source_from_json(value, f"{where}.inputs.{name}")
        except PipelineError as exc:
            raise PipelineError(exc.field, exc.reason, step=sid, port=name) from None
    variations = None
    if raw.get("variations") is not None:
        try:
            variations = _variations_from_json(raw["variations"], f"{where}.variations")
        except PipelineError as exc:
            raise PipelineError(exc.field, exc.reason, step=sid) from None
    return Step(id=sid, tool=tool, inputs=inputs, variations=variations)


def _input_from_json(name: str, raw: object) -> PipelineInput:
    where = f"inputs.{name}"
    if not isinstance(raw, Mapping):
        raise PipelineError(where, 'expected an object {"type": TYPE, ...}', port=name)
    unknown = sorted(set(raw) - {"type", "required", "default", "label", "description"})
    if unknown:
        raise PipelineError(f"{where}.{unknown[0]}", "unknown field", port=name)
    kind = raw.get("type")
    if kind not in INPUT_TYPES:
        raise PipelineError(
            f"{where}.type", f"{kind!r} is not an input type (one of: {', '.join(INPUT_TYPES)})", port=name
        )
    required = raw.get("required", True)
    if not isinstance(required, bool):
        raise PipelineError(f"{where}.required", "expected a boolean", port=name)
    label = raw.get("label", "")
    description = raw.get("description", "")
    for key, text in (("label", label), ("description", description)):
        if text is None:
            continue
        if not isinstance(text, str):
            raise PipelineError(f"{where}.{key}", "expected a string", port=name)
    return PipelineInput(
        name=name,
        type=kind,
        required=required,
        default=_freeze(raw.get("default")),
        label=label or "",
        description=description or "",
    )


def pipeline_from_dict(data: object) -> Pipeline:
    """Read a pipeline's wire form, checking its shape (not its tools: see ``validate_pipeline``)."""
    if not isinstance(data, Mapping):
        raise PipelineError("", 'a pipeline is an object {"inputs": {...}, "steps": {...}}')
    unknown = sorted(set(data) - {"inputs", "steps", "outputs"})
    if unknown:
        raise PipelineError(unknown[0], "unknown field")
    raw_inputs = data.get("inputs")
    if raw_inputs is None:
        raw_inputs = {}
    if not isinstance(raw_inputs, Mapping):
        raise PipelineError("inputs", "expected an object of input name to its declaration")
    inputs: dict[str, PipelineInput] = {}
    for name, raw in raw_inputs.items():
        _identifier(name, f"inputs.{name}" if isinstance(name, str) else "inputs", "pipeline input name")
        inputs[name] = _input_from_json(name, raw)
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, Mapping) or not raw_steps:
        raise PipelineError("steps", "expected a non-empty object of step id to step")
    steps: dict[str, Step] = {}
    for sid, raw in raw_steps.items():
        _identifier(sid, f"steps.{sid}" if isinstance(sid, str) else "steps", "step id")
        steps[sid] = _step_from_json(sid, raw)
    raw_outputs = data.get("outputs")
    outputs: tuple[str, ...] = ()
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list | tuple) or not all(isinstance(o, str) for o in raw_outputs):
            raise PipelineError("outputs", "expected a list of step ids")
        if len(set(raw_outputs)) != len(raw_outputs):
            raise PipelineError("outputs", "a step is named twice")
        outputs = tuple(raw_outputs)
    return Pipeline(inputs=inputs, steps=steps, outputs=outputs)


def pipeline_to_dict(p: Pipeline) -> dict[str, Any]:
    """The wire form of ``p``; ``pipeline_from_dict(pipeline_to_dict(p)) == p``."""
    out: dict[str, Any] = {
        "inputs": {
            name: {
                "type": inp.type,
                "required": inp.required,
                "default": _thaw(inp.default),
                "label": inp.label,
                "description": inp.description,
            }
            for name, inp in p.inputs.items()
        },
        "steps": {},
    }
    for sid, step in p.steps.items():
        raw: dict[str, Any] = {
            "tool": step.tool,
            "inputs": {name: source_to_json(src) for name, src in step.inputs.items()},
        }
        if step.variations is not None:
            raw["variations"] = _variations_to_json(step.variations)
        out["steps"][sid] = raw
    if p.outputs:
        out["outputs"] = list(p.outputs)
    return out
