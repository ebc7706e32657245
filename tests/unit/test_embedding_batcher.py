"""The shared in-process embedding layer: requests arriving together share forward passes,
each gets its vectors back in order, a failing pass fails only its requests, and inputs are
checked (length, vocabulary, dimensions) before they queue. A fake model stands in for the
engine primitive, so passes are counted, not timed."""

from __future__ import annotations

import asyncio
import threading

import pytest

from backends.embeddings import EmbeddingRequest
from backends.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    InternalError,
    InvalidRequestError,
    QueueFullError,
    UnsupportedParameterError,
)
from backends.local.embedding import LocalEmbedder, closing_tokens
from tests.fakes import FakeEmbeddingModel

pytestmark = pytest.mark.anyio


def request(*inputs: str | tuple[int, ...], dimensions: int | None = None) -> EmbeddingRequest:
    return EmbeddingRequest("m", tuple(inputs), dimensions)


async def held_first_pass(model: FakeEmbeddingModel, embedder: LocalEmbedder, first):
    """Start ``first`` and wait until its pass is running (held by the model's gate)."""
    model.gate = threading.Event()
    task = asyncio.create_task(embedder.embed(first))
    assert await asyncio.to_thread(model.entered.wait, 10)
    return task


async def until_waiting(embedder: LocalEmbedder, count: int) -> None:
    for _ in range(1000):
        if embedder.batcher._jobs_waiting >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{count} requests never queued")


async def test_requests_arriving_during_a_pass_share_the_next_one():
    model = FakeEmbeddingModel()
    embedder = LocalEmbedder("m", model, max_batch_size=8, max_queue=8)
    try:
        first = await held_first_pass(model, embedder, request("a"))
        later = [asyncio.create_task(embedder.embed(request(f"{'x' * n} y"))) for n in (1, 2, 3)]
        await until_waiting(embedder, 3)
        model.gate.set()
        results = await asyncio.gather(first, *later)
    finally:
        await embedder.aclose()
    assert embedder.stats.passes == 2 < len(results)
    assert sorted(model.batches[1]) == [[1, 1], [2, 1], [3, 1]]
    # each request got its own vector (first token id = its first word's length), from pass 2
    assert [list(r.vectors[0]) for r in results[1:]] == [[1, 2, 2], [2, 2, 2], [3, 2, 2]]
    assert [r.prompt_tokens for r in results] == [1, 2, 2, 2]


async def test_a_requests_vectors_come_back_in_input_order_though_passes_sort_by_length():
    model = FakeEmbeddingModel()
    embedder = LocalEmbedder("m", model, max_batch_size=2, max_queue=8)
    try:
        texts = ("a", "bbb ccc ddd", "ee ff", "g h i j")
        result = await embedder.embed(request(*texts))
    finally:
        await embedder.aclose()
    assert [len(batch) for batch in model.batches] == [2, 2]  # bounded by max_batch_size
    assert model.batches[0] == [[1, 1, 1, 1], [3, 3, 3]]  # longest first, as s-t sorts
    assert [list(v)[:2] for v in result.vectors] == [[1, 1], [3, 3], [2, 2], [1, 4]]
    assert result.prompt_tokens == 1 + 3 + 2 + 4


async def test_a_failing_pass_fails_its_requests_and_the_next_pass_still_serves():
    model = FakeEmbeddingModel()
    embedder = LocalEmbedder("m", model, max_batch_size=8, max_queue=8)
    try:
        first = await held_first_pass(model, embedder, request("a"))
        model.poison = 7
        doomed = asyncio.create_task(embedder.embed(request("seven77")))
        also_doomed = asyncio.create_task(embedder.embed(request("bb")))
        await until_waiting(embedder, 2)
        model.gate.set()
        assert list((await first).vectors[0]) == [1, 1, 1]
        for task in (doomed, also_doomed):  # shared the poisoned pass
            with pytest.raises(InternalError):
                await task
        model.poison = None
        assert list((await embedder.embed(request("ccc"))).vectors[0]) == [3, 1, 3]
    finally:
        await embedder.aclose()


