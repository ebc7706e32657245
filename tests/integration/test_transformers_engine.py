"""The transformers engine over real HTTP: batching proved by the engine's forward-pass count,
batched output equal to solo output, cancellation that frees the slot, the request knobs, and
the errors (context, unsupported fields, full queue)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.integration.conftest import RunningServer, wait_until

pytestmark = pytest.mark.integration

TINY_NO_EOS = {"2": -100}  # <|im_end|> of the tiny tokenizer: keep generating
SMOL_NO_EOS = {"2": -100, "0": -100}


def body(model: str = "tiny-hf", content: str = "hello there", **extra: object) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 16,
        "logit_bias": TINY_NO_EOS,
        **extra,
    }


def complete(server: RunningServer, payload: dict) -> dict:
    reply = httpx.post(f"{server.v1}/chat/completions", json=payload, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()


async def complete_many(server: RunningServer, payloads: list[dict]) -> list[dict]:
    async with httpx.AsyncClient(base_url=server.v1, timeout=120) as client:
        posts = (client.post("/chat/completions", json=p) for p in payloads)
        replies = await asyncio.gather(*posts)
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    return [r.json() for r in replies]


def text(reply: dict, index: int = 0) -> str:
    return reply["choices"][index]["message"]["content"]


def test_concurrent_requests_share_forward_passes(hf_server):
    stats = hf_server.backend("tiny-hf").stats
    passes, steps, tokens = stats.forward_passes, stats.decode_steps, stats.tokens_generated
    payloads = [body(content=f"request {i}", max_tokens=24) for i in range(8)]
    replies = asyncio.run(complete_many(hf_server, payloads))
    generated = sum(r["usage"]["completion_tokens"] for r in replies)
    assert generated == 8 * 24 == stats.tokens_generated - tokens
    # alone, each request needs 23 decode steps (its first token comes from the prompt's pass):
    # 184 for eight one after another; batched, they share steps
    assert stats.decode_steps - steps < generated / 3
    assert stats.forward_passes - passes < generated / 2  # prompt slices included
    assert stats.peak_rows >= 4


def test_prompts_are_read_in_prefill_chunks(hf_server):
    stats = hf_server.backend("tiny-hf").stats
    passes, read = stats.forward_passes, stats.prefill_tokens
    reply = complete(
        hf_server, body(content="a prompt long enough for several slices", max_tokens=5)
    )
    prompt = reply["usage"]["prompt_tokens"]
    assert stats.prefill_tokens - read == prompt
    # tiny-hf reads 8 prompt tokens per pass, then the first token comes from the last slice
    assert stats.forward_passes - passes == -(-prompt // 8) + 4


def test_batched_output_equals_solo_output(hf_server):
    prompts = [f"prompt number {i} " + "x" * (i * 7) for i in range(6)]
    solo = [text(complete(hf_server, body(content=p))) for p in prompts]
    batched = asyncio.run(complete_many(hf_server, [body(content=p) for p in prompts]))
    assert [text(r) for r in batched] == solo


def test_usage_counts_are_exact(hf_server):
    tokenizer = hf_server.backend("tiny-hf").loaded_model.tokenizer
    messages = [{"role": "user", "content": "count my tokens please"}]
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    reply = complete(hf_server, body(content="count my tokens please", max_tokens=9))
    cached = reply["usage"].pop("prompt_tokens_details")["cached_tokens"]
    assert 0 <= cached < len(prompt)  # what an earlier prompt's cached prefix gave, if any
    assert reply["usage"] == {
        "prompt_tokens": len(prompt),
        "completion_tokens": 9,
        "total_tokens": len(prompt) + 9,
    }
    assert reply["choices"][0]["finish_reason"] == "length"


def test_stream_frames_come_in_contract_order(hf_server):
    payload = body(stream=True, stream_options={"include_usage": True}, max_tokens=6)
    with httpx.stream("POST", f"{hf_server.v1}/chat/completions", json=payload) as reply:
        frames = [line[6:] for line in reply.iter_lines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    assert len({c["id"] for c in chunks}) == 1


def test_stop_string_ends_the_answer_before_it(hf_server):
    full = text(complete(hf_server, body(max_tokens=24)))
    cut = full[len(full) // 2 :][:3]
    reply = complete(hf_server, body(max_tokens=24, stop=[cut]))
    assert text(reply) == full[: full.index(cut)]
    assert reply["choices"][0]["finish_reason"] == "stop"


def test_same_seed_same_text_and_seeds_differ(hf_server):
    sampled = body(temperature=1.0, seed=1234, max_tokens=20)
    first, second = text(complete(hf_server, sampled)), text(complete(hf_server, sampled))
    assert first == second
    others = {text(complete(hf_server, {**sampled, "seed": s})) for s in range(5)}
    assert len(others) > 1


def test_n_choices_and_logprobs(hf_server):
    reply = complete(
        hf_server, body(n=3, temperature=1.0, seed=7, max_tokens=5, logprobs=True, top_logprobs=2)
    )
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2]
    assert reply["usage"]["completion_tokens"] == 15
    for choice in reply["choices"]:
        content = choice["logprobs"]["content"]
        assert len(content) == 5
        assert all(len(t["top_logprobs"]) == 2 and t["logprob"] <= 0 for t in content)


def test_greedy_logprob_is_the_top_alternative(hf_server):
    reply = complete(hf_server, body(max_tokens=4, logprobs=True, top_logprobs=1))
    for token in reply["choices"][0]["logprobs"]["content"]:
        best = token["top_logprobs"][0]
        assert token["logprob"] == pytest.approx(best["logprob"])


def test_penalties_change_the_output(hf_server):
    plain = text(complete(hf_server, body(max_tokens=24)))
    penalised = text(complete(hf_server, body(max_tokens=24, frequency_penalty=2.0)))
    assert plain != penalised


@pytest.mark.parametrize(
    ("extra", "status", "code", "param"),
    [
        ({"content": "word " * 400}, 400, "context_length_exceeded", "messages"),
        ({"max_tokens": 250}, 400, "context_length_exceeded", "messages"),
        (
            {
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            },
            400,
            "invalid_request",
            "tool_choice",
        ),
        (
            {"tool_choice": "required"},
            400,
            "invalid_request",
            "tool_choice",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"propertyNames": {"pattern": "a"}}},
                }
            },
            400,
            "invalid_request",
            "response_format",
        ),
        ({"n": 9}, 400, "unsupported_parameter", "n"),
        ({"logit_bias": {"99999": 5}}, 400, "invalid_request", "logit_bias"),
    ],
)
def test_bad_requests_get_clear_errors(hf_server, extra, status, code, param):
    payload = body(**{k: v for k, v in extra.items() if k != "content"})
    if "content" in extra:
        payload["messages"][0]["content"] = extra["content"]
    reply = httpx.post(f"{hf_server.v1}/chat/completions", json=payload, timeout=60)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == code
    assert param is None or error["param"] == param


def test_image_content_is_refused_by_name(hf_server):
    payload = body()
    payload["messages"][0]["content"] = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    ]
    reply = httpx.post(f"{hf_server.v1}/chat/completions", json=payload, timeout=60)
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "messages[0].content"


def test_disconnect_frees_the_slot_and_spares_the_others(hf_server):
    stats = hf_server.backend("smollm2-hf").stats
    cancelled = stats.requests_cancelled
    long = body("smollm2-hf", "Write a long essay about the sea.", max_tokens=600)
    long["logit_bias"] = SMOL_NO_EOS
    survivor: dict = {}

    def run_survivor() -> None:
        survivor.update(complete(hf_server, {**long, "max_tokens": 40}))

    import threading

    other = threading.Thread(target=run_survivor)
    with httpx.stream(
        "POST", f"{hf_server.v1}/chat/completions", json={**long, "stream": True}, timeout=60
    ) as reply:
        for n, _ in enumerate(reply.iter_lines()):
            if n == 2:
                other.start()
            if n >= 20:
                break
        at_close = stats.tokens_generated
    assert wait_until(lambda: stats.requests_cancelled == cancelled + 1, 10), stats
    other.join(60)
    assert survivor["usage"]["completion_tokens"] == 40  # the other stream was not disturbed
    assert wait_until(lambda: stats.rows == 0, 10)  # the slot is free
    # stopped within a step or two: the survivor's 40 tokens and a few of ours at most
    assert stats.tokens_generated - at_close <= 40 + 4


def test_full_queue_is_429_at_once(hf_server):
    long = body("smollm2-hf-q", "Write a long essay about the sea.", max_tokens=600, stream=True)
    long["logit_bias"] = SMOL_NO_EOS
    stats = hf_server.backend("smollm2-hf-q").stats
    with httpx.stream("POST", f"{hf_server.v1}/chat/completions", json=long, timeout=60) as held:
        lines = held.iter_lines()  # keep a reference: a discarded iterator closes the stream
        next(lines)
        assert wait_until(lambda: stats.rows == 1, 10)
        started = time.monotonic()
        reply = httpx.post(f"{hf_server.v1}/chat/completions", json={**long, "stream": False})
        assert time.monotonic() - started < 2
    assert reply.status_code == 429
    assert reply.json()["error"]["code"] == "queue_full"
    assert "retry-after" in reply.headers


def test_models_say_where_the_weights_are_and_how_big(hf_server):
    cards = httpx.get(f"{hf_server.v1}/models", timeout=30).json()["data"]
    placement = {card["id"]: card.get("placement") for card in cards}["tiny-hf"]
    assert placement is not None and placement["device"] == "cpu"
    assert placement["weights_bytes"] > 0 and placement["gpu_bytes"] == 0
