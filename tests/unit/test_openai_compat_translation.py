from __future__ import annotations

import json

import pytest

from backends.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    RateLimitError,
    UpstreamError,
)
from backends.events import Finished, ReasoningDelta, Started, TextDelta, ToolCallDelta, Usage
from backends.model_types import ModelCapabilities
from backends.openai_types import ChatCompletionRequest
from backends.upstream.capabilities import openai_capabilities
from backends.upstream.openai_compat import (
    ModelRewriter,
    OpenAICompatBackend,
    add_reasoning_twins,
    openai_error,
    sse_payloads,
    to_upstream_body,
    with_reasoning_twins,
)
from backends.upstream.openai_generate import ChunkEvents
from backends.upstream.settings import OpenAICompatSettings
from tests.fake_upstreams import closed_port


def test_body_keeps_only_what_the_client_sent_plus_vendor_extras():
    request = ChatCompletionRequest(
        model="mine",
        messages=[{"role": "user", "content": "x"}],
        temperature=0.2,
        repetition_penalty=1.1,
        chat_template_kwargs={"enable_thinking": False},
    )
    assert to_upstream_body(request, "org/remote") == {
        "model": "org/remote",
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 0.2,
        "repetition_penalty": 1.1,
        "chat_template_kwargs": {"enable_thinking": False},
    }


def envelope(message: str, code: str | None = None, param: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": "x", "param": param, "code": code}}
    ).encode()


@pytest.mark.parametrize(
    ("status", "body", "error_type", "status_out"),
    [
        (400, envelope("temperature too high", param="temperature"), InvalidRequestError, 400),
        (
            400,
            envelope("too long", code="context_length_exceeded"),
            ContextLengthExceededError,
            400,
        ),
        (404, envelope("no such model"), ModelNotFoundError, 404),
        (401, envelope("bad key"), UpstreamError, 502),
        (403, envelope("forbidden"), UpstreamError, 502),
        (429, envelope("slow down"), RateLimitError, 429),
        (500, b"Internal Server Error", UpstreamError, 502),
        (503, envelope("loading"), BackendUnavailableError, 503),
    ],
)
def test_upstream_status_mapping(status, body, error_type, status_out):
    error = openai_error(status, body, "mine")
    assert type(error) is error_type
    assert error.status == status_out


def test_400_keeps_the_upstream_message_and_param():
    error = openai_error(400, envelope("temperature too high", param="temperature"))
    assert error.message == "temperature too high"
    assert error.param == "temperature"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"id":"1","model":"org/remote","choices":[]}',
        b'{"id": "1", "model": "org/remote", "choices": []}',
    ],
)
def test_model_rewriter_rewrites_compact_and_spaced_json(payload):
    out = json.loads(ModelRewriter("org/remote", "mine")(payload))
    assert out == {"id": "1", "model": "mine", "choices": []}


def test_model_rewriter_fast_path_is_byte_exact_elsewhere():
    payload = b'{"id":"1","model":"r","choices":[{"delta":{"content":"\\u00e9"}}]}'
    assert ModelRewriter("r", "m")(payload) == payload.replace(b'"model":"r"', b'"model":"m"')


def test_body_passes_tools_tool_choice_and_response_format_as_sent():
    tools = [
        {
            "type": "function",
            "function": {
                "name": "f",
                "description": "d",
                "parameters": {"type": "object", "properties": {}},
                "strict": True,
            },
        }
    ]
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "A", "schema": {"type": "object"}, "strict": True},
    }
    fields = {
        "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": False,
        "response_format": fmt,
    }
    request = ChatCompletionRequest(
        model="m", messages=[{"role": "user", "content": "x"}], **fields
    )
    body = to_upstream_body(request, "r")
    assert {key: body[key] for key in fields} == fields


# -- reasoning under both names ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        ({"reasoning_content": "hm"}, {"reasoning_content": "hm", "reasoning": "hm"}),
        ({"reasoning": "hm"}, {"reasoning": "hm", "reasoning_content": "hm"}),
        (
            {"reasoning": "hm", "reasoning_content": None},
            {"reasoning": "hm", "reasoning_content": "hm"},
        ),
    ],
)
def test_a_relayed_chunk_with_thinking_gets_it_under_both_names(delta, expected):
    chunk = {"id": "1", "model": "r", "choices": [{"index": 0, "delta": delta}]}
    out = json.loads(with_reasoning_twins(json.dumps(chunk).encode()))
    assert out["choices"][0]["delta"] == expected


