"""integrations/llm.py against the fake OpenAI endpoint (tests/fake_openai.py), through the real
`openai` SDK: answers and usage with and without streaming, image parts, and every failure
mapped to a LocalToolError that says whether to retry and never shows the key."""

from __future__ import annotations

import base64
import math
import socket
from pathlib import Path
from typing import Any

import pytest

from swarmstation.config import Settings
from swarmstation.integrations.llm import NOT_CONFIGURED, LLMClient, estimate_tokens
from swarmstation.localtools.base import LocalToolError
from tests.fake_openai import FakeOpenAI

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a red fox in snow"}]


def client(fake: FakeOpenAI, *, key: str | None = None, timeout: float = 10) -> LLMClient:
    return LLMClient(base_url=fake.base_url, api_key=key or fake.api_key, timeout_seconds=timeout)


def refused(fake: FakeOpenAI, *, stream: bool = False, **kwargs: Any) -> LocalToolError:
    with pytest.raises(LocalToolError) as caught, client(fake, **kwargs) as llm:
        llm.chat(MESSAGES, model="m", max_tokens=64, stream=stream)
    return caught.value


def assert_plain(message: str) -> None:
    """A user-facing message: no key, no Python repr or exception name."""
    assert "Never-Show" not in message and "sk-" not in message
    for marker in ("Error(", "<", "Traceback", "openai."):
        assert marker not in message


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_and_its_usage_come_back(fake_openai: FakeOpenAI, stream: bool) -> None:
    fake_openai.chunk_chars = 3  # many chunks to assemble
    fake_openai.answer("A red fox curled up in fresh snow, soft morning light.")
    with client(fake_openai) as llm:
        answer = llm.chat(MESSAGES, model="vision-1", max_tokens=77, stream=stream)
    assert answer.text == "A red fox curled up in fresh snow, soft morning light."
    request = fake_openai.last
    assert request.headers["authorization"] == f"Bearer {fake_openai.api_key}"
    assert request.body["model"] == "vision-1" and request.body["max_tokens"] == 77
    assert request.body["messages"] == MESSAGES
    assert bool(request.body.get("stream")) is stream
    if stream:
        assert request.body["stream_options"] == {"include_usage": True}
    # the fake counts ~4 characters a token per message plus 4 of framing: what it reported
    assert answer.prompt_tokens == (len("Be brief.") // 4 + 4) + (len("a red fox in snow") // 4 + 4)
    assert answer.completion_tokens == len(answer.text) // 4
    assert answer.total_tokens == answer.prompt_tokens + answer.completion_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_without_usage_the_tokens_are_estimated(fake_openai: FakeOpenAI, stream: bool) -> None:
    fake_openai.send_usage = False
    fake_openai.answer("x" * 41)
    with client(fake_openai) as llm:
        answer = llm.chat(MESSAGES, model="m", max_tokens=64, stream=stream)
    assert answer.text == "x" * 41
    assert answer.completion_tokens == 11 == estimate_tokens("x" * 41)
    assert answer.prompt_tokens == math.ceil(len("Be brief.") / 4) + math.ceil(len("a red fox in snow") / 4)


def test_image_content_parts_reach_the_server(fake_openai: FakeOpenAI) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]
    with client(fake_openai) as llm:
        answer = llm.chat(messages, model="m", max_tokens=64, stream=True)
    [image] = fake_openai.last.images
    assert image.content_type == "image/png" and image.data == png
    assert answer.text == f"An image (image/png of {len(png)} bytes)."
    assert fake_openai.last.text_of("user") == "What is this?"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("status", "says"), [(500, "HTTP 500"), (503, "HTTP 503"), (429, "rate limiting")])
def test_server_failures_and_rate_limits_are_retryable(
    fake_openai: FakeOpenAI, stream: bool, status: int, says: str
) -> None:
    fake_openai.fail(status, message=f"upstream trouble for {fake_openai.api_key}")
    error = refused(fake_openai, stream=stream)
    assert error.retryable and says in str(error)
    assert_plain(str(error))
    # the failure was once: the next call answers
    with client(fake_openai) as llm:
        assert llm.chat(MESSAGES, model="m", max_tokens=64).text


def test_a_refused_key_is_not_retryable_and_never_shown(fake_openai: FakeOpenAI) -> None:
    wrong = "sk-wrong-Never-Show-This-Either"
    error = refused(fake_openai, key=wrong)
    assert not error.retryable
    assert "HTTP 401" in str(error) and "SWARMSTATION_LLM_API_KEY" in str(error)
    assert wrong not in str(error)  # the fake echoes the key it was given, as OpenAI does
    assert_plain(str(error))
    assert fake_openai.last.headers["authorization"] == f"Bearer {wrong}"


def test_other_4xx_are_not_retryable_and_show_what_the_server_said_without_the_key(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.fail(400, message=f"model 'm' does not exist for key {fake_openai.api_key}\n(try another)")
    error = refused(fake_openai, stream=True)
    assert not error.retryable
    assert str(error) == (
        "the LLM endpoint refused the request (HTTP 400): "
        "model 'm' does not exist for key [redacted] (try another)"
    )


def test_a_slow_endpoint_times_out_retryably(fake_openai: FakeOpenAI) -> None:
    fake_openai.slow(3.0)
    error = refused(fake_openai, timeout=0.5)
    assert error.retryable and str(error) == "the LLM endpoint did not answer within 0.5 seconds"


def test_an_unreachable_endpoint_is_retryable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (
        pytest.raises(LocalToolError) as caught,
        LLMClient(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-Never-Show", timeout_seconds=5) as llm,
    ):
        llm.chat(MESSAGES, model="m", max_tokens=16)
    assert caught.value.retryable and str(caught.value) == "the LLM endpoint could not be reached"


def test_from_settings(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    with pytest.raises(LocalToolError, match="SWARMSTATION_LLM_BASE_URL") as caught:
        LLMClient.from_settings(Settings(data_dir=tmp_path))
    assert str(caught.value) == NOT_CONFIGURED and not caught.value.retryable
    settings = Settings(
        data_dir=tmp_path,
        llm_base_url=fake_openai.base_url,
        llm_api_key=fake_openai.api_key,
        llm_timeout_seconds=30,
    )
    # a job's deadline can shorten the timeout, never lengthen it
    with LLMClient.from_settings(settings, timeout_seconds=5) as llm:
        assert llm.timeout_seconds == 5
        assert llm.chat(MESSAGES, model="m", max_tokens=16).text
    assert LLMClient.from_settings(settings, timeout_seconds=300).timeout_seconds == 30
    assert fake_openai.last.headers["authorization"] == f"Bearer {fake_openai.api_key}"
    # a keyless endpoint (a local server): a placeholder, never OPENAI_API_KEY from the environment
    keyless = Settings(data_dir=tmp_path, llm_base_url=fake_openai.base_url)
    with LLMClient.from_settings(keyless) as llm, pytest.raises(LocalToolError, match="HTTP 401"):
        llm.chat(MESSAGES, model="m", max_tokens=16)
    assert fake_openai.last.headers["authorization"] == "Bearer no-key"
