"""The OpenAI chat surface's translation into the core request, and events back into chunks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from backends.errors import InvalidRequestError
from backends.events import (
    Finished,
    ReasoningDelta,
    Started,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
    Usage,
)
from backends.openai_types import ChatCompletionRequest
from backends.requests import OtherPart, OutputConstraint, TextPart, ToolCall, ToolChoice
from gateway.openai_chat import chunks_of, collect_completion, encoded_chunks
from gateway.openai_chat_request import to_generation_request


def translate(**extra: Any):
    return to_generation_request(
        ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
        )
    )


@pytest.mark.parametrize(
    ("extra", "attribute", "expected"),
    [
        ({"max_tokens": 5, "max_completion_tokens": 9}, "max_tokens", 9),
        ({"stop": ["a", "", "b"]}, "stop", ("a", "b")),
        ({"n": 3}, "n", 3),
        ({"tool_choice": "required"}, "tool_choice", ToolChoice("required")),
        (
            {"tool_choice": {"type": "function", "function": {"name": "f"}}},
            "tool_choice",
            ToolChoice("function", "f"),
        ),
        ({"response_format": {"type": "text"}}, "constraint", None),
        (
            {"response_format": {"type": "json_object"}},
            "constraint",
            OutputConstraint("json_object"),
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "constraint",
            OutputConstraint("json_object"),
        ),
        ({"repetition_penalty": 1.1, "user": "u"}, "extras", {"repetition_penalty": 1.1}),
    ],
)
def test_fields_map_onto_the_core_request(extra, attribute, expected):
    assert getattr(translate(**extra), attribute) == expected


def test_sampling_and_a_schema_constraint():
    schema = {"type": "object"}
    request = translate(
        temperature=0,
        top_k=5,
        seed=3,
        logit_bias={"7": -100},
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    s = request.sampling
    assert (s.temperature, s.top_k, s.seed, s.logit_bias) == (0, 5, 3, {7: -100})
    assert request.constraint == OutputConstraint("json_schema", schema, name="x")


def test_messages_keep_parts_tool_calls_and_developer_becomes_system():
    request = translate(
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ]
    )
    system, user, assistant, tool = request.messages
    assert system.role == "system" and system.content == (TextPart("be brief"),)
    assert user.content == (OtherPart("image_url", {"image_url": {"url": "u"}}),)
    assert assistant.tool_calls == (ToolCall("c1", "f", "{}"),)
    assert tool.tool_call_id == "c1" and tool.text() == "42"


def test_a_malformed_tool_choice_is_a_400_naming_it():
    with pytest.raises(InvalidRequestError) as caught:
        translate(tool_choice={"type": "function"})
    assert caught.value.param == "tool_choice"


async def _events():
    for event in [
        Started(0),
        ReasoningDelta(0, "hmm"),
        TextDelta(0, "Hi"),
        ToolCallDelta(0, 0, "call_1", "f", '{"a"'),
        ToolCallDelta(0, 0, None, None, ": 1}"),
        Finished(0, "tool_calls"),
        Usage(5, 4),
    ]:
        yield event


@pytest.mark.anyio
async def test_events_become_chunks_in_order_and_usage_only_when_asked():
    chunks = [c async for c in chunks_of(_events(), "m", include_usage=False)]
    deltas = [c.choices[0].delta for c in chunks]
    assert deltas[0].role == "assistant" and deltas[0].content == ""
    assert deltas[1].reasoning_content == "hmm" and deltas[2].content == "Hi"
    first, rest = deltas[3].tool_calls[0], deltas[4].tool_calls[0]
    assert (first.index, first.id, first.type, first.function.name) == (
        0,
        "call_1",
        "function",
        "f",
    )
    assert (rest.id, rest.type, rest.function.name, rest.function.arguments) == (
        None,
        None,
        None,
        ": 1}",
    )
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert len({c.id for c in chunks}) == 1
    with_usage = [c async for c in chunks_of(_events(), "m", include_usage=True)]
    assert with_usage[-1].choices == [] and with_usage[-1].usage.total_tokens == 9
    # OpenAI: with include_usage, "all other chunks will also include a usage field, but with
    # a null value"; without it, no chunk has one
    assert all(json.loads(c.model_dump_json())["usage"] is None for c in with_usage[:-1])
    assert all("usage" not in json.loads(c.model_dump_json()) for c in chunks)


TRICKY_TEXTS = [
    "",
    " plain",
    'a "quote" \\ back',
    "tab\tnew\nline\r\x00\x1f\x7f",
    "é 😀 \u2028\u2029\x85\ufeff",
]


async def _text_events():
    yield Started(0)
    for index, text in enumerate(TRICKY_TEXTS):
        yield TextDelta(index % 2, text)
    yield TextDelta(0, "with logprobs", (TokenLogprob("x", -0.5, b"x"),))
    yield Finished(0, "stop")
    yield Usage(5, 4)


@pytest.mark.anyio
@pytest.mark.parametrize("model", ["m", '名前/"quoted"'])
@pytest.mark.parametrize("include_usage", [False, True])
async def test_encoded_chunks_are_the_chunks_json_byte_for_byte(model, include_usage):
    encoded = [c async for c in encoded_chunks(_text_events(), model, include_usage)]
    chunks = [c async for c in chunks_of(_text_events(), model, include_usage)]
    assert len(encoded) == len(chunks)
    first_id = json.loads(encoded[0])["id"]
    for data, chunk in zip(encoded, chunks, strict=True):
        # each builder names its own completion: compare with the id and time made equal
        same = chunk.model_copy(update={"id": first_id, "created": json.loads(data)["created"]})
        assert data == same.model_dump_json().encode()


@pytest.mark.anyio
async def test_events_fold_into_one_completion():
    completion = await collect_completion(_events(), "m")
    message = completion.choices[0].message
    assert message.content == "Hi" and message.reasoning_content == "hmm"
    assert message.tool_calls[0].function.arguments == '{"a": 1}'
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage.prompt_tokens == 5 and completion.usage.completion_tokens == 4


# -- the deprecated function-calling API ---------------------------------------------------

WEATHER_FN = {"name": "weather", "parameters": {"type": "object", "properties": {}}}


def test_functions_are_tools_allowing_one_call():
    request = translate(functions=[WEATHER_FN], function_call={"name": "weather"})
    assert [t.name for t in request.tools] == ["weather"]
    assert request.tool_choice == ToolChoice("function", "weather")
    assert request.parallel_tool_calls is False
    assert translate(functions=[WEATHER_FN], function_call="none").tool_choice == ToolChoice("none")
    assert translate(functions=[WEATHER_FN]).tool_choice is None  # the model decides


def test_a_function_call_history_is_calls_and_results_in_order():
    messages = [
        {"role": "user", "content": "weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "weather", "arguments": "{}"},
        },
        {"role": "function", "name": "weather", "content": "sunny"},
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "time", "arguments": "{}"},
        },
        {"role": "function", "name": "time", "content": "noon"},
    ]
    request = translate(messages=messages, functions=[WEATHER_FN])
    first, second = request.messages[1], request.messages[3]
    assert first.tool_calls == (ToolCall("call_0", "weather", "{}"),)
    assert second.tool_calls == (ToolCall("call_1", "time", "{}"),)
    assert request.messages[2].role == "tool" and request.messages[2].tool_call_id == "call_0"
    assert request.messages[4].tool_call_id == "call_1" and request.messages[4].text() == "noon"
    # the same history without `functions` (the model answers in words) reads the same way
    assert translate(messages=messages).messages == request.messages


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (
            {"functions": [WEATHER_FN], "tools": [{"type": "function", "function": WEATHER_FN}]},
            "not both",
        ),
        ({"function_call": "auto"}, "needs 'functions'"),
        ({"functions": []}, "functions"),
        (
            {
                "messages": [{"role": "function", "content": "x"}],
                "functions": [WEATHER_FN],
            },
            "needs 'name'",
        ),
    ],
)
def test_malformed_function_requests_are_400s(extra, fragment):
    with pytest.raises(ValueError, match=fragment):
        translate(**extra)


def test_function_call_naming_an_unknown_function_is_a_400_naming_it():
    with pytest.raises(InvalidRequestError) as caught:
        translate(functions=[WEATHER_FN], function_call={"name": "nope"})
    assert caught.value.param == "function_call"


async def _one_call_events():
    for event in [
        Started(0),
        ToolCallDelta(0, 0, "call_1", "f", '{"a"'),
        ToolCallDelta(0, 0, None, None, ": 1}"),
        ToolCallDelta(0, 1, "call_2", "g", "{}"),  # never asked for: dropped
        Finished(0, "tool_calls"),
        Usage(5, 4),
    ]:
        yield event


@pytest.mark.anyio
async def test_a_functions_request_gets_function_call_deltas_and_finish_reason():
    chunks = [
        json.loads(c) async for c in encoded_chunks(_one_call_events(), "m", False, functions=True)
    ]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[1:3] == [
        {"function_call": {"name": "f", "arguments": '{"a"'}},
        {"function_call": {"arguments": ": 1}"}},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "function_call"
    assert len(chunks) == 4 and all("tool_calls" not in d for d in deltas)


@pytest.mark.anyio
async def test_a_functions_request_gets_one_function_call_in_the_message():
    completion = await collect_completion(_one_call_events(), "m", functions=True)
    data = json.loads(completion.model_dump_json())["choices"][0]
    assert data["message"] == {
        "role": "assistant",
        "content": None,
        "function_call": {"name": "f", "arguments": '{"a": 1}'},
    }
    assert data["finish_reason"] == "function_call"


def test_vllms_continue_final_message_continues_the_last_assistant_message():
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hel"}]
    continued = ChatCompletionRequest(model="m", messages=messages, continue_final_message=True)
    assert to_generation_request(continued).continue_final
    assert not to_generation_request(
        ChatCompletionRequest(model="m", messages=messages)
    ).continue_final
