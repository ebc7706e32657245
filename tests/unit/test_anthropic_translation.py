"""The Anthropic Messages request translation (``gateway.anthropic_messages``), table-tested
with the shapes of Anthropic's documented examples: system as a string or blocks, the
tool_use / tool_result round trip, tool_choice, thinking, stop_sequences and sampling, and the
400s (missing max_tokens, server tools, a prefill it cannot continue, unknown blocks);
a final assistant turn is continued (prefill)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from backends.anthropic_types import CountTokensRequest, MessagesRequest
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
from gateway.anthropic_messages import count_request, to_generation_request

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"location": {"type": "string", "description": "The city and state"}},
    "required": ["location"],
}
WEATHER = {"name": "get_weather", "description": "Get the weather", "input_schema": WEATHER_SCHEMA}
ASK = {"role": "user", "content": "What's the weather like in San Francisco?"}
CALL = {
    "role": "assistant",
    "content": [
        {"type": "text", "text": "I'll check."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA"},
        },
    ],
}
RESULT = {
    "role": "user",
    "content": [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
            "content": "15 degrees",
        }
    ],
}


def translate(**fields: Any):
    body = {"model": "m", "max_tokens": 2048, "messages": [{"role": "user", "content": "Hi"}]}
    return to_generation_request(MessagesRequest.model_validate({**body, **fields}))


def user(text: str) -> Message:
    return Message("user", (TextPart(text),))


@pytest.mark.parametrize(
    ("fields", "messages"),
    [
        ({}, (user("Hi"),)),
        (
            {"system": "You are a pirate."},
            (Message("system", (TextPart("You are a pirate."),)), user("Hi")),
        ),
        (
            {"system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]},
            (Message("system", (TextPart("A\n\nB"),)), user("Hi")),
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]},
            (user("Hi"),),
        ),
        (  # consecutive turns of one role are one turn
            {
                "messages": [
                    {"role": "user", "content": "Hello"},
                    {"role": "user", "content": "there"},
                ]
            },
            (Message("user", (TextPart("Hello"), TextPart("there"))),),
        ),
        (
            {"messages": [ASK, CALL, RESULT]},
            (
                user(ASK["content"]),
                Message(
                    "assistant",
                    (TextPart("I'll check."),),
                    tool_calls=(
                        ToolCall(
                            "toolu_01A09q90qw90lq917835lq9",
                            "get_weather",
                            '{"location": "San Francisco, CA"}',
                        ),
                    ),
                ),
                Message(
                    "tool",
                    (TextPart("15 degrees"),),
                    tool_call_id="toolu_01A09q90qw90lq917835lq9",
                ),
            ),
        ),
        (  # results first, then the text of the same turn; block content; is_error
            {
                "messages": [
                    ASK,
                    CALL,
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Thanks."},
                            {
                                "type": "tool_result",
                                "tool_use_id": "t1",
                                "content": [{"type": "text", "text": "timeout"}],
                                "is_error": True,
                            },
                        ],
                    },
                ]
            },
            (
                user(ASK["content"]),
                Message(
                    "assistant",
                    (TextPart("I'll check."),),
                    tool_calls=(
                        ToolCall(
                            "toolu_01A09q90qw90lq917835lq9",
                            "get_weather",
                            '{"location": "San Francisco, CA"}',
                        ),
                    ),
                ),
                Message("tool", (TextPart("Error: "), TextPart("timeout")), tool_call_id="t1"),
                user("Thanks."),
            ),
        ),
        (  # thinking is replayed as the assistant's reasoning; redacted thinking dropped
            {
                "messages": [
                    {"role": "user", "content": "2+2?"},
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "thinking", "thinking": "Easy.", "signature": "EqQB"},
                            {"type": "redacted_thinking", "data": "EmwKAhgB"},
                            {"type": "text", "text": "4"},
                        ],
                    },
                    {"role": "user", "content": "3+3?"},
                ]
            },
            (
                user("2+2?"),
                Message("assistant", (TextPart("4"),), reasoning="Easy."),
                user("3+3?"),
            ),
        ),
        (  # an image becomes the chat API's image_url part (the engines refuse it)
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": "iVBOR",
                                },
                            },
                            {"type": "text", "text": "What is this?"},
                        ],
                    }
                ]
            },
            (
                Message(
                    "user",
                    (
                        OtherPart(
                            "image_url", {"image_url": {"url": "data:image/png;base64,iVBOR"}}
                        ),
                        TextPart("What is this?"),
                    ),
                ),
            ),
        ),
    ],
)
def test_messages(fields, messages):
    assert translate(**fields).messages == messages


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        (None, None, None),
        ({"type": "auto"}, ToolChoice("auto"), None),
        ({"type": "any"}, ToolChoice("required"), None),
        ({"type": "tool", "name": "get_weather"}, ToolChoice("function", "get_weather"), None),
        ({"type": "none"}, ToolChoice("none"), None),
        ({"type": "any", "disable_parallel_tool_use": True}, ToolChoice("required"), False),
        ({"type": "auto", "disable_parallel_tool_use": False}, ToolChoice("auto"), None),
    ],
)
def test_tools_and_tool_choice(choice, expected, parallel):
    fields: dict[str, Any] = {"tools": [WEATHER]}
    if choice is not None:
        fields["tool_choice"] = choice
    request = translate(**fields)
    assert request.tools == (Tool("get_weather", "Get the weather", WEATHER_SCHEMA),)
    assert request.tool_choice == expected
    assert request.parallel_tool_calls is parallel


@pytest.mark.parametrize(
    ("thinking", "reasoning"),
    [
        (None, None),
        ({"type": "enabled", "budget_tokens": 1024}, True),
        ({"type": "disabled"}, False),
        ({"type": "adaptive"}, None),
    ],
)
def test_thinking(thinking, reasoning):
    fields = {"thinking": thinking} if thinking is not None else {}
    assert translate(**fields).reasoning is reasoning


def test_sampling_stops_metadata_and_output_format():
    request = translate(
        max_tokens=64,
        stop_sequences=["\n\nHuman:", "END"],
        temperature=0.5,
        top_p=0.9,
        top_k=20,
        metadata={"user_id": "user-42"},
        output_config={"format": {"type": "json_schema", "schema": WEATHER_SCHEMA}},
        cache_control={"type": "ephemeral"},  # unknown to llmgate: accepted
    )
    assert request.max_tokens == 64
    assert request.stop == ("\n\nHuman:", "END")
    assert request.sampling == Sampling(temperature=0.5, top_p=0.9, top_k=20)
    assert request.user == "user-42"
    assert request.constraint == OutputConstraint("json_schema", WEATHER_SCHEMA)


def test_count_tokens_takes_the_same_body_without_max_tokens():
    body = {"model": "m", "system": "Be brief.", "messages": [ASK], "tools": [WEATHER]}
    counted = count_request(CountTokensRequest.model_validate(body))
    full = translate(system="Be brief.", messages=[ASK], tools=[WEATHER])
    assert (counted.messages, counted.tools) == (full.messages, full.tools)
    assert counted.max_tokens is None


def test_a_final_assistant_turn_is_continued():
    request = translate(messages=[ASK, {"role": "assistant", "content": "The weather is"}])
    assert request.continue_final
    assert request.messages[-1] == Message("assistant", (TextPart("The weather is"),))
    assert not translate(messages=[ASK]).continue_final
    empty = translate(messages=[ASK, {"role": "assistant", "content": ""}])
    assert empty.continue_final and empty.messages[-1] == Message("assistant", ())
    counted = CountTokensRequest.model_validate(
        {"model": "m", "messages": [ASK, {"role": "assistant", "content": "{"}]}
    )
    assert count_request(counted).continue_final


@pytest.mark.parametrize(
    ("fields", "error", "param"),
    [
        (
            {"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]},
            UnsupportedParameterError,
            "tools[0].type",
        ),
        (
            {"tools": [{"type": "bash_20250124", "name": "bash"}]},
            UnsupportedParameterError,
            "tools[0].type",
        ),
        ({"tools": [{"name": "f"}]}, InvalidRequestError, "tools[0].input_schema"),
        ({"tool_choice": {"type": "tool"}}, InvalidRequestError, "tool_choice.name"),
        ({"thinking": {"type": "sometimes"}}, UnsupportedParameterError, "thinking.type"),
        # checked as Anthropic's API checks them
        ({"thinking": {"type": "enabled"}}, InvalidRequestError, "thinking.budget_tokens"),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 1000}},
            InvalidRequestError,
            "thinking.budget_tokens",
        ),
        (
            {"max_tokens": 1024, "thinking": {"type": "enabled", "budget_tokens": 1024}},
            InvalidRequestError,
            "max_tokens",
        ),
        ({"stop_sequences": ["ok", " \n"]}, InvalidRequestError, "stop_sequences[1]"),
        ({"stop_sequences": [""]}, InvalidRequestError, "stop_sequences[0]"),
        (
            {"tools": [{"name": "bad name!", "input_schema": {"type": "object"}}]},
            InvalidRequestError,
            "tools[0].name",
        ),
        (
            {"tools": [{"name": "f", "input_schema": {"type": "string"}}]},
            InvalidRequestError,
            "tools[0].input_schema.type",
        ),
        # a final assistant turn is continued as text: no tool_use, no trailing whitespace
        ({"messages": [ASK, CALL]}, InvalidRequestError, "messages[1].content[1]"),
        (
            {"messages": [ASK, {"role": "assistant", "content": "It is "}]},
            InvalidRequestError,
            "messages[1].content",
        ),
        ({"messages": []}, InvalidRequestError, "messages"),
        # as Anthropic's API: no empty message, no empty text block
        (
            {"messages": [{"role": "user", "content": ""}]},
            InvalidRequestError,
            "messages[0].content",
        ),
        (
            {"messages": [{"role": "user", "content": []}]},
            InvalidRequestError,
            "messages[0].content",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
            InvalidRequestError,
            "messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "search_result"}]}]},
            UnsupportedParameterError,
            "messages[0].content[0]",
        ),
        (
            {"system": [{"type": "image", "source": {}}]},
            InvalidRequestError,
            "system[0]",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
            InvalidRequestError,
            "messages[0].content[0]",
        ),
        (
            {"output_config": {"format": {"type": "xml"}}},
            UnsupportedParameterError,
            "output_config.format",
        ),
    ],
)
def test_what_cannot_be_served_is_a_400_naming_the_field(fields, error, param):
    with pytest.raises(error) as caught:
        translate(**fields)
    assert caught.value.status == 400
    assert caught.value.param == param


@pytest.mark.parametrize(
    "fields",
    [
        {"max_tokens": None},
        {"temperature": 1.5},
        {"max_tokens": 0},
        {"tool_choice": {"type": "required"}},
    ],
)
def test_the_wire_type_refuses_what_anthropic_refuses(fields):
    body = {"model": "m", "max_tokens": 8, "messages": [ASK], **fields}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(ValidationError):
        MessagesRequest.model_validate(body)
