"""The Responses stream contract (README, "Responses"): event order from scripted core events,
every event valid against the openai SDK's own types, numbering, item ids, the terminal event
(completed / incomplete / failed), the whole-answer fold, and the route's SSE framing, errors,
404s for stored responses, and cancellation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai.types.responses import Response as SDKResponse
from openai.types.responses import ResponseStreamEvent as SDKStreamEvent
from pydantic import TypeAdapter

from backends import events as ev
from backends.errors import QueueFullError, UpstreamError
from backends.responses_types import ResponsesRequest
from gateway.openai_responses import response_template
from gateway.responses_stream import ResponseEventBuilder, collect_response, response_events
from tests.fakes import FakeScript
from tests.unit.disconnect import call_then_disconnect

pytestmark = pytest.mark.anyio

SDK_EVENT: TypeAdapter[Any] = TypeAdapter(SDKStreamEvent)
TEMPLATE = ResponsesRequest.model_validate({"model": "m", "input": "hi"})

TEXT = [
    ev.Started(0),
    ev.TextDelta(0, "Hel"),
    ev.TextDelta(0, "lo"),
    ev.Finished(0, "stop"),
    ev.Usage(5, 2),
]
THINK_THEN_TEXT = [
    ev.Started(0),
    ev.ReasoningDelta(0, "Hmm"),
    ev.ReasoningDelta(0, "."),
    ev.TextDelta(0, "4"),
    ev.Finished(0, "stop"),
    ev.Usage(5, 3),
]
TWO_CALLS = [
    ev.Started(0),
    ev.ToolCallDelta(0, 0, "call_a", "get_weather", ""),
    ev.ToolCallDelta(0, 0, None, None, '{"city": "Paris"}'),
    ev.ToolCallDelta(0, 1, "call_b", "get_time", ""),
    ev.ToolCallDelta(0, 1, None, None, "{}"),
    ev.Finished(0, "tool_calls"),
    ev.Usage(9, 12),
]
CUT = [ev.Started(0), ev.TextDelta(0, "a"), ev.Finished(0, "length"), ev.Usage(5, 1)]
THINKING_CUT = [ev.Started(0), ev.ReasoningDelta(0, "Hm"), ev.Finished(0, "length"), ev.Usage(5, 1)]
NOTHING = [ev.Started(0), ev.Finished(0, "stop"), ev.Usage(5, 0)]

MESSAGE = [
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]
REASONING = [
    "response.output_item.added",
    "response.content_part.added",
    "response.reasoning_text.delta",
    "response.reasoning_text.delta",
    "response.reasoning_text.done",
    "response.content_part.done",
    "response.output_item.done",
]
CALL = [
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
]
START = ["response.created", "response.in_progress"]


async def scripted(events: list[ev.Event]) -> AsyncIterator[ev.Event]:
    for event in events:
        yield event


async def stream(events: list[ev.Event]) -> list[dict[str, Any]]:
    template = response_template(TEMPLATE)
    return [e.model_dump(mode="json") async for e in response_events(scripted(events), template)]


def one_delta(types: list[str]) -> list[str]:
    return [t for i, t in enumerate(types) if i != 3]


@pytest.mark.parametrize(
    ("events", "types"),
    [
        (TEXT, [*START, *MESSAGE, "response.completed"]),
        (THINK_THEN_TEXT, [*START, *REASONING, *one_delta(MESSAGE), "response.completed"]),
        (TWO_CALLS, [*START, *CALL, *CALL, "response.completed"]),
        (CUT, [*START, *one_delta(MESSAGE), "response.incomplete"]),
        (THINKING_CUT, [*START, *one_delta(REASONING), "response.incomplete"]),
        (NOTHING, [*START, *[t for t in MESSAGE if "delta" not in t], "response.completed"]),
    ],
    ids=["text", "reasoning-then-text", "two-calls", "max-tokens", "thinking-cut", "empty"],
)
async def test_event_order(events, types):
    assert [e["type"] for e in await stream(events)] == types


@pytest.mark.parametrize("events", [TEXT, THINK_THEN_TEXT, TWO_CALLS, CUT, THINKING_CUT, NOTHING])
async def test_every_event_is_valid_for_the_sdk_and_numbered_in_order(events):
    out = await stream(events)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    for event in out:
        parsed = SDK_EVENT.validate_python(event)
        assert parsed.type == event["type"]
    SDKResponse.model_validate(out[-1]["response"])
    assert len({e["response"]["id"] for e in out if "response" in e}) == 1


async def test_item_events_share_the_item_id_and_output_index():
    out = await stream(THINK_THEN_TEXT)
    by_index: dict[int, set[str]] = {}
    for event in out:
        if "item" in event:
            by_index.setdefault(event["output_index"], set()).add(event["item"]["id"])
        elif "item_id" in event:
            by_index.setdefault(event["output_index"], set()).add(event["item_id"])
    assert sorted(by_index) == [0, 1]
    (reasoning_id,), (message_id,) = by_index[0], by_index[1]
    assert reasoning_id.startswith("rs_") and message_id.startswith("msg_")


async def test_the_final_response_holds_the_items_and_usage():
    final = (await stream(THINK_THEN_TEXT))[-1]["response"]
    assert final["status"] == "completed" and final["incomplete_details"] is None
    reasoning, message = final["output"]
    assert reasoning["type"] == "reasoning" and reasoning["summary"] == []
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Hmm."}]
    assert message["content"][0]["text"] == "4" and message["status"] == "completed"
    assert final["usage"] == {
        "input_tokens": 5,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 8,
    }


async def test_tool_calls_are_function_call_items():
    out = await stream(TWO_CALLS)
    added = [e["item"] for e in out if e["type"] == "response.output_item.added"]
    assert [(i["name"], i["arguments"], i["status"]) for i in added] == [
        ("get_weather", "", "in_progress"),
        ("get_time", "", "in_progress"),
    ]
    done = [e for e in out if e["type"] == "response.function_call_arguments.done"]
    assert [d["arguments"] for d in done] == ['{"city": "Paris"}', "{}"]
    calls = out[-1]["response"]["output"]
    assert [(c["call_id"], c["name"], c["status"]) for c in calls] == [
        ("call_a", "get_weather", "completed"),
        ("call_b", "get_time", "completed"),
    ]
    assert all(c["id"].startswith("fc_") for c in calls)


async def test_a_cut_answer_is_incomplete_with_the_reason():
    final = (await stream(CUT))[-1]["response"]
    assert final["status"] == "incomplete" and final["completed_at"] is None
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete"


async def test_a_completed_response_says_when():
    final = (await stream(TEXT))[-1]["response"]
    assert final["status"] == "completed"
    assert final["completed_at"] >= final["created_at"]


@pytest.mark.parametrize(
    ("arguments", "status"), [('{"city": "Paris"}', "completed"), ('{"ci', "incomplete")]
)
async def test_a_call_is_incomplete_only_when_its_arguments_are_cut(arguments, status):
    cut_after_call = [
        ev.Started(0),
        ev.ToolCallDelta(0, 0, "call_a", "get_weather", ""),
        ev.ToolCallDelta(0, 0, None, None, arguments),
        ev.Finished(0, "length"),
        ev.Usage(9, 12),
    ]
    out = await stream(cut_after_call)
    final = out[-1]["response"]
    assert final["status"] == "incomplete"
    assert final["output"][0]["status"] == status
    done = [e for e in out if e["type"] == "response.output_item.done"]
    assert done[0]["item"]["status"] == status


async def test_a_failure_mid_stream_is_an_error_event_then_response_failed():
    closed = asyncio.Event()

    async def failing() -> AsyncIterator[ev.Event]:
        try:
            yield ev.Started(0)
            yield ev.TextDelta(0, "a")
            raise UpstreamError("went away")
        finally:
            closed.set()

    template = response_template(TEMPLATE)
    out = [e.model_dump(mode="json") async for e in response_events(failing(), template)]
    error, failed = out[-2:]
    assert error["type"] == "error"
    assert (error["code"], error["message"], error["param"]) == (
        "upstream_error",
        "went away",
        None,
    )
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "server_error", "message": "went away"}
    assert failed["response"]["output"][0]["status"] == "incomplete"
    for event in out:
        SDK_EVENT.validate_python(event)
    assert closed.is_set()


async def test_a_bug_mid_stream_fails_with_a_generic_message():
    out = await stream([ev.Started(0), ev.TextDelta(0, "a")])  # ends without usage
    assert out[-1]["type"] == "response.failed"
    assert out[-2]["code"] == "internal_error"


@pytest.mark.parametrize("events", [TEXT, THINK_THEN_TEXT, TWO_CALLS, CUT])
async def test_the_whole_answer_is_the_streams_final_response(events):
    template = response_template(TEMPLATE)
    whole = await collect_response(scripted(events), template.model_copy(deep=True))
    final = (await stream(events))[-1]["response"]

    def strip(response: dict[str, Any]) -> dict[str, Any]:
        return {
            **response,
            "id": "",
            "output": [{**item, "id": ""} for item in response["output"]],
        }

    assert strip(whole.model_dump(mode="json")) == strip(final)


async def test_events_after_the_end_are_ignored():
    builder = ResponseEventBuilder(response_template(TEMPLATE))
    for event in TEXT:
        builder.feed(event)
    assert builder.done and builder.feed(ev.TextDelta(0, "x")) == []


# -- over HTTP -----------------------------------------------------------------------------

BODY = {"model": "alpha", "input": "hi", "stream": True}


def parse_events(text: str) -> list[dict[str, Any]]:
    """SSE frames -> events; each frame's ``event:`` line names the ``type`` of its data."""
    frames = [f for f in text.split("\n\n") if f]
    out = []
    for frame in frames:
        name, data = frame.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), frame
        event = json.loads(data.removeprefix("data: "))
        assert event["type"] == name.removeprefix("event: ")
        out.append(event)
    return out


