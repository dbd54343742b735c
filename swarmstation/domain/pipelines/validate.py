"""Checking a pipeline against the tools it uses, before anything is queued or held.

:func:`validate_pipeline` refuses, with a :class:`PipelineError` naming the step and the port:
an unknown or unavailable tool, an input the tool does not have, a required tool input that is
neither given nor defaulted, a literal the input would refuse, a reference to a pipeline input,
step or output port that does not exist, an output that cannot feed the input (``compatible``:
explicit conversions only), a cycle (the steps on it named), more steps than allowed, more jobs
in a step than allowed, two fanned-out sources of different sizes feeding one step, a bad
variations spec, and an ``outputs`` entry that is not a step. It answers a topological order.
The checks go from the outside in: the steps' tools and input names, then the graph's shape (a
cycle), then each connection's types and values, then the fan-out; the first error is raised.

Fan-out: a step with ``variations`` runs as N jobs ("items"). A step fed through a single-valued
input by an N-item step runs N items too (a map: item ``i`` takes item ``i``'s output); a ``many``
input instead gathers the N values into one list. :func:`item_counts` computes the items of
every step; they must be known before the run, since the run is quoted and held as a whole.

:func:`check_run_inputs` checks one run's input values against the pipeline's inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarmstation.domain.pipelines.spec import (
    FromInput,
    FromStep,
    LiteralValue,
    Pipeline,
    PipelineError,
    Source,
    Step,
)
from swarmstation.domain.tools import (
    DEFAULT_MAX_ITEMS,
    INPUT_TYPES,
    InputSpec,
    OutputSpec,
    ToolSpec,
    compatible,
)
from swarmstation.domain.tools.values import _BadValue, check_value, format_value, is_random_seed, json_type

__all__ = [
    "IMAGE_REF_PREFIXES",
    "check_run_inputs",
    "item_counts",
    "topological_order",
    "validate_pipeline",
]

#: What an image value is between steps and in a pipeline: a reference to an upload of the user
#: or to an output of one of their jobs (never the bytes, which stay in the object store).
IMAGE_REF_PREFIXES = ("upload:", "output:")

# --------------------------------------------------------------------------- tool accessors


def _outputs(tool: ToolSpec) -> dict[str, OutputSpec]:
    """The tool's output ports by name."""
    return {out.name: out for out in tool.outputs}


def is_many(inp: InputSpec) -> bool:
    """Whether the input takes a list of images (a gather)."""
    return inp.many


def _max_items(inp: InputSpec) -> int:
    return inp.max_items if inp.max_items is not None else DEFAULT_MAX_ITEMS


def seed_input(tool: ToolSpec) -> InputSpec | None:
    """The input that ``{"count": N}`` variations vary: the tool's first seed input."""
    return next((inp for inp in tool.inputs if inp.type == "seed"), None)


# --------------------------------------------------------------------------- values


def _check_image_ref(value: object) -> None:
    if not isinstance(value, str) or not value.startswith(IMAGE_REF_PREFIXES) or value in IMAGE_REF_PREFIXES:
        raise _BadValue(
            'an image is a reference "upload:<id>" (an upload) or "output:<id>" (an output of a job), '
            f"got {format_value(value) if isinstance(value, str) else json_type(value)}"
        )


def check_one(inp: InputSpec, value: object) -> Any:
    """Check a single value for ``inp`` (one image, not a list); random seeds pass as they are."""
    if inp.type == "seed" and is_random_seed(value):
        return -1 if value is not None else None
    if inp.type == "image":
        _check_image_ref(value)
    return check_value(inp, value)


def check_literal(inp: InputSpec, value: object) -> Any:
    """Check a literal for ``inp``: for a ``many`` input, a list of 1..max_items references."""
    if is_many(inp):
        if not isinstance(value, list | tuple):
            raise _BadValue(f"expected a list of image references, got {json_type(value)}")
        limit = _max_items(inp)
        if not 1 <= len(value) <= limit:
            raise _BadValue(f"expected 1 to {limit} images, got {len(value)}")
        return [check_one(inp, v) for v in value]
    if isinstance(value, list | tuple):
        raise _BadValue("expected a single value, got a list")
    return check_one(inp, value)


# --------------------------------------------------------------------------- the graph


def _deps(step: Step) -> list[str]:
    seen: list[str] = []
    for src in step.inputs.values():
        if isinstance(src, FromStep) and src.step not in seen:
            seen.append(src.step)
    return seen


