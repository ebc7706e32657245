from __future__ import annotations

import json

import pytest

from backends.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    RateLimitError,
    UpstreamError,
)
from backends.openai_types import ChatCompletionRequest
from backends.upstream.openai_compat import ModelRewriter, openai_error, to_upstream_body


def test_body_keeps_only_what_the_client_sent_plus_vendor_extras():
    request = ChatCompletionRequest(
        model="mine",
        messages=[{"role": "user", "content": "x"}],
        temperature=0.2,
        repetition_penalty=1.1,
        chat_template_kwargs={"enable_thinking": False},
    )
    assert to_upstream_body(request, "org/remote") == {
        "model": "org/remote",
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 0.2,
        "repetition_penalty": 1.1,
        "chat_template_kwargs": {"enable_thinking": False},
    }


def envelope(message: str, code: str | None = None, param: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": "x", "param": param, "code": code}}
    ).encode()


@pytest.mark.parametrize(
    ("status", "body", "error_type", "status_out"),
    [
        (400, envelope("temperature too high", param="temperature"), InvalidRequestError, 400),
        (
            400,
            envelope("too long", code="context_length_exceeded"),
            ContextLengthExceededError,
            400,
        ),
        (404, envelope("no such model"), ModelNotFoundError, 404),
        (401, envelope("bad key"), UpstreamError, 502),
        (403, envelope("forbidden"), UpstreamError, 502),
        (429, envelope("slow down"), RateLimitError, 429),
        (500, b"Internal Server Error", UpstreamError, 502),
        (503, envelope("loading"), BackendUnavailableError, 503),
    ],
)
def test_upstream_status_mapping(status, body, error_type, status_out):
    error = openai_error(status, body, "mine")
    assert type(error) is error_type
    assert error.status == status_out


def test_400_keeps_the_upstream_message_and_param():
    error = openai_error(400, envelope("temperature too high", param="temperature"))
    assert error.message == "temperature too high"
    assert error.param == "temperature"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"id":"1","model":"org/remote","choices":[]}',
        b'{"id": "1", "model": "org/remote", "choices": []}',
    ],
)
def test_model_rewriter_rewrites_compact_and_spaced_json(payload):
    out = json.loads(ModelRewriter("org/remote", "mine")(payload))
    assert out == {"id": "1", "model": "mine", "choices": []}


def test_model_rewriter_fast_path_is_byte_exact_elsewhere():
    payload = b'{"id":"1","model":"r","choices":[{"delta":{"content":"\\u00e9"}}]}'
    assert ModelRewriter("r", "m")(payload) == payload.replace(b'"model":"r"', b'"model":"m"')
