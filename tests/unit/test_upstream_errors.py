"""How an OpenAI-compatible upstream's error replies map onto the error tree: the servers'
own spellings of an over-long prompt, symbolic codes only, and which failures are the
replica's (they cool it down) rather than the request's."""

from __future__ import annotations

import json

import pytest

from backends.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    UpstreamAnswerError,
    UpstreamError,
)
from backends.upstream.openai_compat import openai_error


def body(**error: object) -> bytes:
    return json.dumps({"error": error}).encode()


@pytest.mark.parametrize(
    "reply",
    [
        # llama-server
        body(
            code=400,
            message="request (3031 tokens) exceeds the available context size (2048 tokens), "
            "try increasing it",
            type="exceed_context_size_error",
            n_prompt_tokens=3031,
            n_ctx=2048,
        ),
        # OpenAI
        body(
            message="This model's maximum context length is 8192 tokens.",
            type="invalid_request_error",
            param="messages",
            code="context_length_exceeded",
        ),
        # vLLM's older shape
        json.dumps(
            {
                "object": "error",
                "message": "This model's maximum context length is 2048 tokens. However, you "
                "requested 4000 tokens.",
                "type": "BadRequestError",
                "code": 400,
            }
        ).encode(),
    ],
    ids=["llama-server", "openai", "vllm-object-error"],
)
def test_every_servers_over_long_prompt_is_context_length_exceeded(reply):
    error = openai_error(400, reply, "m")
    assert isinstance(error, ContextLengthExceededError)
    assert error.code == "context_length_exceeded" and error.param == "messages"


def test_a_numeric_code_is_not_passed_on_as_a_code():
    error = openai_error(400, body(code=400, message="n must be at most 2", type="x"), "m")
    assert isinstance(error, InvalidRequestError)
    assert error.code == "invalid_request"


def test_a_500_in_the_upstreams_own_words_is_the_requests_failure():
    message = "image input is not supported - hint: if this is unexpected, load an mmproj"
    error = openai_error(500, body(code=500, message=message, type="server_error"), "m")
    assert isinstance(error, UpstreamAnswerError)
    assert error.status == 502 and error.retryable and not error.replica_fault


@pytest.mark.parametrize(
    ("status", "reply"),
    [(500, b"<html>Internal Server Error</html>"), (502, body(message="bad gateway"))],
)
def test_other_5xx_are_the_replicas_failure(status, reply):
    error = openai_error(status, reply, "m")
    assert type(error) is UpstreamError and error.replica_fault
