"""The emulator's prompt validation: a port of ComfyUI's ``execution.validate_prompt`` and
``validate_inputs`` with the same rules and error shapes (see the shared protocol reference, §1)."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from swarmstation.comfy.emulator.nodes import NODE_CLASSES, Dirs, Node


def full_type_name(klass: type) -> str:
    return (
        klass.__qualname__ if klass.__module__ == "builtins" else f"{klass.__module__}.{klass.__qualname__}"
    )


def is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def format_value(value: Any) -> Any:
    if value is None or isinstance(value, int | float | bool | str):
        return value
    return str(value)


def input_info(class_inputs: dict[str, Any], name: str) -> tuple[Any, str | None, Any]:
    """``comfy_execution.graph.get_input_info``: (type, category, extra options)."""
    for category in ("required", "optional", "hidden"):
        if name in class_inputs.get(category, {}):
            spec = class_inputs[category][name]
            return spec[0], category, (spec[1] if len(spec) > 1 else {})
    return None, None, None


def types_compatible(received: Any, expected: Any) -> bool:
    """``comfy_execution.validation.validate_node_input`` (non-strict)."""
    if received == expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


Validated = tuple[bool, list[dict[str, Any]], str]


class Validator:
    """A port of ``execution.validate_inputs`` / ``validate_prompt``; coerces literals in place."""

    def __init__(self, dirs: Dirs, prompt: dict[str, Any]) -> None:
        self.dirs = dirs
        self.prompt = prompt
        self.validated: dict[str, Validated] = {}
        self._visiting: set[str] = set()
        self._class_inputs: dict[str, dict[str, Any]] = {}  # one directory scan per class and prompt

    def class_inputs(self, class_type: str) -> dict[str, Any]:
        if class_type not in self._class_inputs:
            self._class_inputs[class_type] = NODE_CLASSES[class_type].input_types(self.dirs)
        return self._class_inputs[class_type]

    def validate_prompt(
        self, partial: list[str] | None
    ) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
        prompt = self.prompt
        outputs: set[str] = set()
        for x in prompt:
            if "class_type" not in prompt[x]:
                return (
                    False,
                    error_dict(
                        "invalid_prompt",
                        "Cannot execute because a node is missing the class_type property.",
                        f"Node ID '#{x}'",
                    ),
                    [],
                    {},
                )
            class_type = prompt[x]["class_type"]
            cls = NODE_CLASSES.get(class_type)
            if cls is None:
                return (
                    False,
                    error_dict(
                        "invalid_prompt",
                        f"Cannot execute because node {class_type} does not exist.",
                        f"Node ID '#{x}'",
                    ),
                    [],
                    {},
                )
            if cls.OUTPUT_NODE and (partial is None or x in partial):
                outputs.add(x)
        if not outputs:
            return False, error_dict("prompt_no_outputs", "Prompt has no outputs", ""), [], {}

        good: list[str] = []
        errors: list[tuple[str, list[dict[str, Any]]]] = []
        node_errors: dict[str, dict[str, Any]] = {}
        for o in sorted(outputs):
            try:
                valid, reasons, _ = self.validate_inputs(o)
            except Exception as ex:
                valid, reasons = (
                    False,
                    [
                        {
                            "type": "exception_during_validation",
                            "message": "Exception when validating node",
                            "details": str(ex),
                            "extra_info": {
                                "exception_type": full_type_name(type(ex)),
                                "traceback": traceback.format_tb(ex.__traceback__),
                            },
                        }
                    ],
                )
                self.validated[o] = (False, reasons, o)
            if valid:
                good.append(o)
                continue
            errors.append((o, reasons))
            # As in ComfyUI: every failing node seen so far gets this output appended.
            for node_id, (ok, node_reasons, _) in self.validated.items():
                if ok or not node_reasons:
                    continue
                entry = node_errors.setdefault(
                    node_id,
                    {
                        "errors": node_reasons,
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    },
                )
                entry["dependent_outputs"].append(o)
        if not good:
            details = "\n".join(f"{e['message']}: {e['details']}" for _, reasons in errors for e in reasons)
            return (
                False,
                error_dict("prompt_outputs_failed_validation", "Prompt outputs failed validation", details),
                [],
                node_errors,
            )
        return True, None, good, node_errors

    def validate_inputs(self, unique_id: str) -> Validated:
        if unique_id in self.validated:
            return self.validated[unique_id]
        if unique_id in self._visiting:  # 0.3.64 recursed until RecursionError; fail fast instead
            raise Exception(f"Dependency cycle detected at node {unique_id}")
        self._visiting.add(unique_id)
        try:
            result = self._validate_inputs(unique_id)
        finally:
            self._visiting.discard(unique_id)
        earlier = self.validated.get(unique_id)  # set by a dependant that caught our cycle error
        if earlier is not None:
            result = (False, earlier[1] + result[1], unique_id)
        self.validated[unique_id] = result
        return result

    def _validate_inputs(self, unique_id: str) -> Validated:
        inputs = self.prompt[unique_id]["inputs"]
        cls = NODE_CLASSES[self.prompt[unique_id]["class_type"]]
        class_inputs = self.class_inputs(self.prompt[unique_id]["class_type"])
        errors: list[dict[str, Any]] = []
        valid = True
        names = [*class_inputs.get("required", {}), *class_inputs.get("optional", {})]
        for x in names:
            input_type, category, extra = input_info(class_inputs, x)
            if x not in inputs:
                if category == "required":
                    errors.append(
                        error_dict(
                            "required_input_missing", "Required input is missing", x, {"input_name": x}
                        )
                    )
                continue
            val = inputs[x]
            info = [input_type, extra]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(
                        error_dict(
                            "bad_linked_input",
                            "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            x,
                            {"input_name": x, "input_config": info, "received_value": val},
                        )
                    )
                    continue
                o_id = val[0]
                received = NODE_CLASSES[self.prompt[o_id]["class_type"]].RETURN_TYPES[val[1]]
                if not types_compatible(received, input_type):
                    errors.append(
                        error_dict(
                            "return_type_mismatch",
                            "Return type mismatch between linked nodes",
                            f"{x}, received_type({received}) mismatch input_type({input_type})",
                            {
                                "input_name": x,
                                "input_config": info,
                                "received_type": received,
                                "linked_node": val,
                            },
                        )
                    )
                    continue
                try:
                    if self.validate_inputs(o_id)[0] is False:
                        valid = False
                except Exception as ex:
                    valid = False
                    self.validated[o_id] = (
                        False,
                        [
                            error_dict(
                                "exception_during_inner_validation",
                                "Exception when validating inner node",
                                str(ex),
                                {
                                    "input_name": x,
                                    "input_config": info,
                                    "exception_message": str(ex),
                                    "exception_type": full_type_name(type(ex)),
                                    "traceback": traceback.format_tb(ex.__traceback__),
                                    "linked_node": val,
                                },
                            )
                        ],
                        o_id,
                    )
                continue
            error = self._check_literal(cls, inputs, x, val, input_type, extra, info)
            if error is not None:
                errors.append(error)
        for x in cls.VALIDATE_INPUTS:
            if x not in inputs or is_link(inputs[x]):
                continue
            ret = cls.validate_inputs(self.dirs, **{x: inputs[x]})
            if ret is not True:
                details = x if ret is False else f"{x} - {ret}"
                errors.append(
                    error_dict(
                        "custom_validation_failed",
                        "Custom validation failed for node",
                        details,
                        {"input_name": x},
                    )
                )
        return (not errors and valid), errors, unique_id

    def _check_literal(
        self,
        cls: type[Node],
        inputs: dict[str, Any],
        x: str,
        val: Any,
        input_type: Any,
        extra: dict[str, Any],
        info: list[Any],
    ) -> dict[str, Any] | None:
        try:
            if isinstance(val, dict) and "__value__" in val:
                val = inputs[x] = val["__value__"]
            convert = CONVERTERS.get(input_type) if isinstance(input_type, str) else None
            if convert is not None:
                val = inputs[x] = convert(val)
        except Exception as ex:
            return error_dict(
                "invalid_input_type",
                f"Failed to convert an input value to a {input_type} value",
                f"{x}, {val}, {ex}",
                {"input_name": x, "input_config": info, "received_value": val, "exception_message": str(ex)},
            )
        if x in cls.VALIDATE_INPUTS:
            return None
        extra_info = {"input_name": x, "input_config": info, "received_value": val}
        if "min" in extra and val < extra["min"]:
            return error_dict(
                "value_smaller_than_min", f"Value {val} smaller than min of {extra['min']}", x, extra_info
            )
        if "max" in extra and val > extra["max"]:
            return error_dict(
                "value_bigger_than_max", f"Value {val} bigger than max of {extra['max']}", x, extra_info
            )
        if isinstance(input_type, list) and val not in input_type:
            if len(input_type) > 20:  # ComfyUI does not echo long model lists
                list_info, extra_info["input_config"] = f"(list of length {len(input_type)})", None
            else:
                list_info = str(input_type)
            return error_dict(
                "value_not_in_list", "Value not in list", f"{x}: '{val}' not in {list_info}", extra_info
            )
        return None


CONVERTERS: dict[str, Callable[[Any], Any]] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def error_dict(
    kind: str, message: str, details: str, extra_info: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info or {}}
