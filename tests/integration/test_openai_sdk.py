"""The official openai SDK (sync, async, streaming) against the real server and engines."""

from __future__ import annotations

import asyncio

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.integration.conftest import NO_EOS

pytestmark = pytest.mark.integration

CAPITAL = [{"role": "user", "content": "Name the capital city of France in one word."}]


@pytest.fixture
def client(server):
    with OpenAI(base_url=server.v1, api_key="unused", max_retries=0) as c:
        yield c


def test_smollm2_answers_paris(client):
    reply = client.chat.completions.create(model="smollm2", messages=CAPITAL, temperature=0)
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "smollm2"
    u = reply.usage
    assert u.prompt_tokens > 10 and u.completion_tokens > 0
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_alias_default_serves_smollm2_and_is_echoed(client):
    reply = client.chat.completions.create(model="default", messages=CAPITAL, temperature=0)
    assert reply.model == "default"
    assert "Paris" in reply.choices[0].message.content


def test_stream_with_usage_counts_exact_tokens(client):
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "go"}],
        stream=True,
        max_tokens=12,
        logit_bias=NO_EOS,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert chunks[-2].choices[0].finish_reason == "length"
    assert len({c.id for c in chunks}) == 1


def test_max_completion_tokens_wins(client):
    reply = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "go"}],
        max_tokens=50,
        max_completion_tokens=5,
        logit_bias=NO_EOS,
    )
    assert reply.usage.completion_tokens == 5
    assert reply.choices[0].finish_reason == "length"


def test_async_client_stream_and_create(server):
    async def run():
        async with AsyncOpenAI(base_url=server.v1, api_key="x", max_retries=0) as client:
            reply = await client.chat.completions.create(
                model="smollm2", messages=CAPITAL, temperature=0
            )
            stream = await client.chat.completions.create(
                model="smollm2", messages=CAPITAL, temperature=0, stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return reply.choices[0].message.content, text

    whole, streamed = asyncio.run(run())
    assert whole == streamed  # greedy: streaming and not give the same text
    assert "Paris" in streamed


def test_three_turn_chat_resending_history(client):
    messages = [{"role": "system", "content": "You are a concise assistant."}]
    prompts = [
        "Hi! My name is Ada.",
        "What is 2 plus 2?",
        "Name the capital city of France in one word.",
    ]
    prompt_tokens = []
    for prompt in prompts:
        messages.append({"role": "user", "content": prompt})
        reply = client.chat.completions.create(
            model="smollm2", messages=messages, temperature=0, max_tokens=64
        )
        answer = reply.choices[0].message.content
        assert answer.strip()
        messages.append({"role": "assistant", "content": answer})
        prompt_tokens.append(reply.usage.prompt_tokens)
    assert prompt_tokens == sorted(prompt_tokens) and len(set(prompt_tokens)) == 3
    assert "Paris" in messages[-1]["content"]


def test_n_choices_are_generated(client):
    reply = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "go"}],
        n=3,
        max_tokens=4,
        logit_bias=NO_EOS,
        temperature=1.0,
        seed=1,
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert reply.usage.completion_tokens == 12


def test_eight_concurrent_streams_all_complete(server):
    async def one(client: AsyncOpenAI, i: int) -> tuple[int, int, str | None]:
        stream = await client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": f"stream {i}"}],
            stream=True,
            max_tokens=32,
            logit_bias=NO_EOS,
            stream_options={"include_usage": True},
        )
        pieces, usage, finish = 0, 0, None
        async for chunk in stream:
            if chunk.usage:
                usage = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].delta.content:
                pieces += 1
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        return pieces, usage, finish

    async def run():
        async with AsyncOpenAI(base_url=server.v1, api_key="x", max_retries=0) as client:
            return await asyncio.gather(*(one(client, i) for i in range(8)))

    results = asyncio.run(run())
    assert all(u == 32 and f == "length" and p > 0 for p, u, f in results), results


def test_sdk_raises_typed_errors(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=CAPITAL)
    assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="tiny", messages=CAPITAL, max_tokens=100_000)
    assert bad.value.body["code"] == "context_length_exceeded"


def test_models_list_via_sdk(client):
    ids = [m.id for m in client.models.list()]
    assert ids[:2] == ["smollm2", "tiny"]
    assert client.models.retrieve("default").id == "smollm2"


def test_vllms_continue_final_message_continues_the_assistants_words(client):
    messages = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is"},
    ]
    continued = client.chat.completions.create(
        model="smollm2",
        messages=messages,
        temperature=0,
        max_tokens=8,
        extra_body={"continue_final_message": True, "add_generation_prompt": False},
    )
    assert continued.choices[0].message.content.startswith(" Paris")
    with pytest.raises(openai.BadRequestError, match="final assistant message"):
        client.chat.completions.create(
            model="smollm2",
            messages=messages[:1],
            max_tokens=8,
            extra_body={"continue_final_message": True},
        )