def _find_cycle(p: Pipeline, left: set[str]) -> list[str]:
    """One cycle among ``left`` (steps Kahn's algorithm could not order), closed: [a, b, a]."""
    start = next(sid for sid in p.steps if sid in left)
    path: list[str] = []
    index: dict[str, int] = {}
    sid = start
    # Every step left over has a dependency left over, so walking them must revisit one.
    while sid not in index:
        index[sid] = len(path)
        path.append(sid)
        sid = next(d for d in _deps(p.steps[sid]) if d in left)
    cycle = [*path[index[sid] :], sid]
    # Read in the direction data flows: a feeds b feeds a.
    return list(reversed(cycle))


def topological_order(p: Pipeline) -> tuple[str, ...]:
    """The steps, each after the steps it takes outputs from (ties in the pipeline's order).

    Assumes every ``FromStep`` names a step; raises :class:`PipelineError` at ``steps`` on a cycle.
    """
    remaining = {sid: {d for d in _deps(step) if d in p.steps} for sid, step in p.steps.items()}
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(p.steps):
        ready = [sid for sid in p.steps if sid not in done and remaining[sid] <= done]
        if not ready:
            cycle = _find_cycle(p, set(p.steps) - done)
            raise PipelineError("steps", "a cycle: " + " → ".join(cycle), step=cycle[0])
        for sid in ready:
            order.append(sid)
            done.add(sid)
    return tuple(order)


def _fan_in(
    p: Pipeline, tools: Mapping[str, ToolSpec], step: Step, counts: Mapping[str, int]
) -> list[tuple[str, str, int]]:
    """The fanned-out sources mapped into ``step``: (input, source step, items), items > 1."""
    tool = tools.get(step.tool)
    specs = {inp.name: inp for inp in tool.inputs} if tool else {}
    fans: list[tuple[str, str, int]] = []
    for name, src in step.inputs.items():
        if not isinstance(src, FromStep):
            continue
        inp = specs.get(name)
        if inp is not None and is_many(inp):
            continue  # a gather
        n = counts.get(src.step, 1)
        if n > 1:
            fans.append((name, src.step, n))
    return fans


def _counts(
    p: Pipeline, tools: Mapping[str, ToolSpec], order: tuple[str, ...], max_items: int | None
) -> dict[str, int]:
    counts: dict[str, int] = {}
    for sid in order:
        step = p.steps[sid]
        fans = _fan_in(p, tools, step, counts)
        if step.variations is not None:
            if fans:
                name, src, n = fans[0]
                raise PipelineError(
                    f"steps.{sid}.variations",
                    f"step '{sid}' is already fanned out by input '{name}' (the {n} items of step "
                    f"'{src}'); variations cannot fan it out again",
                    step=sid,
                    port=name,
                )
            n = step.variations.count
        else:
            n = 1
            for name, src, m in fans:
                if n > 1 and m != n:
                    first = next(f for f in fans if f[2] == n)
                    raise PipelineError(
                        f"steps.{sid}.inputs.{name}",
                        f"step '{sid}' input '{name}' takes the {m} items of step '{src}', but input "
                        f"'{first[0]}' takes the {n} items of step '{first[1]}': fanned-out inputs "
                        "must have the same number of items",
                        step=sid,
                        port=name,
                    )
                n = m
        if max_items is not None and n > max_items:
            raise PipelineError(
                f"steps.{sid}.variations" if step.variations is not None else f"steps.{sid}",
                f"step '{sid}' would run {n} jobs, the limit is {max_items} per step",
                step=sid,
            )
        counts[sid] = n
    return counts


def item_counts(p: Pipeline, tools: Mapping[str, ToolSpec]) -> dict[str, int]:
    """Jobs per step: a step's variations, or the items of the fanned-out steps it maps over.

    Raises :class:`PipelineError` for a cycle or mismatched fan-outs (``validate_pipeline`` has
    usually refused those already).
    """
    return _counts(p, tools, topological_order(p), None)


# --------------------------------------------------------------------------- validation


