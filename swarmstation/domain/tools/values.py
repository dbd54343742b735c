"""Checking one input value against its :class:`InputSpec` (types, ranges, lengths) and deriving
random seeds from the caller's ``random_seed``; shared by validation, binding and the schema."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from swarmstation.domain.tools.spec import (
    DEFAULT_IMAGE_REF_MAX_LENGTH,
    DEFAULT_MAX_ITEMS,
    DEFAULT_STRING_MAX_LENGTH,
    SEED_MAX,
    InputSpec,
)

# --------------------------------------------------------------------------- value checking


class _BadValue(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def json_type(value: object) -> str:
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


def format_value(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadValue(f"expected an integer, got {json_type(value)}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer() or abs(value) > 2**53:
            raise _BadValue(f"expected an integer, got {value!r}")
        return int(value)
    return value


def seed_bounds(spec: InputSpec) -> tuple[int, int]:
    lo = 0 if spec.minimum is None else max(0, math.ceil(spec.minimum))
    hi = SEED_MAX if spec.maximum is None else min(SEED_MAX, math.floor(spec.maximum))
    return lo, hi


def is_random_seed(value: object) -> bool:
    if value is None or value == "":
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and value == -1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & SEED_MAX
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & SEED_MAX
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & SEED_MAX
    return x ^ (x >> 31)


def draw_random_seed(spec: InputSpec, random_seed: int, index: int) -> int:
    base = random_seed % (SEED_MAX + 1)
    if index:
        base = _splitmix64(base + index)
    lo, hi = seed_bounds(spec)
    return lo + base % (hi - lo + 1)


def _check_range(spec: InputSpec, value: float) -> None:
    if spec.minimum is not None and value < spec.minimum:
        raise _BadValue(
            f"{format_value(value)} is out of range (the minimum is {format_value(spec.minimum)})"
        )
    if spec.maximum is not None and value > spec.maximum:
        raise _BadValue(
            f"{format_value(value)} is out of range (the maximum is {format_value(spec.maximum)})"
        )


def check_value(spec: InputSpec, value: object) -> Any:
    """Validate one concrete value for ``spec`` and return it as written into the workflow."""
    result: Any
    kind = spec.type
    if kind in ("string", "image"):
        if not isinstance(value, str):
            raise _BadValue(f"expected a string, got {json_type(value)}")
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
        lo, hi = seed_bounds(spec)
        if not lo <= result <= hi:
            raise _BadValue(f"{result} is out of range (a seed is {lo}..{hi}, or -1 for random)")
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _BadValue(f"expected a number, got {json_type(value)}")
        try:
            result = float(value)
        except OverflowError:
            raise _BadValue(f"{value} is too large") from None
        if not math.isfinite(result):
            raise _BadValue(f"expected a finite number, got {value!r}")
        _check_range(spec, result)
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise _BadValue(f"expected a boolean, got {json_type(value)}")
        result = value
    else:
        raise _BadValue(f"unknown input type {kind!r}")
    if spec.choices is not None and result not in spec.choices:
        raise _BadValue(
            f"{format_value(result)} is not one of the choices: "
            + ", ".join(format_value(c) for c in spec.choices)
        )
    return result


def max_items(spec: InputSpec) -> int:
    """The most images a ``many`` input takes."""
    return spec.max_items if spec.max_items is not None else DEFAULT_MAX_ITEMS


def check_many(spec: InputSpec, value: object) -> list[Any]:
    """Validate the value of a ``many`` input: a JSON list of 1..``max_items`` values, each
    checked by :func:`check_value` (for images: a non-empty reference). Returns a fresh list."""
    if not isinstance(value, list | tuple):
        raise _BadValue(f"expected a list of image references, got {json_type(value)}")
    limit = max_items(spec)
    if not value:
        raise _BadValue("expected at least one image reference, got an empty list")
    if len(value) > limit:
        raise _BadValue(f"too many images ({len(value)}, the limit is {limit})")
    items: list[Any] = []
    for i, item in enumerate(value):
        try:
            items.append(check_value(spec, item))
        except _BadValue as exc:
            raise _BadValue(f"item {i}: {exc.reason}") from None
    return items
