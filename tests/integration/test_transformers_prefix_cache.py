"""Prefix reuse in the transformers engine: a prompt that starts with an earlier sequence's tokens
reads only the rest. Proved by the engine's counters (tokens evaluated, tokens reused, tokens
held) and by greedy output equal to that of the same model with the cache off, on a tiny model
with a 1,024-token window (two chats of several turns fit)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from backends.events import TextDelta
from backends.openai_types import ChatCompletionRequest
from backends.settings import AdapterSettings
from backends.transformers.backend import TransformersBackend
from backends.transformers.sequences import BatchStats
from gateway.openai_chat import collect_completion
from gateway.openai_chat_request import to_generation_request
from tests.integration.conftest import hf_entry
from tests.tiny_hf import write_tiny_hf_model, write_tiny_lora

pytestmark = pytest.mark.integration

NO_EOS = {"2": -100}  # <|im_end|>: every answer runs to max_tokens
THE = 300  # " the" in the tiny vocabulary: an answer of only " the" re-tokenizes to itself
ANSWER = 12  # tokens per answer
Messages = list[dict[str, str]]

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
        ],
    ),
]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prefix")
    base = write_tiny_hf_model(root / "tiny", context=1024)
    return {
        "base": base,
        "a": write_tiny_lora(base, root / "a", seed=1),
        "b": write_tiny_lora(base, root / "b", seed=2),
        "cache": root / "cache",
    }


def backend(
    model: dict[str, Path], name: str, budget: int, device: str = "cpu"
) -> TransformersBackend:
    adapters = [
        AdapterSettings(name=f"{name}-a", source=str(model["a"])),
        AdapterSettings(name=f"{name}-b", source=str(model["b"])),
    ]
    return TransformersBackend(
        hf_entry(
            name,
            str(model["base"]),
            model["cache"],
            dtype="float32",  # exact comparisons with the cache off
            device=device,
            prefill_chunk=8,
            prefix_cache_tokens=budget,
            adapters=adapters,
        )
    )


Body = Callable[[TransformersBackend, TransformersBackend], Awaitable[None]]


def with_engines(model: dict[str, Path], body: Body, budget: int = 4096, device: str = "cpu"):
    """Run ``body(hot, cold)``: the same model with a prefix cache of ``budget`` tokens, and
    without one."""

    async def run() -> None:
        hot, cold = backend(model, "hot", budget, device), backend(model, "cold", 0, device)
        try:
            await hot.load()
            await cold.load()
            await body(hot, cold)
        finally:
            await hot.aclose()
            await cold.aclose()

    asyncio.run(run())


def request(messages: Messages, **extra: Any):
    return to_generation_request(
        ChatCompletionRequest.model_validate(
            {"model": "m", "messages": messages, "temperature": 0, "max_tokens": ANSWER,
             "logit_bias": NO_EOS, **extra}
        )
    )  # fmt: skip


async def ask(engine: TransformersBackend, messages: Messages, adapter: str | None = None,
              **extra: Any) -> str:  # fmt: skip
    completion = await collect_completion(
        await engine.generate(request(messages, **extra), adapter), "m"
    )
    return completion.choices[0].message.content or ""


def stats(engine: TransformersBackend) -> BatchStats:
    found = engine.stats
    assert isinstance(found, BatchStats)
    return found


async def held(engine: TransformersBackend) -> int:
    """The tokens the prefix cache holds once the last sequence has left the batch (its answer
    reaches the client just before)."""
    while stats(engine).rows:
        await asyncio.sleep(0.001)
    return stats(engine).prefix_cached_tokens


def prompt_length(engine: TransformersBackend, messages: Messages) -> int:
    tokenizer = engine.loaded_model.tokenizer
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    return len(ids)


def opening(topic: str) -> Messages:
    return [{"role": "user", "content": f"The quick brown fox jumps over the lazy dog. {topic}"}]


def follow(messages: Messages, answer: str, question: str) -> Messages:
    return [
        *messages,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": question},
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_greedy_answers_with_cache_hits_equal_answers_without(model, device):
    async def body(hot: TransformersBackend, cold: TransformersBackend) -> None:
        messages = opening("Tell me about Paris, the capital of France.")
        for turn in range(4):
            answer = await ask(hot, messages)
            assert answer == await ask(cold, messages)
            messages = follow(messages, answer, f"Numbers {turn}: 0 1 2 3. How are you?")
        assert stats(hot).prefix_hits == 3
        assert stats(cold).prefix_hits == 0 == await held(cold)

    with_engines(model, body, device=device)


def test_the_second_turn_reads_only_its_new_tokens(model):
    async def body(hot: TransformersBackend, _: TransformersBackend) -> None:
        counters = stats(hot)
        first = opening("Say the.")
        answer = await ask(hot, first, logit_bias={**NO_EOS, str(THE): 100})
        assert answer == " the" * ANSWER
        second = follow(first, answer, "Once more.")
        read, reused = counters.prefill_tokens, counters.prefix_hit_tokens
        completion = await collect_completion(await hot.generate(request(second)), "m")
        # reused: the first prompt and every answer token fed back (all but the last drawn)
        assert counters.prefix_hit_tokens - reused == prompt_length(hot, first) + ANSWER - 1
        # and the usage says so
        assert completion.usage.prompt_tokens_details is not None
        assert completion.usage.prompt_tokens_details.cached_tokens == (
            prompt_length(hot, first) + ANSWER - 1
        )
        assert counters.prefill_tokens - read == prompt_length(hot, second) - (
            prompt_length(hot, first) + ANSWER - 1
        )
        # the first turn's entry is a prefix of the second's: only the longer one is kept
        assert await held(hot) == prompt_length(hot, second) + ANSWER - 1

    with_engines(model, body)


def test_interleaved_chats_each_reuse_their_own_prefix(model):
    async def body(hot: TransformersBackend, cold: TransformersBackend) -> None:
        counters = stats(hot)
        chats = {
            "a": [{"role": "user", "content": "Paris is the capital of France. Tell me more."}],
            "b": [{"role": "user", "content": "A gateway routes each request by model name."}],
        }
        for turn in range(3):
            for name, messages in chats.items():
                reused = counters.prefix_hit_tokens
                answer = await ask(hot, messages)
                assert answer == await ask(cold, messages)
                if turn:  # its own previous prompt at least (the other chat shares < 16)
                    previous = messages[:-2]
                    assert counters.prefix_hit_tokens - reused >= prompt_length(hot, previous)
                chats[name] = follow(messages, answer, f"Turn {turn} of chat {name}: why?")
        assert counters.prefix_hits == 4

    with_engines(model, body)


def test_the_cache_keeps_to_its_budget_evicting_the_least_recently_used(model):
    budget = 160

    async def body(hot: TransformersBackend, _: TransformersBackend) -> None:
        counters = stats(hot)
        # distinct from their first word: no chat reuses another's entry
        chats = [[{"role": "user", "content": f"{i}: Paris, France, the quick brown fox."}]
                 for i in range(4)]  # fmt: skip
        answers = []
        for chat in chats:  # each entry ~50 tokens: three fit
            answers.append(await ask(hot, chat))
            assert 0 < await held(hot) <= budget
        assert counters.prefix_hits == 0
        await ask(hot, follow(chats[0], answers[0], "And then?"))  # evicted
        assert counters.prefix_hits == 0
        await ask(hot, follow(chats[3], answers[3], "And then?"))  # the newest
        hits = 0
        assert counters.prefix_hits == hits + 1
        assert await held(hot) <= budget
        long = opening("Numbers: " + " ".join(str(i % 10) for i in range(300)))
        assert prompt_length(hot, long) > budget
        await ask(hot, long)
        assert await held(hot) == budget  # cut to the budget, the rest evicted

    with_engines(model, body, budget=budget)


def test_kv_of_one_adapter_is_not_reused_for_another(model):
    async def body(hot: TransformersBackend, cold: TransformersBackend) -> None:
        counters = stats(hot)
        first = opening("Tell me about adapters and their weights.")
        answer = await ask(hot, first, "hot-a")
        second = follow(first, answer, "And the base model?")
        for served, reference in ((None, None), ("hot-b", "cold-b")):
            hits = counters.prefix_hits
            assert await ask(hot, second, served) == await ask(cold, second, reference)
            assert counters.prefix_hits == hits  # the KV was computed under adapter a
        hits = counters.prefix_hits
        assert await ask(hot, second, "hot-a") == await ask(cold, second, "cold-a")
        assert counters.prefix_hits == hits + 1

    with_engines(model, body)


def test_a_cancelled_request_leaves_a_sound_cache(model):
    async def body(hot: TransformersBackend, cold: TransformersBackend) -> None:
        counters = stats(hot)
        # cancelled while decoding: what it evaluated is kept, and is right
        talk = opening("Tell me a long story about a lighthouse.")
        events = await hot.generate(request(talk, max_tokens=800))
        async for event in events:
            if isinstance(event, TextDelta):
                break
        await events.aclose()
        while counters.requests_cancelled == 0:
            await asyncio.sleep(0.001)
        cancelled = counters.requests_cancelled
        reused = counters.prefix_hit_tokens
        assert await ask(hot, talk) == await ask(cold, talk)
        assert counters.prefix_hit_tokens - reused == prompt_length(hot, talk) - 1

        # cancelled while its prompt is read (one 8-token slice per step of a running stream)
        runner = asyncio.create_task(ask(hot, opening("Keep talking."), max_tokens=400))
        while counters.rows == 0:
            await asyncio.sleep(0.001)
        long = opening("Numbers: " + " ".join(str(i % 10) for i in range(300)))
        read = counters.prefill_tokens
        reading = asyncio.create_task(ask(hot, long))
        while counters.prefill_tokens < read + 40:
            await asyncio.sleep(0.0005)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        reused = counters.prefix_hit_tokens
        assert await ask(hot, long) == await ask(cold, long)
        assert counters.prefix_hit_tokens - reused >= 40
        await runner
        assert counters.requests_cancelled == cancelled + 1

    with_engines(model, body)


def test_the_choices_of_one_request_keep_one_entry_when_they_agree(model):
    async def body(hot: TransformersBackend, cold: TransformersBackend) -> None:
        first = opening("Two greedy choices are the same choice.")
        completion = await collect_completion(await hot.generate(request(first, n=2)), "m")
        answers = [choice.message.content or "" for choice in completion.choices]
        assert answers[0] == answers[1] == await ask(cold, first)
        assert await held(hot) == prompt_length(hot, first) + ANSWER - 1
        second = follow(first, answers[0], "And again?")
        assert await ask(hot, second) == await ask(cold, second)
        assert stats(hot).prefix_hits == 1

    with_engines(model, body)
