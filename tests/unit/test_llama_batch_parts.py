"""What each sequence puts in one llama.cpp step's batch (pure bookkeeping, no llama.cpp):
decode tokens first in priority, prompt slices in arrival order within the budget, and the
batch ordered by seq id whatever the order the sequences were admitted in."""

from __future__ import annotations

from typing import Any

from backends.llama_cpp.batch import MIN_PREFILL_SLICE, RunningSequence, batch_parts
from backends.llama_cpp.slots import SlotCache


def seq(seq_id: int, next_token: int | None = None, pending: list[int] | None = None) -> Any:
    none: Any = None
    return RunningSequence(
        job=none,
        index=0,
        slot=SlotCache(seq_id),
        pending=list(pending or []),
        sampler=none,
        output=none,
        utf8=none,
        next_token=next_token,
        logits_at=7,
    )


def test_the_batch_is_ordered_by_seq_id_not_by_admission():
    running = [seq(2, next_token=20), seq(3, next_token=30), seq(0, next_token=0), seq(1, 10)]
    parts = batch_parts(running, n_batch=512)
    assert [p.seq.slot.seq_id for p in parts] == [0, 1, 2, 3]
    assert [p.tokens for p in parts] == [[0], [10], [20], [30]]
    assert all(p.logits and not p.prefill for p in parts)
    assert all(s.next_token is None and s.logits_at == -1 for s in running)


def test_prompts_share_what_decoding_leaves_in_arrival_order_then_sort_by_seq_id():
    first = seq(3, pending=list(range(100)))  # came first
    second = seq(1, pending=list(range(100, 400)))
    decoding = seq(2, next_token=5)
    parts = batch_parts([first, second, decoding], n_batch=128)
    budget = max(MIN_PREFILL_SLICE, 128 // 4)  # while others decode
    assert [p.seq.slot.seq_id for p in parts] == [2, 3]  # the second prompt waits its turn
    assert parts[1].tokens == list(range(budget)) and parts[1].prefill
    assert not parts[1].logits  # more of its prompt is pending
    assert first.pending == list(range(budget, 100)) and len(second.pending) == 300


def test_a_prompt_that_ends_in_this_step_asks_for_logits():
    alone = seq(0, pending=[1, 2, 3])
    (part,) = batch_parts([alone], n_batch=512)
    assert part.tokens == [1, 2, 3] and part.logits and part.prefill
    assert alone.pending == []
