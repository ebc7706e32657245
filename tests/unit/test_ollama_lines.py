"""A backend's events -> Ollama's NDJSON lines (``gateway.ollama_stream``): order, the final
line's counters, measured durations."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator

import pytest

from backends import events as ev
from gateway.ollama_stream import (
    OllamaLineBuilder,
    Timings,
    created_at,
    ndjson_lines,
    whole_answer,
)

pytestmark = pytest.mark.anyio

RFC3339_NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")


async def scripted(events: list[ev.Event], pause: float = 0.001) -> AsyncIterator[ev.Event]:
    for event in events:
        await asyncio.sleep(pause)  # a measurable engine
        yield event


TEXT = [
    ev.Started(0),
    ev.TextDelta(0, "The sky"),
    ev.TextDelta(0, " is blue."),
    ev.Finished(0, "stop"),
    ev.Usage(26, 3),
]


def timings() -> Timings:
    marks = Timings()
    marks.reached_engine()
    return marks


async def lines_of(events: list[ev.Event], surface="chat") -> list[dict]:
    builder = OllamaLineBuilder(surface, "llama3.2", timings())
    return [json.loads(raw) async for raw in ndjson_lines(scripted(events), builder)]


async def test_chat_lines_then_a_final_line_with_counts_and_durations():
    lines = await lines_of(TEXT)
    assert [line["message"] for line in lines] == [
        {"role": "assistant", "content": "The sky"},
        {"role": "assistant", "content": " is blue."},
        {"role": "assistant", "content": ""},
    ]
    assert [line["done"] for line in lines] == [False, False, True]
    assert list(lines[0]) == ["model", "created_at", "message", "done"]
    final = lines[-1]
    assert (final["done_reason"], final["prompt_eval_count"], final["eval_count"]) == (
        "stop",
        26,
        3,
    )
    assert all(RFC3339_NANO.match(line["created_at"]) for line in lines)
    assert final["model"] == "llama3.2"


async def test_durations_are_measured_and_add_up():
    final = (await lines_of(TEXT))[-1]
    assert final["load_duration"] == 0  # loaded already
    assert final["prompt_eval_duration"] >= 1_000_000  # the first token took a pause
    assert final["eval_duration"] >= 2_000_000
    parts = final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]
    assert final["total_duration"] >= parts


async def test_generate_lines_carry_response_thinking_and_an_empty_context():
    events = [
        ev.Started(0),
        ev.ReasoningDelta(0, "Hmm."),
        ev.TextDelta(0, "Blue."),
        ev.Finished(0, "length"),
        ev.Usage(4, 2),
    ]
    lines = await lines_of(events, "generate")
    assert lines[0] == {**lines[0], "response": "", "thinking": "Hmm.", "done": False}
    assert lines[1]["response"] == "Blue." and "thinking" not in lines[1]
    assert lines[2]["done_reason"] == "length" and lines[2]["context"] == []


async def test_a_tool_call_comes_whole_with_object_arguments_and_finishes_as_stop():
    events = [
        ev.Started(0),
        ev.ToolCallDelta(0, 0, "call_1", "get_weather", ""),
        ev.ToolCallDelta(0, 0, arguments='{"city": '),
        ev.ToolCallDelta(0, 0, arguments='"Paris"}'),
        ev.Finished(0, "tool_calls"),
        ev.Usage(30, 9),
    ]
    lines = await lines_of(events)
    assert lines[0]["message"]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    assert lines[0]["done"] is False
    assert lines[1]["done"] and lines[1]["done_reason"] == "stop"


async def test_a_call_cut_short_is_left_out():
    events = [
        ev.Started(0),
        ev.ToolCallDelta(0, 0, "call_1", "get_weather", '{"city": "Pa'),
        ev.Finished(0, "length"),
        ev.Usage(30, 4),
    ]
    lines = await lines_of(events)
    assert len(lines) == 1 and "tool_calls" not in lines[0]["message"]
    assert lines[0]["message"]["content"] == "" and lines[0]["done_reason"] == "length"


async def test_a_finished_call_that_is_not_an_object_is_sent_as_its_text():
    events = [
        ev.Started(0),
        ev.ToolCallDelta(0, 0, "call_1", "get_weather", "[1, 2]"),
        ev.Finished(0, "tool_calls"),
        ev.Usage(30, 4),
    ]
    lines = await lines_of(events)
    assert lines[0]["message"] == {"role": "assistant", "content": "[1, 2]"}


async def test_the_whole_answer_folds_the_lines():
    events = [
        ev.Started(0),
        ev.ReasoningDelta(0, "Think."),
        ev.TextDelta(0, "Hi"),
        ev.TextDelta(0, "!"),
        ev.Finished(0, "stop"),
        ev.Usage(5, 3),
    ]
    builder = OllamaLineBuilder("chat", "m", timings())
    answer = json.loads(await whole_answer(scripted(events, 0), builder))
    assert answer["message"] == {"role": "assistant", "content": "Hi!", "thinking": "Think."}
    assert answer["done"] and answer["eval_count"] == 3
    assert all(answer[key] >= 0 for key in DURATIONS)
    builder = OllamaLineBuilder("generate", "m", timings())
    answer = json.loads(await whole_answer(scripted(events, 0), builder))
    assert list(answer)[:5] == ["model", "created_at", "response", "thinking", "done"]
    assert (answer["response"], answer["thinking"]) == ("Hi!", "Think.")


def test_created_at_is_gos_rfc3339_nano():
    assert created_at(1_700_000_000_123_400_000) == "2023-11-14T22:13:20.1234Z"
    assert created_at(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"


def test_load_time_counts_in_the_total():
    marks = Timings(started=time.monotonic_ns() - 5_000_000, load=3_000_000)
    marks.reached_engine()
    marks.token()
    marks.end()
    durations = marks.durations()
    assert durations["load_duration"] == 3_000_000
    assert durations["total_duration"] >= 5_000_000
    assert durations["prompt_eval_duration"] >= 1 and durations["eval_duration"] >= 1
