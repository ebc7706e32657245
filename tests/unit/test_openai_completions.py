"""The completions surface's translator, table-tested: the wire request into core requests,
events into ``text_completion`` chunks (echo, logprobs, usage), and several prompts' streams
merged into one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from backends import events as ev
from backends.completion_types import CompletionRequest
from backends.errors import InvalidRequestError, UnsupportedParameterError
from backends.protocol import OpenStream
from backends.requests import Sampling
from gateway.event_merge import merge_events, open_all
from gateway.openai_completions import (
    CompletionChunks,
    collect_completion,
    completion_chunks,
    legacy_logprobs,
    to_generation_requests,
)
from tests.fakes import FakeBackend, FakeScript

pytestmark = pytest.mark.anyio


def wire(**fields) -> CompletionRequest:
    return CompletionRequest.model_validate({"model": "m", "prompt": "p", **fields})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {"prompt": "p", "max_tokens": 16, "n": 1, "logprobs": False, "top_logprobs": 0}),
        ({"max_tokens": 5, "n": 3}, {"max_tokens": 5, "n": 3}),
        ({"stop": "x"}, {"stop": ("x",)}),
        ({"stop": ["a", "", "b"]}, {"stop": ("a", "b")}),
        ({"logprobs": 0}, {"logprobs": True, "top_logprobs": 0}),
        ({"logprobs": 3}, {"logprobs": True, "top_logprobs": 3}),
        ({"best_of": 2, "n": 2}, {"n": 2}),
        ({"user": "u", "top_k": 4}, {"user": "u"}),
        ({"vendor": {"x": 1}}, {"extras": {"vendor": {"x": 1}}}),
    ],
)
def test_fields_reach_the_core_request(fields, expected):
    [request] = to_generation_requests(wire(**fields))
    for key, value in expected.items():
        assert getattr(request, key) == value
    assert request.messages == () and request.is_raw


def test_sampling_fields_map_one_to_one():
    [request] = to_generation_requests(
        wire(
            temperature=0.5,
            top_p=0.9,
            top_k=4,
            min_p=0.1,
            seed=3,
            presence_penalty=0.2,
            frequency_penalty=0.3,
            logit_bias={"7": -100},
        )
    )
    assert request.sampling == Sampling(
        temperature=0.5,
        top_p=0.9,
        top_k=4,
        min_p=0.1,
        presence_penalty=0.2,
        frequency_penalty=0.3,
        logit_bias={7: -100},
        seed=3,
    )


def test_a_prompt_list_is_one_request_per_prompt():
    requests = to_generation_requests(wire(prompt=["a", "b", "c"]))
    assert [r.prompt for r in requests] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("prompt", "prompts"), [([5, 6], [(5, 6)]), ([[1], [2, 3]], [(1,), (2, 3)])]
)
def test_token_id_prompts_are_one_request_per_list(prompt, prompts):
    assert [r.prompt for r in to_generation_requests(wire(prompt=prompt))] == prompts


@pytest.mark.parametrize(
    ("fields", "error", "param"),
    [
        ({"suffix": "s"}, UnsupportedParameterError, "suffix"),
        ({"best_of": 3}, UnsupportedParameterError, "best_of"),
        ({"echo": True, "logprobs": 0}, UnsupportedParameterError, "echo"),
        ({"prompt": [1, 2], "echo": True}, UnsupportedParameterError, "echo"),
        ({"max_tokens": 0}, InvalidRequestError, "max_tokens"),
    ],
)
def test_what_only_an_openai_upstream_serves_is_refused_by_name(fields, error, param):
    with pytest.raises(error) as caught:
        to_generation_requests(wire(**fields))
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("prompt", "prompts"),
    [("x", ["x"]), (["x", "y"], ["x", "y"]), ([1, 2], [[1, 2]]), ([[1], [2, 3]], [[1], [2, 3]])],
)
def test_the_four_prompt_shapes(prompt, prompts):
    assert wire(prompt=prompt).prompts == prompts


@pytest.mark.parametrize("prompt", [[], [[]]])
def test_an_empty_prompt_list_is_invalid(prompt):
    with pytest.raises(ValueError, match="empty"):
        wire(prompt=prompt)


def test_legacy_logprobs_offsets_and_the_sampled_token_in_top():
    lps = (
        ev.TokenLogprob("He", -0.5, b"He", (ev.TopToken("He", -0.5, b"He"),)),
        ev.TokenLogprob("llo", -1.5, b"llo", (ev.TopToken("y", -0.2, b"y"),)),
    )
    out = legacy_logprobs(lps, offset=4)
    assert out.tokens == ["He", "llo"]
    assert out.token_logprobs == [-0.5, -1.5]
    assert out.text_offset == [4, 6]
    assert out.top_logprobs == [{"He": -0.5}, {"y": -0.2, "llo": -1.5}]


async def scripted(events: list[ev.Event]) -> AsyncIterator[ev.Event]:
    for event in events:
        yield event


async def test_chunks_echo_first_then_text_then_finish_then_usage_if_asked():
    events = [ev.Started(0), ev.TextDelta(0, " a"), ev.Finished(0, "length"), ev.Usage(3, 1)]
    builder = CompletionChunks(model="alias", echoes={0: "say"})
    chunks = [c async for c in completion_chunks(scripted(events), builder, include_usage=True)]
    assert [(c.choices[0].text, c.choices[0].finish_reason) for c in chunks[:3]] == [
        ("say", None),
        (" a", None),
        ("", "length"),
    ]
    assert chunks[3].choices == [] and chunks[3].usage.total_tokens == 4
    assert {c.id for c in chunks} == {builder.id} and {c.model for c in chunks} == {"alias"}
    assert "usage" not in chunks[0].model_dump()  # only the last chunk carries usage
    without = [c async for c in completion_chunks(scripted(events), builder, False)]
    assert len(without) == 3


async def test_logprob_offsets_start_after_the_echo():
    lp = (ev.TokenLogprob(" a", -1.0, b" a"),)
    events = [ev.Started(0), ev.TextDelta(0, " a", lp), ev.Finished(0, "stop"), ev.Usage(1, 1)]
    builder = CompletionChunks(model="m", echoes={0: "say"})
    completion = await collect_completion(scripted(events), builder)
    assert completion.choices[0].text == "say a"
    assert completion.choices[0].logprobs.text_offset == [3]


async def test_collect_folds_choices_in_index_order():
    events = [
        ev.Started(0),
        ev.Started(1),
        ev.TextDelta(1, "b"),
        ev.TextDelta(0, "a"),
        ev.Finished(1, "stop"),
        ev.Finished(0, "length"),
        ev.Usage(2, 2),
    ]
    completion = await collect_completion(scripted(events), CompletionChunks(model="m"))
    assert [(c.index, c.text, c.finish_reason) for c in completion.choices] == [
        (0, "a", "length"),
        (1, "b", "stop"),
    ]
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.usage.prompt_tokens == 2


async def test_merged_streams_renumber_choices_and_sum_usage():
    backend = FakeBackend("m", FakeScript(tokens=["x", "y"], prompt_tokens=5))
    requests = to_generation_requests(wire(prompt=["a", "b"], n=2))
    streams = await open_all(backend, requests)
    events = [e async for e in merge_events(streams, n=2)]
    indexes = {e.index for e in events if isinstance(e, ev.TextDelta)}
    assert indexes == {0, 1, 2, 3}
    usage = [e for e in events if isinstance(e, ev.Usage)]
    assert usage == [ev.Usage(10, 8)]
    assert events[-1] == usage[0]


async def test_a_failing_prompt_fails_the_merged_stream_and_closes_the_others():
    backend = FakeBackend("m", FakeScript(tokens=["x"] * 50, delay=0.01))
    failing = FakeBackend("m", FakeScript(fail_after_tokens=1, fail_with=RuntimeError("boom")))
    slow = await backend.generate(to_generation_requests(wire())[0])
    bad = await failing.generate(to_generation_requests(wire())[0])
    with pytest.raises(RuntimeError, match="boom"):
        async for _ in merge_events([slow, bad], n=1):
            pass
    await asyncio.sleep(0)
    assert backend.streams_closed == 1 and backend.tokens_generated < 50


async def test_closing_the_merged_stream_stops_every_generation():
    backend = FakeBackend("m", FakeScript(tokens=["x"] * 100, delay=0.01))
    streams = await open_all(backend, to_generation_requests(wire(prompt=["a", "b", "c"])))
    merged = merge_events(streams, n=1)
    await anext(merged)
    await merged.aclose()
    assert backend.streams_closed == 3
    assert backend.tokens_generated < 30


async def test_open_all_closes_what_started_when_one_cannot_start():
    released: list[str] = []

    class HalfBroken(FakeBackend):
        async def generate(self, request):
            if request.prompt == "bad":
                raise UnsupportedParameterError("no", param="prompt")

            async def release() -> None:
                released.append(request.prompt)

            return OpenStream(self._events(request), cleanup=release)

    backend = HalfBroken("m")
    with pytest.raises(UnsupportedParameterError):
        await open_all(backend, to_generation_requests(wire(prompt=["ok", "bad", "ok2"])))
    assert sorted(released) == ["ok", "ok2"]
