"""The chat agent's OpenAI-compatible endpoint with function calling (the LLM mode of
control/agent_llm.py), on the `openai` SDK as integrations/llm.py calls it: its retries off, the
API key sent only to `llm_base_url` and never logged. What it adds to that client: the agent's
functions offered on every call, tool calls read from a whole answer or from streamed deltas
(domain/agent/llm.py assembles them), and one deadline for a whole streamed answer.

Errors enter here as `LLMFailed`, whose message is for people: no key, no repr.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import openai

from swarmstation.config import reveal
from swarmstation.domain.agent import llm
from swarmstation.domain.errors import UpstreamError

if TYPE_CHECKING:
    from swarmstation.config import Settings

__all__ = ["NOT_CONFIGURED_NOTE", "ChatEndpoint", "LLMFailed"]

NOT_CONFIGURED_NOTE = "no LLM endpoint is configured (SWARMSTATION_LLM_BASE_URL)"


class LLMFailed(UpstreamError):
    """The endpoint failed or the model did not settle; the message is for people (no key, no repr)."""

    code = "llm_failed"


class ChatEndpoint:
    """The configured endpoint with the four functions offered on every call."""

    def __init__(self, *, base_url: str, api_key: str | None, model: str, max_tokens: int) -> None:
        self.model, self.max_tokens = model, max_tokens
        # a local endpoint often needs no key; the SDK insists on one (and would otherwise read
        # OPENAI_API_KEY from the environment, which is not our setting)
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "no-key", max_retries=0)
        self._tools = llm.tool_schemas()

    @classmethod
    def from_settings(cls, settings: Settings) -> ChatEndpoint:
        if not settings.llm_base_url:
            raise LLMFailed(NOT_CONFIGURED_NOTE)
        return cls(
            base_url=settings.llm_base_url,
            api_key=reveal(settings.llm_api_key),
            model=settings.llm_model,
            max_tokens=settings.llm_max_tokens,
        )

    def close(self) -> None:
        self._client.close()

    def turn(
        self, messages: Sequence[Mapping[str, Any]], *, stream: bool, timeout_seconds: float
    ) -> llm.ModelTurn:
        """One answer of the model. Raises LLMFailed (a timeout, a connection failure, an HTTP
        error, an answer that cannot be read)."""
        try:
            if stream:
                return self._streamed(messages, timeout_seconds)
            return self._whole(messages, timeout_seconds)
        except openai.APITimeoutError:
            raise LLMFailed(f"the LLM endpoint did not answer within {timeout_seconds:g} seconds") from None
        except openai.APIConnectionError:
            raise LLMFailed("the LLM endpoint could not be reached") from None
        except openai.APIStatusError as exc:
            raise LLMFailed(f"the LLM endpoint failed (HTTP {exc.status_code})") from None
        except openai.OpenAIError:
            raise LLMFailed("the LLM endpoint's answer could not be read") from None

    def _create(self, messages: Sequence[Mapping[str, Any]], timeout: float, **extra: Any) -> Any:
        create = cast("Callable[..., Any]", self._client.chat.completions.create)
        return create(
            model=self.model,
            messages=[dict(m) for m in messages],
            tools=self._tools,
            max_tokens=self.max_tokens,
            timeout=timeout,
            **extra,
        )

    def _whole(self, messages: Sequence[Mapping[str, Any]], timeout: float) -> llm.ModelTurn:
        completion = self._create(messages, timeout, stream=False)
        if not completion.choices:
            return llm.ModelTurn("")
        message = completion.choices[0].message
        calls = []
        for call in message.tool_calls or []:
            function = getattr(call, "function", None)
            if function is not None:
                calls.append({"id": call.id, "name": function.name, "arguments": function.arguments or ""})
        return llm.ModelTurn(message.content or "", tuple(calls))

    def _streamed(self, messages: Sequence[Mapping[str, Any]], timeout: float) -> llm.ModelTurn:
        deadline = time.monotonic() + timeout
        assembler = llm.TurnAssembler()
        chunks = self._create(messages, timeout, stream=True)
        with chunks:
            for chunk in chunks:
                if chunk.choices:
                    assembler.add(chunk.choices[0].delta.model_dump(exclude_none=True))
                if time.monotonic() > deadline:  # the whole answer, not each chunk
                    raise LLMFailed(f"the LLM endpoint did not answer within {timeout:g} seconds")
        return assembler.turn()