async def test_the_stream_is_named_events_without_done(app_client):
    async with app_client() as (client, _):
        reply = await client.post("/v1/responses", json=BODY)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers["x-llmgate-model"] == "alpha"
    assert "[DONE]" not in reply.text
    events = parse_events(reply.text)
    assert [e["type"] for e in events][:2] == START
    assert events[-1]["type"] == "response.completed"
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == "Hello, world!"
    assert events[-1]["response"]["model"] == "alpha"


async def test_the_response_model_is_the_name_the_client_sent(app_client):
    async with app_client() as (client, _):
        reply = await client.post("/v1/responses", json={"model": "a", "input": "hi"})
    assert reply.status_code == 200
    body = reply.json()
    assert body["model"] == "a" and body["object"] == "response"
    assert body["output"][0]["content"][0]["text"] == "Hello, world!"
    SDKResponse.model_validate(body)


async def test_max_output_tokens_reaches_the_backend_and_cuts(app_client):
    async with app_client() as (client, fakes):
        reply = await client.post(
            "/v1/responses", json={"model": "alpha", "input": "hi", "max_output_tokens": 2}
        )
    assert fakes["alpha"].requests[0].max_tokens == 2
    assert reply.json()["status"] == "incomplete"
    assert reply.json()["incomplete_details"] == {"reason": "max_output_tokens"}


