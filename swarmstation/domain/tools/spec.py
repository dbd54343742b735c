"""What a tool is: :class:`ToolSpec`, its inputs (:class:`InputSpec`) and where they bind
(:class:`InputBinding`), its typed outputs (:class:`OutputSpec`), the bound result
(:class:`BoundJob`), the input and port types and limits, and the errors of tool definitions and
input values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from swarmstation.domain.errors import FieldError, InvalidInput
from swarmstation.domain.workflow import (
    ModelRef,
)

InputType = Literal["string", "integer", "number", "boolean", "image", "seed"]
INPUT_TYPES: tuple[InputType, ...] = ("string", "integer", "number", "boolean", "image", "seed")

#: The type of a tool's output port. ``text`` is a string value (it feeds ``string`` inputs);
#: the reserved types are accepted as declarations so that tools for later issues can be
#: described now, though no input accepts them yet.
PortType = Literal[
    "image", "text", "integer", "number", "boolean", "seed", "video", "audio", "mask", "latent"
]
PORT_TYPES: tuple[PortType, ...] = (
    "image", "text", "integer", "number", "boolean", "seed", "video", "audio", "mask", "latent",
)  # fmt: skip
RESERVED_PORT_TYPES: tuple[PortType, ...] = ("video", "audio", "mask", "latent")

#: How a tool runs: a ComfyUI workflow on a worker, or a local tool on the control plane (an LLM
#: text tool through an OpenAI-compatible endpoint, or a Pillow image utility).
ToolKind = Literal["comfyui", "llm", "image"]
TOOL_KINDS: tuple[ToolKind, ...] = ("comfyui", "llm", "image")

#: The pool of local (non-ComfyUI) tools: they run on the control plane, not on a worker.
LOCAL_POOL = "control"

#: Model families a tool can declare. Pony, Illustrious and NoobAI are SDXL-derived but need
#: their own checkpoints/LoRAs; "other" covers tools without a diffusion model (e.g. upscalers).
BASE_MODELS: tuple[str, ...] = ("SD1.5", "SDXL", "Pony", "Illustrious", "NoobAI", "FLUX", "SD3", "other")

SEED_MAX = 2**64 - 1
DEFAULT_STRING_MAX_LENGTH = 10_000
DEFAULT_IMAGE_REF_MAX_LENGTH = 1024
#: The most images a ``many`` image input takes when its ``max_items`` is not given.
DEFAULT_MAX_ITEMS = 16
SLUG_PATTERN = r"[a-z0-9][a-z0-9-]{1,62}"

SLUG_RE = re.compile(SLUG_PATTERN)
CATEGORY_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
POOL_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
INPUT_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_NAME_LENGTH = 200
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class ToolDefinitionError(InvalidInput):
    """A tool definition is invalid. ``field`` says where (``"slug"``, ``"inputs.seed.default"``)."""

    code = "invalid_tool"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason, errors=[FieldError(field, reason)])
        self.field = field
        self.reason = reason


class ToolInputError(InvalidInput):
    """A client's input values are invalid. ``field`` is the input name (``""`` for the whole body)."""

    code = "invalid_input"

    def __init__(self, field: str, reason: str) -> None:
        # The API names the field as the request does (`inputs.prompt`); str() keeps the bare name.
        where = f"inputs.{field}" if field else "inputs"
        super().__init__(f"{field}: {reason}" if field else reason, errors=[FieldError(where, reason)])
        self.field = field
        self.reason = reason

    @property
    def detail(self) -> str:
        return f"{self.errors[0].field}: {self.reason}"


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
    #: Only for ``image`` inputs of non-ComfyUI tools: the value is a JSON list of 1..``max_items``
    #: image references (``max_items`` None means :data:`DEFAULT_MAX_ITEMS`).
    many: bool = False
    max_items: int | None = None


@dataclass(frozen=True)
class OutputSpec:
    """One typed output port of a tool.

    ``node_id``: for a ComfyUI tool, the output node whose files (or values) fill the port; None
    for local tools, whose ports are filled by name. ``many``: the port yields a list (a batch of
    images from one job), so a consumer taking one value gets the items fanned out.
    """

    name: str
    type: PortType
    node_id: str | None = None
    many: bool = False
    description: str = ""


@dataclass(frozen=True)
class ToolSpec:
    """A tool: metadata, an API-format workflow template, its inputs and its typed outputs.

    ``output_classes`` names extra output node classes (custom nodes) that count as outputs when
    validating the workflow. ``pool`` is the worker pool that runs the tool. ``kind`` says how it
    runs: a non-ComfyUI tool has an empty workflow, inputs without bindings, pool
    :data:`LOCAL_POOL` and no LoRAs. ``outputs`` are the ports a pipeline step can read.
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
    kind: ToolKind = "comfyui"
    outputs: tuple[OutputSpec, ...] = ()


@dataclass(frozen=True)
class BoundJob:
    """The result of :func:`bind_inputs`.

    ``workflow`` is a fresh graph ready for ComfyUI (after image references are resolved);
    ``inputs`` holds every input's resolved value, including the chosen seed; ``input_images``
    maps image input names to their references (a list of references for a ``many`` input).
    For a non-ComfyUI tool ``workflow`` is ``{}`` and ``required_models`` empty.
    """

    workflow: dict[str, Any]
    inputs: dict[str, Any]
    required_models: tuple[ModelRef, ...]
    input_images: dict[str, str | list[str]]
