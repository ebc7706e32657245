"""The llama.cpp engine's continuous batching and prefix reuse, on the real SmolLM2 weights over
HTTP: concurrent requests decode together and each gets exactly what it gets alone; a chat's
next turn evaluates only its new tokens."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

MODEL = "smollm2"  # 4 sequences at once (the default on this machine)
QUESTIONS = [
    "Tell me about the sea.",
    "What is the capital of France?",
    "Write a poem about cats.",
    "Explain gravity briefly.",
]


def ask(base_url: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()


def greedy(question: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": 24,
        **extra,
    }


def together(base_url: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send ``bodies`` at once; their answers, in order."""
    results: list[dict[str, Any] | None] = [None] * len(bodies)
    gate = threading.Barrier(len(bodies))

    def run(i: int) -> None:
        gate.wait()
        results[i] = ask(base_url, bodies[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def content(answer: dict[str, Any], choice: int = 0) -> str:
    return answer["choices"][choice]["message"]["content"]


def peak_while(stats: Any, work: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``work`` and sample how many requests decoded at once meanwhile."""
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, stats.batch_size)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = work()
    finally:
        done.set()
        watcher.join()
    return result, peak


def test_greedy_output_is_the_same_alone_or_batched(server):
    bodies = [greedy(q) for q in QUESTIONS]
    alone = [content(ask(server.base_url, b)) for b in bodies]
    stats = server.backend(MODEL).stats
    batched, peak = peak_while(stats, lambda: together(server.base_url, bodies))
    assert [content(a) for a in batched] == alone
    assert peak >= 2  # they really shared decode steps


def test_every_feature_works_per_sequence_in_a_batch(server):
    """Stop strings, logprobs, n, a JSON constraint and logit_bias, decoding side by side."""
    count = "Count from 1 to 10, one number per line."
    bodies = [
        greedy(count, stop=["5"], max_tokens=60),
        greedy(QUESTIONS[0], logprobs=True, top_logprobs=2, max_tokens=8),
        greedy(QUESTIONS[1], n=2, max_tokens=8),
        greedy("Give me a JSON object.", response_format={"type": "json_object"}, max_tokens=30),
        greedy(QUESTIONS[2], logit_bias={"0": -100, "2": -100}, max_tokens=12),
    ]
    alone = [ask(server.base_url, b) for b in bodies]
    batched = together(server.base_url, bodies)
    for solo, mixed in zip(alone, batched, strict=True):
        assert [c["message"]["content"] for c in mixed["choices"]] == [
            c["message"]["content"] for c in solo["choices"]
        ]
        # the same counts; what the prefix cache gave may differ (other slots, other turns)
        cached = "prompt_tokens_details"
        assert mixed["usage"].pop(cached)["cached_tokens"] < mixed["usage"]["prompt_tokens"]
        assert solo["usage"].pop(cached)["cached_tokens"] < solo["usage"]["prompt_tokens"]
        assert mixed["usage"] == solo["usage"]
    stopped = batched[0]
    assert "4" in content(stopped) and "5" not in content(stopped)
    assert stopped["choices"][0]["finish_reason"] == "stop"
    tokens = batched[1]["choices"][0]["logprobs"]["content"]
    assert len(tokens) == 8 and all(len(t["top_logprobs"]) == 2 for t in tokens)
    assert len(batched[2]["choices"]) == 2
    assert content(batched[3]).lstrip().startswith("{")
    assert batched[4]["choices"][0]["finish_reason"] == "length"


def test_sixteen_concurrent_requests_all_complete(server):
    bodies = [greedy(QUESTIONS[i % 4], max_tokens=8, seed=i) for i in range(16)]
    answers = together(server.base_url, bodies)
    assert all(a["choices"][0]["finish_reason"] in ("stop", "length") for a in answers)
    assert all(0 < a["usage"]["completion_tokens"] <= 8 for a in answers)


def test_a_disconnect_frees_its_sequence_for_a_waiting_request(server):
    """Four long streams fill the slots; closing one lets a fifth request start at once."""
    backend = server.backend(MODEL)
    stats = backend.stats
    long = {**greedy(QUESTIONS[0], max_tokens=400), "logit_bias": {"0": -100, "2": -100}}
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        streams, lines = [], []
        for _ in range(4):
            stream = client.stream("POST", "/v1/chat/completions", json={**long, "stream": True})
            reply = stream.__enter__()
            streams.append(stream)
            lines.append(reply.iter_lines())
            next(lines[-1])
        assert wait_until(lambda: stats.batch_size == 4, 10), stats
        finished = stats.requests_finished
        fifth: dict[str, Any] = {}
        waiter = threading.Thread(
            target=lambda: fifth.update(ask(server.base_url, greedy(QUESTIONS[1], max_tokens=4)))
        )
        waiter.start()
        assert wait_until(lambda: backend.waiting == 1, 10)
        streams.pop().__exit__(None, None, None)  # one client goes away
        waiter.join(30)
        assert fifth["usage"]["completion_tokens"] == 4
        assert stats.requests_finished == finished + 1  # the other three still run
        for stream in streams:
            stream.__exit__(None, None, None)
    assert wait_until(lambda: stats.batch_size == 0, 10)


def test_a_long_prompt_does_not_stall_running_streams(server):
    """Prompts are read in slices between decode steps: a stream keeps producing tokens while
    a long prompt is being evaluated."""
    stats = server.backend(MODEL).stats
    long_prompt = " ".join(f"item{i}" for i in range(400))  # ~1600 tokens
    body = {**greedy(QUESTIONS[0], max_tokens=300), "logit_bias": {"0": -100, "2": -100}}
    with (
        httpx.Client(base_url=server.base_url, timeout=120) as client,
        client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as running,
    ):
        lines = running.iter_lines()
        next(lines)
        samples: list[tuple[int, int]] = []
        prefilled = stats.prefill_tokens

        def sample() -> None:
            while stats.prefill_tokens - prefilled < 1200:
                samples.append((stats.prefill_tokens, stats.tokens_generated))
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        ask(server.base_url, greedy(long_prompt, max_tokens=1))
        sampler.join(30)
    # while the long prompt was read, the running stream kept generating
    during = [g for p, g in samples if prefilled + 100 < p < prefilled + 1200]
    assert during and during[-1] - during[0] >= 3, samples[:5]


def test_the_next_turn_of_a_chat_evaluates_only_its_new_tokens(server):
    stats = server.backend(MODEL).stats
    history: list[dict[str, str]] = [
        {"role": "system", "content": "You are a helpful assistant. " * 20}
    ]
    prefilled: list[int] = []
    prompts: list[int] = []
    for question in ("Hello, who are you?", "Tell me about the sea.", "And about rivers?"):
        history.append({"role": "user", "content": question})
        before = stats.prefill_tokens
        answer = ask(server.base_url, {**greedy(question), "messages": history})
        prefilled.append(stats.prefill_tokens - before)
        prompts.append(answer["usage"]["prompt_tokens"])
        # the usage says what the cache gave: the prompt less what was read
        cached = answer["usage"]["prompt_tokens_details"]["cached_tokens"]
        assert cached == prompts[-1] - prefilled[-1], answer["usage"]
        history.append({"role": "assistant", "content": content(answer)})
    assert (
        prefilled[0] > 0.9 * prompts[0]
    )  # a new chat reads its prompt (less the template's start)
    for turn in (1, 2):  # later turns: the new user message, the template's markers
        new = prompts[turn] - prompts[turn - 1]
        assert prefilled[turn] <= new, (prefilled, prompts)


def test_a_cached_prefix_gives_the_same_answer_as_a_cold_start(server):
    """Reuse is exact: the turn served from the cache equals the turn on a fresh model."""
    history = [
        {"role": "user", "content": "Name three fruits."},
        {"role": "assistant", "content": "Apple, banana and cherry."},
        {"role": "user", "content": "Which is the sweetest?"},
    ]
    warm = ask(server.base_url, {**greedy(""), "messages": history[:1]})  # caches the start
    assert warm["usage"]["prompt_tokens"] > 0
    cached = content(ask(server.base_url, {**greedy(""), "messages": history}))
    cold = content(ask(server.base_url, {**greedy(""), "model": "smollm2-q1", "messages": history}))
    assert cached == cold


def test_interleaved_chats_each_reuse_their_own_prefix(server):
    stats = server.backend(MODEL).stats
    chats = {
        name: [{"role": "user", "content": f"{name}: " + "tell me more. " * 30}]
        for name in ("a", "b")
    }
    cold: dict[str, int] = {}
    for name in ("a", "b"):
        before = stats.prefill_tokens
        answer = ask(server.base_url, {**greedy(""), "messages": chats[name], "max_tokens": 4})
        cold[name] = stats.prefill_tokens - before
        chats[name] += [
            {"role": "assistant", "content": content(answer)},
            {"role": "user", "content": "go on"},
        ]
    for name in ("a", "b"):
        before = stats.prefill_tokens
        ask(server.base_url, {**greedy(""), "messages": chats[name], "max_tokens": 4})
        assert stats.prefill_tokens - before < cold[name] / 3, name


def stream_events(base_url: str, body: dict[str, Any]) -> list[tuple[int, str, str | None]]:
    """A stream's chunks as (choice index, content, finish_reason), in arrival order."""
    events: list[tuple[int, str, str | None]] = []
    with httpx.stream(
        "POST", f"{base_url}/v1/chat/completions", json={**body, "stream": True}, timeout=120
    ) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:])["choices"]:
                text = choice["delta"].get("content") or ""
                events.append((choice["index"], text, choice["finish_reason"]))
    return events


def test_the_choices_of_one_request_decode_side_by_side(server):
    """n=4 takes four slots, each with a copy of the evaluated prompt: the choices' tokens
    interleave, the prompt is read once, and each greedy choice is the answer n=1 gives."""
    stats = server.backend(MODEL).stats
    body = greedy(QUESTIONS[0] + " " + "Please be precise. " * 20, max_tokens=16)
    alone = content(ask(server.base_url, body))  # and its prompt is now cached
    prefilled = stats.prefill_tokens
    answer, peak = peak_while(stats, lambda: ask(server.base_url, {**body, "n": 4}))
    assert [content(answer, i) for i in range(4)] == [alone] * 4
    assert answer["usage"]["completion_tokens"] == 4 * 16
    # the prompt was cached from the n=1 run; each further choice evaluated one token again
    assert stats.prefill_tokens - prefilled <= 4
    events = stream_events(server.base_url, {**body, "n": 4})
    first_of = {i: events.index(next(e for e in events if e[0] == i and e[1])) for i in range(4)}
    finish_of = {e[0]: i for i, e in enumerate(events) if e[2] is not None}
    assert max(first_of.values()) < min(finish_of.values()), "the choices ran one by one"
    texts = ["".join(e[1] for e in events if e[0] == index) for index in range(4)]
    assert texts == [alone] * 4
    assert wait_until(lambda: stats.batch_size == 0, 10)
    assert peak == 1  # one request, however many slots its choices take


def test_more_choices_than_slots_and_a_cancel_free_every_slot(server):
    """n=6 on 4 slots: the last two start as earlier ones end; sampled choices differ by seed.
    A client that leaves an n=4 stream frees all four slots at once."""
    backend = server.backend(MODEL)
    stats = backend.stats
    body = {**greedy(QUESTIONS[2], max_tokens=12), "temperature": 1.0, "seed": 7, "n": 6}
    answer = ask(server.base_url, body)
    assert [c["index"] for c in answer["choices"]] == list(range(6))
    assert all(c["finish_reason"] in ("stop", "length") for c in answer["choices"])
    assert 6 <= answer["usage"]["completion_tokens"] <= 6 * 12
    assert len({content(answer, i) for i in range(6)}) > 1
    again = ask(server.base_url, body)
    assert [content(again, i) for i in range(6)] == [content(answer, i) for i in range(6)]
    cancelled = stats.requests_cancelled
    long = {**greedy(QUESTIONS[0], max_tokens=400), "logit_bias": {"0": -100, "2": -100}}
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        with client.stream(
            "POST", "/v1/chat/completions", json={**long, "n": 4, "stream": True}
        ) as r:
            lines = r.iter_lines()
            seen: set[int] = set()
            while len(seen) < 4:
                line = next(lines)
                if line.startswith("data: {"):
                    seen.update(c["index"] for c in json.loads(line[6:])["choices"])
        # the client went away with four choices decoding
        assert wait_until(lambda: stats.batch_size == 0, 10), stats
        assert stats.requests_cancelled == cancelled + 1
        reply = client.post("/v1/chat/completions", json=greedy(QUESTIONS[1], max_tokens=4, n=4))
        assert reply.status_code == 200 and len(reply.json()["choices"]) == 4
