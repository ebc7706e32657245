"""The Responses surface's translation into the core request (tables), and its echo."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from backends.errors import InvalidRequestError, UnsupportedParameterError
from backends.requests import (
    Message,
    OtherPart,
    OutputConstraint,
    Sampling,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from backends.responses_types import ResponsesRequest
from gateway.openai_responses import response_template, to_generation_request


def parse(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "m", "input": "hi", **fields})


def translate(**fields: Any):
    return to_generation_request(parse(**fields))


def text(role: str, value: str, **extra: Any) -> Message:
    return Message(role, (TextPart(value),), **extra)  # type: ignore[arg-type]


CALL = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"}
RESULT = {"type": "function_call_output", "call_id": "call_1", "output": "21 C"}
THOUGHT = {
    "type": "reasoning",
    "id": "rs_1",
    "summary": [],
    "content": [{"type": "reasoning_text", "text": "It is a weather question."}],
}


@pytest.mark.parametrize(
    ("fields", "messages"),
    [
        ({"input": "hi"}, (text("user", "hi"),)),
        ({"instructions": "Be brief."}, (text("system", "Be brief."), text("user", "hi"))),
        (
            {"input": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            (text("user", "a"), text("assistant", "b")),
        ),
        (
            {
                "instructions": "I",
                "input": [
                    {"type": "message", "role": "developer", "content": "D"},
                    {"type": "message", "role": "system", "content": "S"},
                    {"role": "user", "content": "U"},
                ],
            },
            (text("system", "I"), text("system", "D"), text("system", "S"), text("user", "U")),
        ),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "a"},
                            {"type": "input_text", "text": "b"},
                        ],
                    },
                    {
                        "type": "message",
                        "id": "msg_1",
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": "c", "annotations": []}],
                    },
                ]
            },
            (
                Message("user", (TextPart("a"), TextPart("b"))),
                text("assistant", "c"),
            ),
        ),
        (  # a call with text before it is one assistant turn; its result a tool turn
            {
                "input": [
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": "Let me look."},
                    {**CALL, "id": "fc_1", "status": "completed"},
                    {**CALL, "call_id": "call_2", "name": "get_time"},
                    RESULT,
                    {
                        **RESULT,
                        "call_id": "call_2",
                        "output": [{"type": "input_text", "text": "noon"}],
                    },
                ]
            },
            (
                text("user", "weather?"),
                Message(
                    "assistant",
                    (TextPart("Let me look."),),
                    tool_calls=(
                        ToolCall("call_1", "get_weather", "{}"),
                        ToolCall("call_2", "get_time", "{}"),
                    ),
                ),
                text("tool", "21 C", tool_call_id="call_1"),
                text("tool", "noon", tool_call_id="call_2"),
            ),
        ),
        (  # reasoning replayed as the next assistant turn's thinking
            {"input": [{"role": "user", "content": "q"}, THOUGHT, CALL]},
            (
                text("user", "q"),
                Message(
                    "assistant",
                    tool_calls=(ToolCall("call_1", "get_weather", "{}"),),
                    reasoning="It is a weather question.",
                ),
            ),
        ),
        (  # a summary stands in for content; reasoning with no assistant turn after is dropped
            {
                "input": [
                    {"type": "reasoning", "summary": [{"type": "summary_text", "text": "S"}]},
                    {"role": "assistant", "content": "A"},
                    THOUGHT,
                    {"role": "user", "content": "U"},
                ]
            },
            (text("assistant", "A", reasoning="S"), text("user", "U")),
        ),
        (  # non-text parts become the chat API's parts, for the backend to take or refuse
            {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_image", "image_url": "data:x", "detail": "low"},
                            {"type": "input_file", "file_id": "file_1"},
                            {"type": "input_audio", "data": "zz"},
                        ],
                    }
                ]
            },
            (
                Message(
                    "user",
                    (
                        OtherPart("image_url", {"image_url": {"url": "data:x", "detail": "low"}}),
                        OtherPart("file", {"file": {"file_id": "file_1"}}),
                        OtherPart("input_audio", {"data": "zz"}),
                    ),
                ),
            ),
        ),
    ],
    ids=[
        "string",
        "instructions-first",
        "easy-messages",
        "system-developer",
        "text-parts",
        "tool-round-trip",
        "reasoning-then-call",
        "reasoning-summary",
        "non-text-parts",
    ],
)
def test_input_items_become_messages(fields, messages):
    assert translate(**fields).messages == messages


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather",
    "parameters": {"type": "object"},
    "strict": True,
}
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}


@pytest.mark.parametrize(
    ("fields", "attribute", "expected"),
    [
        ({"max_output_tokens": 9}, "max_tokens", 9),
        ({"temperature": 0, "top_p": 0.5}, "sampling", Sampling(temperature=0, top_p=0.5)),
        (
            {"tools": [WEATHER]},
            "tools",
            (Tool("get_weather", "The weather", {"type": "object"}, True),),
        ),
        ({"tool_choice": "required"}, "tool_choice", ToolChoice("required")),
        ({"tool_choice": "none"}, "tool_choice", ToolChoice("none")),
        (
            {"tool_choice": {"type": "function", "name": "f"}},
            "tool_choice",
            ToolChoice("function", "f"),
        ),
        ({}, "tool_choice", None),
        ({"parallel_tool_calls": False}, "parallel_tool_calls", False),
        ({"text": {"format": {"type": "text"}}}, "constraint", None),
        (
            {"text": {"format": {"type": "json_object"}}},
            "constraint",
            OutputConstraint("json_object"),
        ),
        (
            {"text": {"format": {"type": "json_schema", "name": "n", "schema": SCHEMA}}},
            "constraint",
            OutputConstraint("json_schema", SCHEMA, name="n"),
        ),
        ({"reasoning": {"effort": "none"}}, "reasoning", False),
        ({"reasoning": {"effort": "minimal"}}, "reasoning", True),
        ({"reasoning": {"effort": "high", "summary": "auto"}}, "reasoning", True),
        ({"reasoning": {"summary": "auto"}}, "reasoning", None),
        ({"user": "u"}, "user", "u"),
        ({"safety_identifier": "s"}, "user", "s"),
        ({"store": False, "include": ["reasoning.encrypted_content"]}, "n", 1),
        ({"truncation": "disabled", "metadata": {"k": "v"}}, "extras", {}),
    ],
)
def test_fields_map_onto_the_core_request(fields, attribute, expected):
    assert getattr(translate(**fields), attribute) == expected


@pytest.mark.parametrize(
    ("fields", "error", "param"),
    [
        ({"previous_response_id": "resp_1"}, UnsupportedParameterError, "previous_response_id"),
        ({"store": True}, UnsupportedParameterError, "store"),
        ({"background": True}, UnsupportedParameterError, "background"),
        ({"conversation": "conv_1"}, UnsupportedParameterError, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, UnsupportedParameterError, "prompt"),
        ({"truncation": "auto"}, UnsupportedParameterError, "truncation"),
        ({"top_logprobs": 2}, UnsupportedParameterError, "top_logprobs"),
        ({"include": ["message.output_text.logprobs"]}, UnsupportedParameterError, "include"),
        ({"tools": [{"type": "web_search"}]}, UnsupportedParameterError, "tools[0].type"),
        ({"tools": [WEATHER, {"type": "function"}]}, InvalidRequestError, "tools[1].name"),
        ({"tool_choice": {"type": "file_search"}}, UnsupportedParameterError, "tool_choice"),
        (
            {"tool_choice": {"type": "function", "function": {"name": "f"}}},
            UnsupportedParameterError,
            "tool_choice",
        ),
        (
            {"text": {"format": {"type": "json_schema", "name": "n"}}},
            InvalidRequestError,
            "text.format.schema",
        ),
        (
            {"input": [{"role": "user", "content": "a"}, {"type": "item_reference", "id": "x"}]},
            UnsupportedParameterError,
            "input[1]",
        ),
        (
            {"input": [{"type": "web_search_call", "id": "ws"}]},
            UnsupportedParameterError,
            "input[0]",
        ),
        ({"input": []}, InvalidRequestError, "input"),
        ({"input": [THOUGHT]}, InvalidRequestError, "input"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            InvalidRequestError,
            "input[0].content[0]",
        ),
    ],
)
def test_what_cannot_be_served_is_a_400_naming_the_field(fields, error, param):
    with pytest.raises(error) as caught:
        translate(**fields)
    assert caught.value.param == param
    assert caught.value.status == 400


def test_stateful_refusals_say_llmgate_is_stateless():
    with pytest.raises(UnsupportedParameterError, match="stateless"):
        translate(previous_response_id="resp_1")


@pytest.mark.parametrize(
    "fields",
    [
        {"input": None},
        {"input": [{"role": "tool", "content": "x"}]},
        {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
        {"reasoning": {"effort": "extreme"}},
        {"max_output_tokens": 0},
        {"input": [{"type": ["message"], "role": "user", "content": "x"}]},  # was a 500
        {"input": [{"type": {"a": 1}}]},
    ],
)
def test_malformed_requests_fail_validation(fields):
    with pytest.raises(ValidationError):
        parse(**fields)


def test_the_template_echoes_the_request():
    request = parse(
        instructions="Be brief.",
        max_output_tokens=20,
        temperature=0.5,
        top_p=0.9,
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        text={"format": {"type": "json_schema", "name": "n", "schema": SCHEMA, "strict": True}},
        reasoning={"effort": "low"},
        metadata={"k": "v"},
        store=False,
    )
    echo = response_template(request).model_dump()
    assert echo["id"].startswith("resp_")
    assert echo["status"] == "in_progress"
    assert echo["output"] == [] and echo["usage"] is None
    assert echo["store"] is False and echo["previous_response_id"] is None
    assert echo["tools"] == [WEATHER]
    assert echo["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert echo["parallel_tool_calls"] is False
    assert echo["text"] == {
        "format": {"type": "json_schema", "name": "n", "schema": SCHEMA, "strict": True}
    }
    assert echo["reasoning"] == {"effort": "low", "summary": None}
    assert (echo["instructions"], echo["max_output_tokens"]) == ("Be brief.", 20)
    assert (echo["temperature"], echo["top_p"], echo["metadata"]) == (0.5, 0.9, {"k": "v"})


def test_the_template_defaults():
    echo = response_template(parse()).model_dump()
    assert echo["tool_choice"] == "auto" and echo["tools"] == []
    assert echo["parallel_tool_calls"] is True
    assert echo["text"] == {"format": {"type": "text"}}
    assert echo["metadata"] == {}


@pytest.mark.parametrize(
    ("input_", "param"),
    [
        (["hi"], "input[0]"),
        ([{"content": "hi"}], "input[0].role"),
        ([{"type": "function_call_output", "output": "x"}], "input[0].call_id"),
    ],
)
def test_a_bad_input_item_names_its_field_not_the_union_member(input_, param):
    from pydantic import ValidationError

    from gateway.errors import param_from_loc

    with pytest.raises(ValidationError) as caught:
        ResponsesRequest.model_validate({"model": "m", "input": input_})
    assert param_from_loc(("body", *caught.value.errors()[0]["loc"])) == param