async def test_a_full_queue_is_a_429_and_closing_fails_what_waits_with_a_503():
    model = FakeEmbeddingModel()
    embedder = LocalEmbedder("m", model, max_batch_size=8, max_queue=0)
    first = await held_first_pass(model, embedder, request("a"))
    waiting = asyncio.create_task(embedder.embed(request("b")))
    await until_waiting(embedder, 1)
    with pytest.raises(QueueFullError):
        await embedder.embed(request("c"))
    closing = asyncio.create_task(embedder.aclose())
    await asyncio.sleep(0.05)
    model.gate.set()
    await closing
    assert (await first).vectors  # the running pass finished
    with pytest.raises(BackendUnavailableError):
        await waiting
    assert model.closed


@pytest.mark.parametrize(
    ("inputs", "dimensions", "error", "fragment"),
    [
        (("one two three four five",), None, ContextLengthExceededError, "input[0] is 5 tokens"),
        (("ok", (1, 2, 3, 4, 5)), None, ContextLengthExceededError, "input[1] is 5 tokens"),
        (((1, 100),), None, InvalidRequestError, "token id 100"),
        (((-1,),), None, InvalidRequestError, "token id -1"),
        (("ok",), 2, UnsupportedParameterError, "3-dimensional"),
    ],
)
async def test_inputs_are_checked_before_they_queue(inputs, dimensions, error, fragment):
    model = FakeEmbeddingModel(max_tokens=4)
    embedder = LocalEmbedder("m", model, max_batch_size=8, max_queue=8)
    try:
        with pytest.raises(error) as caught:
            await embedder.embed(request(*inputs, dimensions=dimensions))
    finally:
        await embedder.aclose()
    assert fragment in caught.value.message
    assert caught.value.param == ("dimensions" if dimensions else "input")
    assert model.batches == []


async def test_token_ids_are_used_as_sent_and_dimensions_equal_to_the_models_are_fine():
    model = FakeEmbeddingModel()
    embedder = LocalEmbedder("m", model, max_batch_size=8, max_queue=8)
    try:
        result = await embedder.embed(request((5, 6, 7), "ab cd", dimensions=3))
    finally:
        await embedder.aclose()
    assert model.batches == [[[5, 6, 7], [2, 2]]]
    assert result.prompt_tokens == 5


async def test_truncate_cuts_an_over_long_text_to_fit_but_never_token_ids():
    model = FakeEmbeddingModel(max_tokens=4)
    embedder = LocalEmbedder("m", model, max_batch_size=8, max_queue=8)
    cut = EmbeddingRequest("m", ("a bb ccc dddd eeeee", "ok"), truncate=True)
    ids = EmbeddingRequest("m", ((1, 2, 3, 4, 5),), truncate=True)
    try:
        result = await embedder.embed(cut)
        with pytest.raises(ContextLengthExceededError):
            await embedder.embed(ids)  # token ids are the client's own: never edited
    finally:
        await embedder.aclose()
    assert model.batches == [[[1, 2, 3, 4], [2]]]
    assert result.prompt_tokens == 5  # what the model read


@pytest.mark.parametrize(
    ("ids", "empty", "tail"),
    [
        ([101, 7, 8, 102], [101, 102], [102]),  # BERT: [CLS] ... [SEP]
        ([1, 7, 8], [1], []),  # Llama: <s> opens, nothing closes
        ([1, 7, 8, 2], [1, 2], [2]),  # <s> ... </s>
        ([7, 8], [], []),  # no special tokens at all
        ([5, 5, 5], [5, 5], [5]),  # never the whole empty text: its start opens
    ],
)
def test_closing_tokens_are_the_end_an_empty_text_also_has(ids, empty, tail):
    assert closing_tokens(ids, empty) == tail
