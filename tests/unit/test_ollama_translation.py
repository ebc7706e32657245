"""The pure OpenAI <-> Ollama translation, as tables."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace

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
from backends.model_types import ModelCapabilities
from backends.openai_types import ChatCompletionRequest
from backends.upstream.capabilities import ollama_capabilities
from backends.upstream.ollama import (
    OllamaBackend,
    OllamaLines,
    ndjson_lines,
    ollama_error,
    to_ollama_request,
)
from backends.upstream.settings import OllamaSettings
from gateway.openai_chat_request import to_generation_request
from tests.fake_upstreams import closed_port

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


def test_truncation_is_asked_for_only_when_the_request_allows_it():
    request = replace(to_generation_request(ChatCompletionRequest(**BASE)), truncate_prompt=True)
    assert to_ollama_request(request, SETTINGS, True)["truncate"] is True


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


async def byte_lines(body: bytes) -> AsyncIterator[bytes]:
    """An answer's lines as ``UpstreamResponse.lines`` gives them."""
    for line in body.split(b"\n"):
        yield line


@pytest.mark.anyio
async def test_error_line_inside_a_200_stream_raises_upstream_error():
    body = b'{"message": {"content": "a"}, "done": false}\n\n{"error": "boom"}\n'
    lines = ndjson_lines(byte_lines(body))
    assert (await anext(lines))["message"]["content"] == "a"
    with pytest.raises(UpstreamError, match="boom"):
        await anext(lines)


@pytest.mark.anyio
async def test_a_line_that_is_not_json_raises_upstream_error():
    lines = ndjson_lines(byte_lines(b"<html>\n"))
    with pytest.raises(UpstreamError, match="not JSON"):
        await anext(lines)


# -- tools: history, forced calls -------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}


def call_schema(name: str, arguments: dict) -> dict:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": arguments},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def test_a_tool_result_without_a_name_takes_it_from_the_call_it_answers():
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": ""}},
            ],
        },
        {"role": "tool", "content": "one", "tool_call_id": "c1"},
        {"role": "tool", "content": "two", "tool_call_id": "c2"},
        {"role": "tool", "content": "three", "tool_call_id": "nope"},
    ]
    sent = body(tools=[WEATHER], messages=messages)["messages"]
    assert sent[1]["tool_calls"] == [
        {"function": {"name": "f", "arguments": {}}},
        {"function": {"name": "g", "arguments": {}}},
    ]
    assert [m.get("tool_name") for m in sent[2:]] == ["f", "g", None]


@pytest.mark.parametrize("arguments", ["[1]", "3", "{bad"])
def test_history_arguments_that_are_no_json_object_are_a_400(arguments):
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    messages = [{"role": "assistant", "content": None, "tool_calls": [call]}]
    with pytest.raises(InvalidRequestError) as info:
        body(messages=messages)
    assert info.value.param == "messages[0].tool_calls" and info.value.status == 400


@pytest.mark.parametrize(
    ("tools", "tool_choice", "schema"),
    [
        (
            [WEATHER, TIME],
            {"type": "function", "function": {"name": "get_weather"}},
            call_schema("get_weather", WEATHER["function"]["parameters"]),
        ),
        ([WEATHER], "required", call_schema("get_weather", WEATHER["function"]["parameters"])),
        (
            [WEATHER, TIME],
            "required",
            {
                "anyOf": [
                    call_schema("get_weather", WEATHER["function"]["parameters"]),
                    call_schema("get_time", {"type": "object"}),
                ]
            },
        ),
    ],
)
def test_a_forced_call_is_enforced_by_a_format_schema_with_the_tools_still_sent(
    tools, tool_choice, schema
):
    result = body(tools=tools, tool_choice=tool_choice)
    assert result["format"] == schema
    assert result["tools"] == tools