def _check_source(
    p: Pipeline,
    tools: Mapping[str, ToolSpec],
    step: Step,
    tool: ToolSpec,
    inp: InputSpec,
    src: Source,
) -> None:
    sid, name = step.id, inp.name
    where = f"steps.{sid}.inputs.{name}"
    many = is_many(inp)
    shown = f"{inp.type} list" if many else inp.type
    if isinstance(src, LiteralValue):
        try:
            check_literal(inp, src.value)
        except _BadValue as exc:
            raise PipelineError(
                where, f"step '{sid}' input '{name}': {exc.reason}", step=sid, port=name
            ) from None
        return
    if isinstance(src, FromInput):
        pin = p.inputs.get(src.name)
        if pin is None:
            listed = ", ".join(p.inputs) or "none"
            raise PipelineError(
                where,
                f"step '{sid}' input '{name}' takes pipeline input '{src.name}', which does not exist "
                f"(the pipeline's inputs: {listed})",
                step=sid,
                port=name,
            )
        if pin.type != inp.type:
            raise PipelineError(
                where,
                f"step '{sid}' input '{name}' ({shown}) cannot take pipeline input '{src.name}' ({pin.type})",
                step=sid,
                port=name,
            )
        if inp.required and inp.default is None and not pin.required and pin.default is None:
            raise PipelineError(
                where,
                f"step '{sid}' input '{name}' is required, but pipeline input '{src.name}' is optional "
                "with no default",
                step=sid,
                port=name,
            )
        return
    if src.step not in p.steps:
        raise PipelineError(
            where,
            f"step '{sid}' input '{name}' takes an output of step '{src.step}', which does not exist",
            step=sid,
            port=name,
        )
    upstream = p.steps[src.step]
    up_tool = tools.get(upstream.tool)
    if up_tool is None:
        return  # reported at that step's tool
    ports = _outputs(up_tool)
    out = ports.get(src.output)
    if out is None:
        listed = ", ".join(ports) or "none"
        raise PipelineError(
            where,
            f"step '{sid}' input '{name}' takes output '{src.output}' of step '{src.step}', but tool "
            f"'{upstream.tool}' has no such output (its outputs: {listed})",
            step=sid,
            port=name,
        )
    out_many = out.many
    out_shown = f"{out.type} list" if out_many else out.type
    if not compatible(out.type, inp.type) or (out_many and not many):
        raise PipelineError(
            where,
            f"step '{sid}' input '{name}' ({shown}) cannot take output '{src.output}' of step "
            f"'{src.step}' ({out_shown})",
            step=sid,
            port=name,
        )


def _check_variations(step: Step, tool: ToolSpec) -> None:
    v = step.variations
    if v is None:
        return
    sid = step.id
    where = f"steps.{sid}.variations"
    if v.count < 1:
        raise PipelineError(f"{where}.count", "must be at least 1", step=sid)
    if v.input is None:
        seed = seed_input(tool)
        if seed is None:
            raise PipelineError(
                where,
                f"step '{sid}': tool '{tool.slug}' has no seed input to vary; give "
                '{"input": NAME, "values": [...]} instead',
                step=sid,
            )
        src = step.inputs.get(seed.name)
        if isinstance(src, LiteralValue) and not is_random_seed(src.value):
            try:
                check_value(seed, src.value + v.count - 1)
            except (_BadValue, TypeError):
                raise PipelineError(
                    f"steps.{sid}.inputs.{seed.name}",
                    f"step '{sid}': {v.count} variations from seed {format_value(src.value)} go past "
                    "the seed's range",
                    step=sid,
                    port=seed.name,
                ) from None
        return
    specs = {inp.name: inp for inp in tool.inputs}
    inp = specs.get(v.input)
    if inp is None:
        listed = ", ".join(specs) or "none"
        raise PipelineError(
            f"{where}.input",
            f"step '{sid}': tool '{tool.slug}' has no input '{v.input}' (its inputs: {listed})",
            step=sid,
            port=v.input,
        )
    if v.input in step.inputs:
        raise PipelineError(
            f"{where}.input",
            f"step '{sid}' input '{v.input}' is given in both inputs and variations",
            step=sid,
            port=v.input,
        )
    if v.values is None or len(v.values) != v.count:
        raise PipelineError(f"{where}.values", "expected one value per variation", step=sid, port=v.input)
    for i, value in enumerate(v.values):
        try:
            check_literal(inp, value)
        except _BadValue as exc:
            raise PipelineError(
                f"{where}.values.{i}",
                f"step '{sid}' input '{v.input}', variation {i}: {exc.reason}",
                step=sid,
                port=v.input,
            ) from None


