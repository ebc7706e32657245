"""The one translation from an OpenAI request to the transformers engine's terms (no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from backends.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    UnsupportedParameterError,
)
from backends.generation import SamplingParams
from backends.schemas import ChatCompletionRequest
from backends.settings import TransformersSettings
from backends.transformers import plan_generation, sampling_params

SETTINGS = TransformersSettings(name="m", backend="transformers", source="x", max_batch_size=4)


def request(**extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
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
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"},
            {},
            SamplingParams(),
        ),
        ({"response_format": {"type": "text"}}, {}, SamplingParams()),
    ],
)
def test_sampling_params_table(extra, defaults, expected):
    assert sampling_params(request(**extra), defaults, None) == expected


def test_config_seed_is_the_default_and_a_request_seed_wins():
    assert sampling_params(request(), {}, 42).seed == 42
    assert sampling_params(request(seed=1), {}, 42).seed == 1


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format",
        ),
    ],
)
def test_what_the_engine_cannot_do_is_refused_by_name(extra, param):
    with pytest.raises(UnsupportedParameterError) as caught:
        sampling_params(request(**extra), {}, None)
    assert caught.value.param == param


@dataclass
class FakeTokenizer:
    """Test double: one token per character of the rendered ChatML-ish prompt."""

    seen: list[Any] = field(default_factory=list)
    fail: bool = False

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> list[int]:
        self.seen.append((messages, kwargs))
        if self.fail:
            raise ValueError("Conversation roles must alternate user/assistant")
        return [ord(c) % 50 for m in messages for c in m["content"]]


@dataclass
class FakeLoaded:
    tokenizer: FakeTokenizer = field(default_factory=FakeTokenizer)
    max_context: int = 64
    vocab_size: int = 100
    sampling_defaults: dict[str, float] = field(default_factory=dict)


def plan(loaded: FakeLoaded | None = None, adapter: str | None = None, **extra: Any):
    return plan_generation(request(**extra), loaded or FakeLoaded(), SETTINGS, adapter)  # type: ignore[arg-type]


def test_plan_tokenizes_with_the_generation_prompt_and_fills_the_budget():
    loaded = FakeLoaded()
    job = plan(
        loaded,
        adapter="sql",
        messages=[
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
        ],
        stop="END",
        n=2,
    )
    messages, kwargs = loaded.tokenizer.seen[0]
    assert messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "ab"},
    ]
    assert kwargs["add_generation_prompt"] is True and kwargs["tokenize"] is True
    assert len(job.prompt) == 10 and job.max_new_tokens == 64 - 10
    assert (job.n, job.stops, job.adapter) == (2, ["END"], "sql")


def test_max_completion_tokens_wins_and_must_fit():
    assert plan(max_tokens=5, max_completion_tokens=7).max_new_tokens == 7
    with pytest.raises(ContextLengthExceededError, match="maximum context length is 64"):
        plan(max_tokens=63)
    with pytest.raises(ContextLengthExceededError):
        plan(messages=[{"role": "user", "content": "x" * 64}])


@pytest.mark.parametrize(
    ("extra", "error", "param"),
    [
        ({"n": 5}, UnsupportedParameterError, "n"),
        ({"logit_bias": {"100": 1}}, InvalidRequestError, "logit_bias"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            UnsupportedParameterError,
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
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    }
                ]
            },
            UnsupportedParameterError,
            "messages[0].tool_calls",
        ),
    ],
)
def test_plan_refuses_bad_requests_by_field(extra, error, param):
    with pytest.raises(error) as caught:
        plan(**extra)
    assert caught.value.param == param


def test_a_template_that_rejects_the_messages_is_a_400():
    loaded = FakeLoaded(tokenizer=FakeTokenizer(fail=True))
    with pytest.raises(InvalidRequestError, match="roles must alternate") as caught:
        plan(loaded)
    assert caught.value.param == "messages"