def test_tool_definitions_of_a_forced_call_keep_their_refs_resolvable():
    def tool(name: str, unit_enum: list[str]) -> dict:
        parameters = {
            "type": "object",
            "properties": {"unit": {"$ref": "#/$defs/Unit"}},
            "$defs": {"Unit": {"enum": unit_enum}},
        }
        return {"type": "function", "function": {"name": name, "parameters": parameters}}

    result = body(tools=[tool("a", ["C"]), tool("b", ["F"])], tool_choice="required")["format"]
    assert result["$defs"] == {"Unit": {"enum": ["C"]}, "Unit_1": {"enum": ["F"]}}
    a, b = (branch["properties"]["arguments"] for branch in result["anyOf"])
    assert a == {"type": "object", "properties": {"unit": {"$ref": "#/$defs/Unit"}}}
    assert b == {"type": "object", "properties": {"unit": {"$ref": "#/$defs/Unit_1"}}}


@pytest.mark.parametrize(
    ("fields", "error", "param"),
    [
        ({"tool_choice": "required"}, InvalidRequestError, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            InvalidRequestError,
            "tool_choice",
        ),
        (
            {
                "tools": [WEATHER],
                "tool_choice": "required",
                "response_format": {"type": "json_object"},
            },
            UnsupportedParameterError,
            "response_format",
        ),
    ],
)
def test_a_forced_call_that_cannot_be_served_is_a_400_naming_the_field(fields, error, param):
    with pytest.raises(error) as info:
        body(**fields)
    assert type(info.value) is error
    assert info.value.param == param and info.value.status == 400


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "json_object"}, "json"),
        (
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "x",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {"a": {"type": "string"}},
                        "required": ["a"],
                        "additionalProperties": False,
                    },
                },
            },
            {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "required": ["a"],
                "additionalProperties": False,
            },
        ),
    ],
)
def test_response_format_becomes_format_and_strict_is_harmless(response_format, expected):
    assert body(response_format=response_format)["format"] == expected


@pytest.mark.parametrize(
    ("fields", "think"),
    [
        ({"reasoning_effort": "high"}, True),
        ({"reasoning_effort": "none"}, False),
        ({"chat_template_kwargs": {"enable_thinking": False}}, False),
        ({}, None),
    ],
)
def test_reasoning_becomes_think(fields, think):
    assert body(**fields).get("think") == think


# -- the answer of a forced call ----------------------------------------------------------------


def forced_lines(**kwargs) -> OllamaLines:
    return OllamaLines(forced=True, **kwargs)


def content(text: str, done: bool = False, reason: str = "stop") -> dict:
    line: dict = {"message": {"role": "assistant", "content": text}, "done": done}
    if done:
        line["done_reason"] = reason
    return line


def calls_of(events) -> list[ToolCallDelta]:
    return [e for e in events if isinstance(e, ToolCallDelta)]


def test_a_forced_answer_streams_as_a_call_id_and_name_first_then_argument_pieces():
    lines = forced_lines()
    pieces = ['{"name": "get_wea', 'ther", "argu', 'ments": {"city": "Pa', 'ris"}', "}"]
    events = [e for piece in pieces for e in lines.feed(content(piece))]
    events += lines.feed(content("", done=True))
    calls = calls_of(events)
    first = calls[0]
    assert first.id and first.id.startswith("call_") and first.name == "get_weather"
    assert first.arguments == ""
    assert all(c.id is None and c.name is None for c in calls[1:])
    assert len(calls) > 2  # the arguments came in pieces, as they streamed
    assert json.loads("".join(c.arguments for c in calls)) == {"city": "Paris"}
    assert not [e for e in events if isinstance(e, TextDelta)]
    assert events[-2:] == [Finished(0, "tool_calls"), Usage(0, 5)]


def test_a_forced_answer_in_another_key_order_is_read_whole_at_the_end():
    lines = forced_lines()
    assert lines.feed(content('{"arguments": {"x": 1}, "name": "f"}')) == []
    events = lines.feed(content("", done=True))
    calls = calls_of(events)
    assert [(c.name, c.arguments) for c in calls] == [("f", ""), (None, '{"x": 1}')]
    assert Finished(0, "tool_calls") in events