def _check_tool(tools: Mapping[str, ToolSpec], unavailable: Mapping[str, str], step: Step) -> None:
    sid = step.id
    tool = tools.get(step.tool)
    if tool is None:
        raise PipelineError(f"steps.{sid}.tool", f"step '{sid}': unknown tool '{step.tool}'", step=sid)
    if step.tool in unavailable:
        raise PipelineError(
            f"steps.{sid}.tool",
            f"step '{sid}': tool '{step.tool}' is unavailable: {unavailable[step.tool]}",
            step=sid,
        )
    specs = {inp.name: inp for inp in tool.inputs}
    for name in step.inputs:
        if name not in specs:
            listed = ", ".join(specs) or "none"
            raise PipelineError(
                f"steps.{sid}.inputs.{name}",
                f"step '{sid}': tool '{step.tool}' has no input '{name}' (its inputs: {listed})",
                step=sid,
                port=name,
            )


def _check_connections(p: Pipeline, tools: Mapping[str, ToolSpec], step: Step) -> None:
    sid = step.id
    tool = tools[step.tool]
    varied = step.variations.input if step.variations is not None else None
    for inp in tool.inputs:
        src = step.inputs.get(inp.name)
        if src is None:
            if inp.required and inp.default is None and inp.name != varied:
                raise PipelineError(
                    f"steps.{sid}.inputs.{inp.name}",
                    f"step '{sid}' input '{inp.name}' is required: connect it or give a value",
                    step=sid,
                    port=inp.name,
                )
            continue
        _check_source(p, tools, step, tool, inp, src)
    _check_variations(step, tool)


def validate_pipeline(
    p: Pipeline,
    tools: Mapping[str, ToolSpec],
    *,
    unavailable: Mapping[str, str] | None = None,
    max_steps: int,
    max_items: int,
) -> tuple[str, ...]:
    """Check ``p`` against ``tools`` (slug → spec); answer a topological order of its step ids.

    ``unavailable`` maps a slug to why it cannot run now (an LLM tool without an endpoint);
    ``max_steps`` bounds the steps and ``max_items`` the jobs of one step.
    """
    unavailable = unavailable or {}
    if not p.steps:
        raise PipelineError("steps", "a pipeline needs at least one step")
    if len(p.steps) > max_steps:
        raise PipelineError("steps", f"{len(p.steps)} steps, the limit is {max_steps}")
    for name, pin in p.inputs.items():
        if pin.type not in INPUT_TYPES:
            raise PipelineError(
                f"inputs.{name}.type",
                f"{pin.type!r} is not an input type (one of: {', '.join(INPUT_TYPES)})",
                port=name,
            )
        if pin.default is not None:
            try:
                check_one(_input_spec(pin.name, pin.type), pin.default)
            except _BadValue as exc:
                raise PipelineError(f"inputs.{name}.default", exc.reason, port=name) from None
    for sid, step in p.steps.items():
        if step.id != sid:
            raise PipelineError(f"steps.{sid}", f"step '{sid}' is named '{step.id}' inside", step=sid)
        _check_tool(tools, unavailable, step)
    # The graph's shape before the types: a cycle is named as a cycle, even if a port on it
    # has the wrong type as well.
    order = topological_order(p)
    for step in p.steps.values():
        _check_connections(p, tools, step)
    for i, out in enumerate(p.outputs):
        if out not in p.steps:
            raise PipelineError(f"outputs.{i}", f"'{out}' is not a step of the pipeline")
    _counts(p, tools, order, max_items)
    return order


# --------------------------------------------------------------------------- a run's inputs


def _input_spec(name: str, kind: Any) -> InputSpec:
    return InputSpec(name=name, type=kind, bindings=())


def check_run_inputs(p: Pipeline, values: Mapping[str, Any]) -> dict[str, Any]:
    """A run's input values, checked against ``p.inputs``, with defaults filled in.

    An optional input with neither a value nor a default is left out (the tool's own default
    applies). A random seed (``-1``) is kept as ``-1``. Errors name ``inputs.NAME``.
    """
    if not isinstance(values, Mapping):
        raise PipelineError("inputs", f"the inputs must be a JSON object, not {json_type(values)}")
    for key in values:
        if not isinstance(key, str) or key not in p.inputs:
            listed = ", ".join(p.inputs) or "none"
            raise PipelineError(
                f"inputs.{key}",
                f"unknown input (the pipeline's inputs: {listed})",
                port=str(key),
            )
    out: dict[str, Any] = {}
    for name, pin in p.inputs.items():
        value = values.get(name)
        if value is None:
            value = pin.default
        if value is None:
            if pin.required:
                raise PipelineError(f"inputs.{name}", "is required", port=name)
            continue
        try:
            out[name] = check_one(_input_spec(name, pin.type), value)
        except _BadValue as exc:
            raise PipelineError(f"inputs.{name}", exc.reason, port=name) from None
    return out