@pytest.mark.parametrize(
    "payload",
    [
        b'{"id":"1","model":"r","choices":[{"index":0,"delta":{"content":"Hi"}}]}',
        # the word in the content is not a field: nothing to add, the bytes stay as they were
        b'{"id":"1", "choices":[{"index":0,"delta":{"content":"\\"reasoning\\": x"}}]}',
        b'{"id":"1", "choices":[{"delta":{"reasoning":"a", "reasoning_content":"a"}}]}',
    ],
)
def test_chunks_with_nothing_to_add_stay_byte_for_byte(payload):
    assert with_reasoning_twins(payload) is payload


def test_a_relayed_message_gets_its_thinking_under_both_names():
    reply = {
        "choices": [
            {"index": 0, "message": {"content": "4", "reasoning": "2+2"}},
            {"index": 1, "message": {"content": "4", "reasoning_content": "two and two"}},
            {"index": 2, "message": {"content": "4"}},
        ]
    }
    assert add_reasoning_twins(reply, "message")
    messages = [c["message"] for c in reply["choices"]]
    assert messages[0]["reasoning_content"] == "2+2"
    assert messages[1]["reasoning"] == "two and two"
    assert messages[2] == {"content": "4"}


@pytest.mark.parametrize("name", ["reasoning", "reasoning_content"])
def test_the_generate_path_reads_thinking_under_either_name(name):
    chunks = ChunkEvents()
    payload = {"choices": [{"index": 0, "delta": {name: "hmm", "content": "4"}}]}
    assert chunks.feed(json.dumps(payload).encode()) == [
        Started(0),
        ReasoningDelta(0, "hmm"),
        TextDelta(0, "4"),
    ]


def test_the_generate_path_reads_streamed_tool_calls():
    chunks = ChunkEvents()
    first = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
    rest = {"index": 0, "function": {"arguments": '{"a": 1}'}}
    events = []
    for call in (first, rest):
        payload = {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}
        events += chunks.feed(json.dumps(payload).encode())
    finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
    events += chunks.feed(json.dumps(finish).encode())
    assert events == [
        Started(0),
        ToolCallDelta(0, 0, "c1", "f", ""),
        ToolCallDelta(0, 0, None, None, '{"a": 1}'),
        Finished(0, "tool_calls"),
    ]


# -- capabilities ---------------------------------------------------------------------------------


def listing(**entry: object) -> dict:
    return {"object": "list", "data": [{"id": "other", "max_model_len": 1}, {"id": "r", **entry}]}


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        (listing(max_model_len=32768), 32768),
        (listing(context_length=8192), 8192),
        (listing(context_window=4096), 4096),
        (listing(), None),
        (listing(max_model_len="big"), None),
    ],
)
def test_capabilities_from_the_models_entry(models, expected):
    assert openai_capabilities(models, "r") == ModelCapabilities(
        tools="passthrough", json_schema=True, reasoning=False, context_length=expected
    )


@pytest.mark.parametrize("models", [{"data": [{"id": "other"}]}, {"detail": "x"}, [], None])
def test_no_capabilities_when_the_listing_has_no_entry_for_the_model(models):
    assert openai_capabilities(models, "r") is None


def test_an_upstream_llmgate_keeps_its_own_capabilities_with_tools_passed_through():
    reported = {"tools": "native", "json_schema": True, "reasoning": True, "context_length": 99}
    result = openai_capabilities(listing(capabilities=reported), "r")
    assert result == ModelCapabilities(
        tools="passthrough", json_schema=True, reasoning=True, context_length=99
    )


@pytest.mark.anyio
async def test_an_unreachable_upstream_has_no_capabilities_and_does_not_raise():
    settings = OpenAICompatSettings(
        name="m", backend="openai", base_url=f"http://127.0.0.1:{closed_port()}/v1"
    )
    backend = OpenAICompatBackend(settings)
    try:
        assert await backend.capabilities() is None
    finally:
        await backend.aclose()


@pytest.mark.anyio
async def test_an_upstream_error_status_gives_no_capabilities():
    backend = OpenAICompatBackend(
        OpenAICompatSettings(name="m", backend="openai", base_url="http://u/v1")
    )

    async def refuse(*args, **kwargs):
        raise openai_error(401, envelope("bad key"), "m")

    backend.client.fetch_json = refuse  # type: ignore[method-assign]
    assert await backend.capabilities() is None


# -- raw prompts on the generate path ---------------------------------------------------------


def test_a_raw_prompt_becomes_a_completions_body():
    from backends.requests import GenerationRequest, Sampling
    from backends.upstream.openai_generate import upstream_call

    request = GenerationRequest(
        model="m",
        prompt="Once",
        max_tokens=3,
        sampling=Sampling(temperature=0.1, top_k=4),
        logprobs=True,
        top_logprobs=2,
        extras={"ignore_eos": True},
    )
    endpoint, body = upstream_call(request, "org/r")
    assert endpoint == "/completions"
    assert body == {
        "ignore_eos": True,
        "model": "org/r",
        "prompt": "Once",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 3,
        "temperature": 0.1,
        "top_k": 4,
        "logprobs": 2,
    }


