"""Slot choice for the llama.cpp engine's prefix reuse (pure bookkeeping, no llama.cpp)."""

from __future__ import annotations

import pytest

from backends.llama_cpp.slots import MIN_COPIED_PREFIX, SlotCache, pick_slot

SYSTEM = list(range(1000, 1000 + MIN_COPIED_PREFIX + 10))  # a long shared system prompt


def slot(seq_id: int, tokens: list[int], last_used: int, adapter: str | None = None) -> SlotCache:
    return SlotCache(seq_id, list(tokens), adapter, last_used)


def test_the_next_turn_of_a_chat_takes_its_own_slot():
    a = slot(0, [1, 2, 3, 4, 5, 6], last_used=1)
    b = slot(1, [1, 2, 9, 9], last_used=2)
    choice = pick_slot([a, b], [], [1, 2, 3, 4, 5, 6, 7, 8], None)
    assert (choice.target, choice.source, choice.reuse) == (a, None, 6)


def test_interleaved_chats_each_find_their_own_prefix():
    a = slot(0, [1, 2, 3, 4], last_used=1)
    b = slot(1, [1, 7, 8, 9], last_used=2)
    assert pick_slot([a, b], [], [1, 7, 8, 9, 10], None).target is b
    assert pick_slot([a, b], [], [1, 2, 3, 4, 10], None).target is a


def test_a_new_chat_takes_the_empty_or_least_recently_used_slot_not_another_chats():
    a = slot(0, [*SYSTEM, 1, 2, 3] * 1, last_used=5)
    empty = slot(1, [], last_used=-1)
    old = slot(2, [*SYSTEM, 4], last_used=2)
    choice = pick_slot([a, empty, old], [], [*SYSTEM, 9, 9], None)
    assert choice.target is empty
    # the shared system prompt is copied from a slot that holds it
    assert choice.source in (a, old) and choice.reuse == len(SYSTEM)


def test_a_short_shared_prefix_is_not_worth_a_copy():
    a = slot(0, [1, 2, 3, 4, 5, 6, 7, 8], last_used=5)
    empty = slot(1, [], last_used=-1)
    choice = pick_slot([a, empty], [], [1, 2, 3, 99], None)
    assert (choice.target, choice.source, choice.reuse) == (empty, None, 0)


def test_a_busy_slots_prefix_can_be_copied():
    busy = slot(0, [*SYSTEM, 5, 6], last_used=5)
    free = slot(1, [42], last_used=1)
    choice = pick_slot([free], [busy], [*SYSTEM, 7], None)
    assert (choice.target, choice.source, choice.reuse) == (free, busy, len(SYSTEM))


def test_a_prefix_computed_under_another_adapter_is_never_reused():
    lora = slot(0, [1, 2, 3, 4], last_used=1, adapter="a")
    other = slot(1, [5], last_used=0)
    choice = pick_slot([lora, other], [], [1, 2, 3, 4, 5], None)
    assert choice.reuse == 0 and choice.target is other
    assert pick_slot([lora, other], [], [1, 2, 3, 4, 5], "a").reuse == 4


def test_no_free_slot_is_an_error():
    with pytest.raises(ValueError):
        pick_slot([], [slot(0, [1], 1)], [1], None)


def test_an_edited_last_turn_takes_its_chats_slot_when_none_is_empty():
    a = slot(0, [1, 2, 3, 4, 5, 6], last_used=5)
    b = slot(1, [7, 8], last_used=1)
    choice = pick_slot([a, b], [], [1, 2, 3, 4, 9], None)
    assert (choice.target, choice.reuse) == (a, 4)


def test_with_nothing_to_reuse_the_least_recently_used_slot_goes():
    a = slot(0, [1, 2], last_used=5)
    b = slot(1, [3, 4], last_used=1)
    assert pick_slot([a, b], [], [9, 9], None).target is b
