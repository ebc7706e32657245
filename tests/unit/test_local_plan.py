"""The shared in-process layer's request checks and plan, as tables (no engine, no torch)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from backends.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    UnsupportedParameterError,
)
from backends.llama_cpp.engine import SAMPLING_DEFAULTS as LLAMA_DEFAULTS
from backends.local.plan import (
    EngineLimits,
    SamplingParams,
    check_request,
    make_plan,
    resolve_sampling,
)
from backends.openai_types import ChatCompletionRequest
from backends.requests import GenerationRequest, Sampling
from gateway.openai_chat_request import to_generation_request

LIMITS = EngineLimits(context_window=64, vocab_size=100, sampling_defaults={}, max_n=4)


def request(**extra: Any):
    return to_generation_request(
        ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
        )
    )


@pytest.mark.parametrize(
    ("extra", "defaults", "expected"),
    [
        ({}, {}, SamplingParams()),
        ({}, {"temperature": 0.6, "top_p": 0.9, "top_k": 20}, SamplingParams(0.6, 0.9, 20)),
        ({"temperature": 0, "top_p": 0.5}, {"temperature": 0.6}, SamplingParams(0.0, 0.5)),
        ({"top_k": -1}, {"top_k": 20}, SamplingParams(top_k=0)),
        ({"min_p": 0.1, "seed": 3}, {}, SamplingParams(min_p=0.1, seed=3)),
        (
            {"presence_penalty": 0.5, "frequency_penalty": -1, "logit_bias": {"7": -100}},
            {},
            SamplingParams(presence_penalty=0.5, frequency_penalty=-1.0, logit_bias={7: -100.0}),
        ),
        (
            {"logprobs": True, "top_logprobs": 3},
            {},
            SamplingParams(logprobs=True, top_logprobs=3),
        ),
        ({}, LLAMA_DEFAULTS, SamplingParams(0.8, 0.95, 40, 0.05)),
    ],
)
def test_sampling_table(extra, defaults, expected):
    assert resolve_sampling(request(**extra), defaults, None) == expected


def test_the_model_seed_is_the_default_and_a_request_seed_wins():
    assert resolve_sampling(request(), {}, 42).seed == 42
    assert resolve_sampling(request(seed=1), {}, 42).seed == 1


TOOLS = [{"type": "function", "function": {"name": "f"}}]
TOOL_CALL_HISTORY = [
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
]


def test_what_an_engine_cannot_do_is_refused_by_name():
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]
    with pytest.raises(UnsupportedParameterError) as caught:
        check_request(request(messages=image), "llama_cpp")
    assert caught.value.param == "messages[0].content"


def test_core_fields_no_local_engine_serves_yet_are_refused_by_name():
    change = {"sampling": Sampling(repetition_penalty=1.1)}
    with pytest.raises(UnsupportedParameterError) as caught:
        check_request(replace(request(), **change), "transformers")
    assert caught.value.param == "repetition_penalty"


def test_a_raw_prompt_needs_no_messages():
    raw = GenerationRequest(model="m", prompt="Once upon a time")
    check_request(raw, "llama_cpp")
    assert raw.is_raw


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": TOOLS},
        {"tools": TOOLS, "tool_choice": "none"},
        {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False},
        {"messages": TOOL_CALL_HISTORY},
        {"response_format": {"type": "text"}},
        {"response_format": {"type": "json_object"}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
        {"reasoning_effort": "low"},
        {"user": "someone", "some_vendor_extra": 1},
    ],
)
def test_what_an_engine_can_do_passes(extra):
    check_request(request(**extra), "llama_cpp")


def test_plan_fills_the_budget_and_carries_stops_n_and_adapter():
    plan = make_plan(request(stop=["END", ""], n=2), [1] * 10, LIMITS, adapter="sql")
    assert plan.max_new_tokens == 64 - 10
    assert (plan.n, plan.stops, plan.adapter) == (2, ("END",), "sql")


def test_max_completion_tokens_wins_and_must_fit():
    plan = make_plan(request(max_tokens=5, max_completion_tokens=7), [1], LIMITS)
    assert plan.max_new_tokens == 7
    with pytest.raises(ContextLengthExceededError, match="maximum context length is 64") as too:
        make_plan(request(max_tokens=63), [1, 2], LIMITS)
    assert too.value.param == "messages"  # together too long: the prompt is named
    with pytest.raises(ContextLengthExceededError) as alone:
        make_plan(request(max_tokens=64), [1, 2], LIMITS)
    assert alone.value.param == "max_tokens"  # the limit alone fills the window
    with pytest.raises(ContextLengthExceededError):
        make_plan(request(), [1] * 64, LIMITS)


def test_a_budget_that_only_caps_is_fitted_to_the_window():
    from backends.local.plan import token_budget

    assert token_budget(10, 4096, 64, fit=True) == 54  # Ollama's num_predict
    assert token_budget(10, 20, 64, fit=True) == 20
    with pytest.raises(ContextLengthExceededError, match="resulted in 64 tokens"):
        token_budget(64, 4096, 64, fit=True)  # the prompt alone fills it: still a 400


@pytest.mark.parametrize(
    ("extra", "error", "param"),
    [
        ({"n": 5}, UnsupportedParameterError, "n"),
        ({"logit_bias": {"100": 1}}, InvalidRequestError, "logit_bias"),
    ],
)
def test_plan_refuses_what_the_loaded_model_cannot_serve(extra, error, param):
    with pytest.raises(error) as caught:
        make_plan(request(**extra), [1], LIMITS)
    assert caught.value.param == param