def test_a_continued_final_message_asks_the_upstream_in_vllms_terms():
    from backends.requests import GenerationRequest, Message, TextPart
    from backends.upstream.openai_generate import upstream_call

    messages = (Message("user", (TextPart("hi"),)), Message("assistant", (TextPart("Hel"),)))
    request = GenerationRequest(model="m", messages=messages, continue_final=True)
    endpoint, body = upstream_call(request, "r")
    assert endpoint == "/chat/completions"
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    _, plain = upstream_call(GenerationRequest(model="m", messages=messages), "r")
    assert "continue_final_message" not in plain and "add_generation_prompt" not in plain


def test_completion_chunks_and_their_legacy_logprobs_become_events():
    chunks = ChunkEvents()
    payload = {
        "choices": [
            {
                "index": 0,
                "text": " Paris",
                "logprobs": {
                    "tokens": [" Paris"],
                    "token_logprobs": [-0.25],
                    "top_logprobs": [{" Paris": -0.25, " Lyon": -2.0}],
                    "text_offset": [0],
                },
                "finish_reason": None,
            }
        ]
    }
    started, text = chunks.feed(json.dumps(payload).encode())
    assert started == Started(0)
    assert isinstance(text, TextDelta) and text.text == " Paris"
    [lp] = text.logprobs
    assert (lp.token, lp.logprob) == (" Paris", -0.25)
    assert [(t.token, t.logprob) for t in lp.top] == [(" Paris", -0.25), (" Lyon", -2.0)]


@pytest.mark.parametrize(
    ("usage", "cached"),
    [
        (
            {
                "prompt_tokens": 9,
                "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 6},
            },
            6,
        ),
        ({"prompt_tokens": 9, "completion_tokens": 2}, None),  # the upstream does not say
        ({"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": None}, None),
        (
            {
                "prompt_tokens": 9,
                "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": "6"},
            },
            None,
        ),
    ],
)
def test_the_generate_path_reads_the_upstreams_cached_prompt_tokens(usage, cached):
    chunks = ChunkEvents()
    chunks.feed(json.dumps({"choices": [], "usage": usage}).encode())
    assert chunks.end()[-1] == Usage(9, 2, cached)


# -- upstream answers that are not what OpenAI sends (a black-box review found each a 500 or
# -- a success the client then crashed on) ----------------------------------------------------


def test_a_stream_chunk_that_is_not_json_is_an_upstream_error():
    rewrite = ModelRewriter("r", "m")
    assert json.loads(rewrite(b'{"model": "r", "choices": []}'))["model"] == "m"
    with pytest.raises(UpstreamError, match="not JSON"):
        rewrite(b"{not json")


@pytest.mark.anyio
@pytest.mark.parametrize("endpoint", ["/chat/completions", "/completions", "/embeddings"])
async def test_a_whole_answer_without_its_list_is_an_upstream_error(endpoint):
    from backends.upstream.client import JsonReply
    from backends.upstream.replicas import Replica

    backend = OpenAICompatBackend(
        OpenAICompatSettings(name="m", backend="openai", base_url="http://u/v1")
    )

    async def answer(*args, **kwargs):
        return JsonReply({"hello": "world"}, b'{"hello": "world"}', Replica("http://u/v1"))

    async def loaded() -> None:
        return None

    backend.client.request_json = answer  # type: ignore[method-assign]
    backend.load = loaded  # type: ignore[method-assign]
    request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(UpstreamError, match=r"no '(choices|data)' list"):
        await backend.relay(endpoint, request)


async def _payloads(body: bytes) -> list[bytes]:
    async def lines():
        for line in body.split(b"\n"):
            yield line

    return [payload async for payload in sse_payloads(lines())]


@pytest.mark.anyio
async def test_sse_events_are_read_as_the_spec_reads_them():
    """An event ends at a blank line; its data lines are joined with a line feed; comments,
    event names and ids are skipped; data the body ends on is an event too."""
    body = (
        b': ping\n\ndata: {"a": 1}\n\nevent: chunk\nid: 7\ndata: {"b":\ndata:  [1, 2]}\n\n'
        b"retry: 100\n\ndata:[DONE]"
    )
    payloads = await _payloads(body)
    assert payloads == [b'{"a": 1}', b'{"b":\n [1, 2]}', b"[DONE]"]
    assert [json.loads(p) for p in payloads[:2]] == [{"a": 1}, {"b": [1, 2]}]


@pytest.mark.anyio
async def test_an_error_event_split_over_data_lines_raises():
    body = b'data: {"choices": []}\n\ndata: {"error":\ndata: {"message": "CUDA OOM"}}\n\n'
    with pytest.raises(UpstreamError, match="CUDA OOM"):
        await _payloads(body)
