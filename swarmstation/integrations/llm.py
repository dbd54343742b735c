"""A small client for an OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp, Ollama, ...),
built from Settings on the `openai` SDK: what the LLM text tools (localtools/llm.py) call.

The endpoint is operator-configured (`SWARMSTATION_LLM_BASE_URL`), so it is trusted: no outbound
(SSRF) policy applies, and the API key goes only to that base URL (the SDK sends it nowhere
else). The SDK's own retries are off: a failed call is the job's failure, and the job retries as
jobs do.

Errors enter the error tree here, as `LocalToolError`: a timeout, a connection failure, a 429 or
a 5xx is `retryable` (the endpoint's trouble); any other 4xx is not (the request or the
configuration is wrong). Messages never carry the API key (it is cut out of anything the server
said) and never a Python repr.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import openai
from openai.types.chat import ChatCompletionMessageParam

from swarmstation.config import reveal
from swarmstation.localtools.base import LocalToolError

if TYPE_CHECKING:
    from swarmstation.config import Settings

__all__ = ["IMAGE_TOKEN_ESTIMATE", "NOT_CONFIGURED", "ChatAnswer", "LLMClient", "estimate_tokens"]

#: Tokens one image content part is taken to cost when the endpoint reports no usage (and the
#: allowance a caption's token bound makes for it).
IMAGE_TOKEN_ESTIMATE = 1000
#: The most of the endpoint's own error message a user sees.
MAX_SERVER_MESSAGE = 300
NOT_CONFIGURED = "no LLM endpoint is configured: set SWARMSTATION_LLM_BASE_URL"


@dataclass(frozen=True)
class ChatAnswer:
    """The assistant's text and the tokens it took (as the endpoint reported them, or estimated
    at ~4 characters a token when it did not)."""

    text: str
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def estimate_tokens(text: str) -> int:
    """~4 characters a token: what we charge when the endpoint does not say."""
    return math.ceil(len(text) / 4)


def _prompt_estimate(messages: Sequence[Mapping[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += estimate_tokens(content)
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    total += estimate_tokens(str(part.get("text", "")))
                else:  # an image part: its data URL's length says nothing about its tokens
                    total += IMAGE_TOKEN_ESTIMATE
    return total


def _params(messages: Sequence[Mapping[str, Any]]) -> list[ChatCompletionMessageParam]:
    # the SDK types messages as TypedDicts; ours are plain dicts of the same shape
    return cast("list[ChatCompletionMessageParam]", [dict(m) for m in messages])


class LLMClient:
    """One endpoint, one timeout. `chat` is the only call; `close` frees the connection pool."""

    def __init__(self, *, base_url: str, api_key: str | None, timeout_seconds: float) -> None:
        self._key = api_key or ""
        self.timeout_seconds = timeout_seconds
        self._client = openai.OpenAI(
            base_url=base_url,
            # a local endpoint often needs no key; the SDK insists on one (and would otherwise
            # read OPENAI_API_KEY from the environment, which is not our setting)
            api_key=api_key or "no-key",
            timeout=timeout_seconds,
            max_retries=0,
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout_seconds: float | None = None) -> LLMClient:
        """The client of the configured endpoint; `timeout_seconds` (e.g. a job's deadline) can
        only shorten `llm_timeout_seconds`. Raises LocalToolError when none is configured."""
        if not settings.llm_base_url:
            raise LocalToolError(NOT_CONFIGURED)
        timeout = settings.llm_timeout_seconds
        if timeout_seconds is not None:
            timeout = max(0.001, min(timeout, timeout_seconds))
        return cls(
            base_url=settings.llm_base_url, api_key=reveal(settings.llm_api_key), timeout_seconds=timeout
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def chat(
        self, messages: Sequence[Mapping[str, Any]], *, model: str, max_tokens: int, stream: bool = False
    ) -> ChatAnswer:
        """Ask once. Streaming assembles the deltas and reads the usage from the last chunk
        (`stream_options.include_usage`); the whole answer must arrive within the timeout, not
        only each chunk. Raises LocalToolError (see the module docstring)."""
        try:
            if stream:
                return self._stream(messages, model=model, max_tokens=max_tokens)
            return self._once(messages, model=model, max_tokens=max_tokens)
        except openai.APITimeoutError:
            raise self._timed_out() from None
        except openai.APIConnectionError:
            raise LocalToolError("the LLM endpoint could not be reached", retryable=True) from None
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from None
        except openai.OpenAIError:
            raise LocalToolError("the LLM endpoint's answer could not be read", retryable=True) from None

    def _once(self, messages: Sequence[Mapping[str, Any]], *, model: str, max_tokens: int) -> ChatAnswer:
        completion = self._client.chat.completions.create(
            model=model, messages=_params(messages), max_tokens=max_tokens, stream=False
        )
        text = ""
        if completion.choices:
            text = completion.choices[0].message.content or ""
        usage = completion.usage
        if usage is not None:
            return ChatAnswer(text, usage.prompt_tokens, usage.completion_tokens)
        return ChatAnswer(text, _prompt_estimate(messages), estimate_tokens(text))

    def _stream(self, messages: Sequence[Mapping[str, Any]], *, model: str, max_tokens: int) -> ChatAnswer:
        deadline = time.monotonic() + self.timeout_seconds
        parts: list[str] = []
        usage = None
        chunks = self._client.chat.completions.create(
            model=model,
            messages=_params(messages),
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        with chunks:
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
                if chunk.usage is not None:
                    usage = chunk.usage
                if time.monotonic() > deadline:
                    raise self._timed_out()
        text = "".join(parts)
        if usage is not None:
            return ChatAnswer(text, usage.prompt_tokens, usage.completion_tokens)
        return ChatAnswer(text, _prompt_estimate(messages), estimate_tokens(text))

    def _timed_out(self) -> LocalToolError:
        return LocalToolError(
            f"the LLM endpoint did not answer within {self.timeout_seconds:g} seconds", retryable=True
        )

    def _status_error(self, exc: openai.APIStatusError) -> LocalToolError:
        status = exc.status_code
        if status == 429:
            return LocalToolError("the LLM endpoint is rate limiting requests (HTTP 429)", retryable=True)
        if status >= 500 or status == 408:
            return LocalToolError(f"the LLM endpoint failed (HTTP {status})", retryable=True)
        if status in (401, 403):
            return LocalToolError(
                f"the LLM endpoint refused its API key (HTTP {status}): an operator should check "
                "SWARMSTATION_LLM_API_KEY"
            )
        said = self._server_message(exc)
        return LocalToolError(
            f"the LLM endpoint refused the request (HTTP {status})" + (f": {said}" if said else "")
        )

    def _server_message(self, exc: openai.APIStatusError) -> str:
        """What the endpoint said, one line, bounded, with the key cut out (servers echo it)."""
        body = exc.body
        message: Any = None
        if isinstance(body, Mapping):
            inner = body.get("error", body)
            message = inner.get("message") if isinstance(inner, Mapping) else inner
        if not isinstance(message, str):
            return ""
        if self._key:
            message = message.replace(self._key, "[redacted]")
        line = " ".join(message.split())
        return line if len(line) <= MAX_SERVER_MESSAGE else line[: MAX_SERVER_MESSAGE - 1] + "…"
