"""The pure OpenAI <-> Ollama translation, as tables."""

from __future__ import annotations

import json

import httpx
import pytest

from backends.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    RateLimitError,
    UnsupportedParameterError,
    UpstreamError,
)
from backends.events import Finished, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from backends.openai_types import ChatCompletionRequest
from backends.upstream.ollama import OllamaLines, ndjson_lines, ollama_error, to_ollama_request
from backends.upstream.settings import OllamaSettings
from gateway.openai_chat import to_generation_request

SETTINGS = OllamaSettings(
    name="llama3", backend="ollama", base_url="http://o:11434", upstream_model="llama3:8b"
)
BASE = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}


def body(settings: OllamaSettings = SETTINGS, stream: bool = True, **fields):
    request = to_generation_request(ChatCompletionRequest(**{**BASE, **fields}))
    return to_ollama_request(request, settings, stream)


def test_minimal_request_names_the_upstream_model_and_refuses_truncation():
    assert body() == {
        "model": "llama3:8b",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "truncate": False,
    }
    assert body(stream=False)["stream"] is False


@pytest.mark.parametrize(
    ("fields", "options"),
    [
        ({"max_tokens": 5}, {"num_predict": 5}),
        ({"max_tokens": 5, "max_completion_tokens": 9}, {"num_predict": 9}),
        ({"temperature": 0}, {"temperature": 0}),
        ({"top_p": 0.5, "top_k": 3, "min_p": 0.1}, {"top_p": 0.5, "top_k": 3, "min_p": 0.1}),
        ({"seed": 4}, {"seed": 4}),
        ({"stop": "x"}, {"stop": ["x"]}),
        ({"stop": ["a", "b"]}, {"stop": ["a", "b"]}),
        (
            {"presence_penalty": 1, "frequency_penalty": -1},
            {"presence_penalty": 1, "frequency_penalty": -1},
        ),
    ],
)
def test_sampling_fields_go_into_options(fields, options):
    assert body(**fields)["options"] == options


def test_model_settings_add_num_ctx_and_keep_alive():
    settings = SETTINGS.model_copy(update={"num_ctx": 8192, "keep_alive": "10m"})
    result = body(settings, max_tokens=3)
    assert result["options"] == {"num_predict": 3, "num_ctx": 8192}
    assert result["keep_alive"] == "10m"


def test_response_format_maps_to_format():
    assert body(response_format={"type": "json_object"})["format"] == "json"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert body(response_format=fmt)["format"] == schema
    assert "format" not in body(response_format={"type": "text"})


def test_tools_and_tool_history_are_translated():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "c1", "name": "f"},
    ]
    result = body(tools=tools, messages=messages)
    assert result["tools"] == tools
    assert result["messages"][1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "f", "arguments": {"city": "Paris"}}}],
    }
    assert result["messages"][2] == {"role": "tool", "content": "sunny", "tool_name": "f"}
    assert "tools" not in body(tools=tools, tool_choice="none")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "x": 1}]}]},
            "messages[0].content",
        ),
    ],
)
def test_what_ollama_cannot_do_is_refused_by_name(fields, param):
    with pytest.raises(UnsupportedParameterError) as info:
        body(**fields)
    assert info.value.param == param


NESTED = json.dumps(
    {
        "error": json.dumps(
            {
                "error": {
                    "code": 400,
                    "message": "request (351 tokens) exceeds the available context size "
                    "(256 tokens)",
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": 351,
                    "n_ctx": 256,
                }
            }
        )
    }
)


@pytest.mark.parametrize(
    ("status", "payload", "error_type"),
    [
        (400, NESTED, ContextLengthExceededError),
        (400, '{"error": "invalid options"}', InvalidRequestError),
        (
            404,
            '{"error": "model \\"llama3:8b\\" not found, try pulling it first"}',
            ModelNotFoundError,
        ),
        (429, '{"error": "too many"}', RateLimitError),
        (503, '{"error": "server busy, please try again"}', BackendUnavailableError),
        (500, '{"error": "llama runner process has terminated"}', UpstreamError),
        (401, "unauthorized", UpstreamError),
        (502, "<html>bad gateway</html>", UpstreamError),
    ],
)
def test_ollama_errors_map_onto_the_tree(status, payload, error_type):
    error = ollama_error(status, payload.encode(), "llama3", "llama3:8b")
    assert type(error) is error_type


def test_context_error_names_both_numbers():
    error = ollama_error(400, NESTED.encode())
    assert "256" in error.message and "351" in error.message
    assert error.code == "context_length_exceeded"


def test_lines_give_content_finish_and_usage():
    lines = OllamaLines()
    out = lines.feed({"message": {"role": "assistant", "content": "Hi"}, "done": False})
    assert out == [TextDelta(0, "Hi")]
    out = lines.feed(
        {
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "length",
            "prompt_eval_count": 7,
            "eval_count": 1,
        }
    )
    assert out == [Finished(0, "length"), Usage(7, 1)]


def test_lines_handle_absent_counts():
    lines = OllamaLines()
    lines.feed({"message": {"content": "a"}, "done": False})
    lines.feed({"message": {"content": "b"}, "done": False})
    out = lines.feed({"message": {"content": ""}, "done": True, "done_reason": "stop"})
    assert out[-1] == Usage(0, 2)


def test_thinking_is_reasoning_apart_from_the_answer():
    out = OllamaLines().feed({"message": {"thinking": "hmm", "content": "4"}, "done": False})
    assert out == [ReasoningDelta(0, "hmm"), TextDelta(0, "4")]


def test_tool_call_objects_become_indexed_calls_with_string_arguments():
    lines = OllamaLines()
    line = {
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "f", "arguments": {"city": "Paris"}}},
                {"function": {"name": "g", "arguments": {}}},
            ],
        },
        "done": False,
    }
    calls = lines.feed(line)
    assert all(isinstance(c, ToolCallDelta) for c in calls)
    assert [(c.call, c.name, c.arguments) for c in calls] == [
        (0, "f", '{"city": "Paris"}'),
        (1, "g", "{}"),
    ]
    assert all(c.id and c.id.startswith("call_") for c in calls)
    done = lines.feed({"message": {"content": ""}, "done": True, "done_reason": "stop"})
    assert done[0] == Finished(0, "tool_calls")


@pytest.mark.anyio
async def test_error_line_inside_a_200_stream_raises_upstream_error():
    body = b'{"message": {"content": "a"}, "done": false}\n\n{"error": "boom"}\n'
    lines = ndjson_lines(httpx.Response(200, content=body))
    assert (await anext(lines))["message"]["content"] == "a"
    with pytest.raises(UpstreamError, match="boom"):
        await anext(lines)


@pytest.mark.anyio
async def test_a_line_that_is_not_json_raises_upstream_error():
    lines = ndjson_lines(httpx.Response(200, content=b"<html>\n"))
    with pytest.raises(UpstreamError, match="not JSON"):
        await anext(lines)
