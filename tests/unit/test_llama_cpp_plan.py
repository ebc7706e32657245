"""plan_generation: the pure OpenAI -> llama.cpp translation, as a table."""

from __future__ import annotations

import pytest

from backends.errors import UnsupportedParameterError
from backends.llama_cpp import (
    DEFAULT_MIN_P,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    plan_generation,
)
from backends.schemas import ChatCompletionRequest
from backends.settings import LlamaCppSettings

SETTINGS = LlamaCppSettings(name="m", backend="llama_cpp", source="x.gguf", seed=11)
BASE = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def plan(**fields):
    return plan_generation(ChatCompletionRequest(**{**BASE, **fields}), SETTINGS)


def test_defaults_follow_llama_cpp_server():
    p = plan()
    assert (p.temperature, p.top_p, p.top_k, p.min_p) == (
        DEFAULT_TEMPERATURE,
        DEFAULT_TOP_P,
        DEFAULT_TOP_K,
        DEFAULT_MIN_P,
    )
    assert p.seed == 11  # the model's default seed
    assert p.n == 1 and p.max_new_tokens is None and p.stops == []


@pytest.mark.parametrize(
    ("fields", "attr", "expected"),
    [
        ({"temperature": 0}, "temperature", 0),
        ({"top_p": 0.5}, "top_p", 0.5),
        ({"top_k": -1}, "top_k", 0),
        ({"top_k": 7}, "top_k", 7),
        ({"min_p": 0.2}, "min_p", 0.2),
        ({"seed": 5}, "seed", 5),
        ({"stop": "x"}, "stops", ["x"]),
        ({"stop": ["a", "", "b"]}, "stops", ["a", "b"]),
        ({"presence_penalty": 1.5}, "presence_penalty", 1.5),
        ({"frequency_penalty": -1}, "frequency_penalty", -1),
        ({"logit_bias": {"3": -100}}, "logit_bias", {3: -100}),
        ({"n": 3}, "n", 3),
        ({"max_tokens": 9}, "max_new_tokens", 9),
        ({"max_tokens": 9, "max_completion_tokens": 4}, "max_new_tokens", 4),
        ({"logprobs": True, "top_logprobs": 2}, "top_logprobs", 2),
        ({"response_format": {"type": "json_object"}}, "json_object", True),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "a", "schema": {"type": "object"}},
                }
            },
            "json_schema",
            {"type": "object"},
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"},
            "n",
            1,
        ),
        ({"user": "someone"}, "n", 1),
    ],
)
def test_fields_are_mapped(fields, attr, expected):
    assert getattr(plan(**fields), attr) == expected


def test_messages_are_flattened_and_developer_is_system():
    p = plan(
        messages=[
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
        ]
    )
    assert p.messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "ab"},
    ]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ]
            },
            "messages[0].content",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "1",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    }
                ]
            },
            "messages[0].tool_calls",
        ),
    ],
)
def test_what_llama_cpp_cannot_do_is_refused_by_name(fields, param):
    with pytest.raises(UnsupportedParameterError) as info:
        plan(**fields)
    assert info.value.param == param
