"""What a local tool is: a `ToolSpec` (kind "llm" or "image", no workflow), whether it can run with
these settings, and `run`, which turns input values (image inputs already fetched as bytes) into
output values and files. `run` does its own I/O (an LLM endpoint) but never touches the database
or the object store: the executor (control/local_jobs.py) does, so a tool is easy to test."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from swarmstation.domain.errors import SwarmError

if TYPE_CHECKING:
    from swarmstation.config import Settings
    from swarmstation.domain.tools import ToolSpec


@dataclass(frozen=True)
class LocalImage:
    """An image input: its bytes and content type (the executor fetched them from the store)."""

    data: bytes
    content_type: str


@dataclass(frozen=True)
class LocalFile:
    """A file output of port `port` (an `image` port): the executor stores it as an Output row."""

    port: str
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class LocalResult:
    """What a run produced: value outputs by port ({"text": "..."}), file outputs, and usage
    (an LLM tool's {"prompt_tokens": int, "completion_tokens": int}; charged per token)."""

    values: dict[str, Any] = field(default_factory=dict)
    files: list[LocalFile] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LocalContext:
    """Limits and settings a run obeys: `deadline_seconds` is the most it may take, `max_pixels`
    the most pixels an image it reads or writes may have."""

    settings: Settings
    deadline_seconds: float
    max_pixels: int


class LocalToolError(SwarmError):
    """The run failed for a reason to show the user (a bad image, the LLM refused). `retryable`:
    the failure was the endpoint's (5xx, 429, timeout), so the job may be tried again."""

    code = "local_tool_failed"
    status_hint = 422

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class LocalTool(Protocol):
    """One local tool. `spec.kind` is "llm" or "image"; `spec.pool` is "control"."""

    @property
    def spec(self) -> ToolSpec: ...

    def unavailable(self, settings: Settings) -> str | None:
        """Why the tool cannot run with these settings ("no LLM endpoint is configured: set
        SWARMSTATION_LLM_BASE_URL"), or None when it can."""
        ...

    def max_tokens(self, settings: Settings) -> int:
        """The most tokens (prompt + completion) one run can use, for its quote; 0 for a tool
        not priced by tokens."""
        ...

    def run(
        self, ctx: LocalContext, inputs: dict[str, Any], images: dict[str, list[LocalImage]]
    ) -> LocalResult:
        """Run once. `inputs` are the checked values (image inputs hold their references);
        `images` the fetched bytes per image input (a list: one item unless the input is `many`).
        Raises LocalToolError."""
        ...