async def test_an_error_before_the_first_event_keeps_its_status(app_client):
    scripts = {"alpha": FakeScript(fail_before_first=QueueFullError("busy", retry_after=2))}
    async with app_client(scripts=scripts) as (client, _):
        reply = await client.post("/v1/responses", json=BODY)
    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "2"
    assert reply.json()["error"]["code"] == "queue_full"


async def test_an_error_after_the_headers_is_error_then_failed(app_client):
    scripts = {"alpha": FakeScript(fail_after_tokens=2, fail_with=UpstreamError("went away"))}
    async with app_client(scripts=scripts) as (client, fakes):
        reply = await client.post("/v1/responses", json=BODY)
    assert reply.status_code == 200
    events = parse_events(reply.text)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert fakes["alpha"].streams_closed == 1


async def test_a_non_streaming_failure_is_its_status(app_client):
    scripts = {"alpha": FakeScript(fail_after_tokens=2, fail_with=UpstreamError("went away"))}
    async with app_client(scripts=scripts) as (client, _):
        reply = await client.post("/v1/responses", json={"model": "alpha", "input": "hi"})
    assert reply.status_code == 502
    assert reply.json()["error"]["code"] == "upstream_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"input": [{"type": "computer_call_output"}]}, "input[0]"),
        ({"tools": [{"type": "file_search"}]}, "tools[0].type"),
    ],
)
async def test_refusals_are_400s_in_the_envelope(app_client, body, param):
    async with app_client() as (client, fakes):
        reply = await client.post("/v1/responses", json={"model": "alpha", "input": "hi", **body})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == param
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert fakes["alpha"].requests == []


async def test_an_unknown_model_is_still_a_404(app_client):
    async with app_client() as (client, _):
        reply = await client.post("/v1/responses", json={"model": "nope", "input": "hi"})
    assert reply.status_code == 404 and reply.json()["error"]["param"] == "model"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/responses/resp_1"),
        ("DELETE", "/v1/responses/resp_1"),
        ("GET", "/v1/responses/resp_1/input_items"),
        ("POST", "/v1/responses/resp_1/cancel"),
    ],
)
async def test_stored_responses_are_404s_that_say_why(app_client, method, path):
    async with app_client() as (client, _):
        reply = await client.request(method, path)
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert error["param"] == "response_id" and "stateless" in error["message"]


async def test_a_client_that_goes_away_stops_the_generation():
    fake, at_return, _ = await call_then_disconnect(BODY, path="/v1/responses")
    assert 0 < at_return < 100
    assert fake.tokens_generated == at_return
    assert fake.streams_closed == 1


async def test_prompt_tokens_read_from_a_cache_are_reported():
    final = (await stream([*THINK_THEN_TEXT[:-1], ev.Usage(5, 3, cached_tokens=4)]))[-1]
    assert final["response"]["usage"]["input_tokens"] == 5
    assert final["response"]["usage"]["input_tokens_details"]["cached_tokens"] == 4