def test_a_forced_answer_uses_the_calls_ollama_parsed_itself():
    lines = forced_lines()
    events = lines.feed(
        {
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}],
            },
            "done": False,
        }
    )
    events += lines.feed(content("", done=True))
    assert [(c.name, c.arguments) for c in calls_of(events)] == [("f", '{"x": 1}')]
    assert Finished(0, "tool_calls") in events


def test_a_forced_answer_cut_by_the_token_limit_finishes_with_length():
    lines = forced_lines()
    events = lines.feed(content('{"name": "f", "arguments": {"city": "Par'))
    events += lines.feed(content("", done=True, reason="length"))
    calls = calls_of(events)
    assert calls[0].name == "f"
    assert "".join(c.arguments for c in calls) == '{"city": "Par'
    assert Finished(0, "length") in events


def test_a_complete_forced_answer_that_is_not_a_call_is_an_upstream_error():
    lines = forced_lines()
    lines.feed(content("[1, 2]"))
    with pytest.raises(UpstreamError, match="forced tool call"):
        lines.feed(content("", done=True))


def test_thinking_before_a_forced_answer_stays_reasoning():
    lines = forced_lines()
    events = lines.feed({"message": {"thinking": "hmm", "content": ""}, "done": False})
    assert events == [ReasoningDelta(0, "hmm")]


def test_parallel_tool_calls_false_keeps_the_first_call_only():
    lines = OllamaLines(one_call=True)
    two = [{"function": {"name": "f", "arguments": {}}}, {"function": {"name": "g"}}]
    events = lines.feed({"message": {"content": "", "tool_calls": two}, "done": False})
    assert [c.name for c in calls_of(events)] == ["f"]


# -- capabilities ---------------------------------------------------------------------------------

SHOW = {
    "capabilities": ["completion", "tools", "thinking"],
    "model_info": {"general.architecture": "qwen3", "qwen3.context_length": 40960},
}


@pytest.mark.parametrize(
    ("show", "num_ctx", "expected"),
    [
        (
            SHOW,
            None,
            ModelCapabilities(
                tools="native", json_schema=True, reasoning=True, context_length=40960
            ),
        ),
        (
            SHOW,
            8192,
            ModelCapabilities(
                tools="native", json_schema=True, reasoning=True, context_length=8192
            ),
        ),
        (
            {"capabilities": ["completion"], "model_info": {"general.architecture": "llama"}},
            None,
            ModelCapabilities(tools=None, json_schema=True, reasoning=False, context_length=None),
        ),
        ({}, None, ModelCapabilities(json_schema=True)),
        ([], None, None),
    ],
)
def test_capabilities_from_api_show(show, num_ctx, expected):
    assert ollama_capabilities(show, num_ctx) == expected


@pytest.mark.anyio
async def test_an_unreachable_ollama_has_no_capabilities_and_does_not_raise():
    settings = SETTINGS.model_copy(update={"base_url": [f"http://127.0.0.1:{closed_port()}"]})
    backend = OllamaBackend(settings)
    try:
        assert await backend.capabilities() is None
        assert not backend.loaded  # asking did not start the backend
    finally:
        await backend.aclose()


@pytest.mark.anyio
async def test_a_slow_ollama_has_no_capabilities_after_the_timeout():
    backend = OllamaBackend(SETTINGS)
    backend.capabilities_timeout = 0.05

    async def hang(*args, **kwargs):
        await asyncio.sleep(10)

    backend.client.fetch_json = hang  # type: ignore[method-assign]
    started = time.monotonic()
    assert await backend.capabilities() is None
    assert time.monotonic() - started < 1


@pytest.mark.anyio
async def test_capabilities_are_asked_once_then_kept():
    backend = OllamaBackend(SETTINGS)
    asked: list[tuple] = []

    async def show(*args, **kwargs):
        asked.append(args)
        return SHOW

    backend.client.fetch_json = show  # type: ignore[method-assign]
    first = await backend.capabilities()
    assert first is not None and first.tools == "native"
    assert await backend.capabilities() == first
    assert asked == [("POST", "/api/show", {"model": "llama3:8b"})]
