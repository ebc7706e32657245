"""Which of the context's sequence slots a new request decodes in, and what it reuses.

A llama.cpp context made for ``parallel`` sequences holds a KV cache per sequence id (a slot).
A slot keeps what it evaluated after its request ends, so the next turn of the same chat — its
prompt starts with the previous prompt and answer — evaluates only the new tokens. ``pick_slot``
chooses, among the free slots, the one to decode in and whether another slot's cached prefix is
worth copying into it first. Pure bookkeeping: no llama.cpp here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# A prefix held by another slot is copied (llama.cpp copies that slot's whole cache, then the
# tail is dropped) only when it saves at least this many tokens of prompt evaluation.
MIN_COPIED_PREFIX = 64


@dataclass
class SlotCache:
    """What one sequence slot's KV cache holds: ``tokens`` at positions 0..len-1, computed
    under LoRA ``adapter`` (None: the base model). ``last_used`` orders slots for eviction."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    adapter: str | None = None
    last_used: int = -1  # -1: never used

    def common_prefix(self, prompt: Sequence[int], adapter: str | None) -> int:
        """How many leading tokens of ``prompt`` this slot's cache already holds."""
        if adapter != self.adapter:
            return 0
        n = 0
        for a, b in zip(self.tokens, prompt, strict=False):
            if a != b:
                break
            n += 1
        return n


@dataclass(frozen=True)
class SlotChoice:
    """Decode in ``target``; first copy ``source``'s cache into it when not None. ``reuse``
    tokens of the prompt are then in the target's cache already."""

    target: SlotCache
    source: SlotCache | None
    reuse: int


def pick_slot(
    free: Sequence[SlotCache], busy: Sequence[SlotCache], prompt: Sequence[int], adapter: str | None
) -> SlotChoice:
    """The free slot a request with ``prompt`` decodes in (``free`` must not be empty), in
    this order of preference:

    1. a slot whose whole cache the prompt continues (the same chat's earlier turn): nothing
       cached is lost; the longest first;
    2. an empty slot, so that other chats' caches survive;
    3. a slot whose cache the prompt mostly continues (at least half of it: an edited or
       regenerated last turn), losing only the tail;
    4. the least recently used slot.
    In cases 2 and 4, a prefix another slot holds (a shared system prompt, a chat whose slot is
    busy) is copied in first when that saves at least ``MIN_COPIED_PREFIX`` tokens.
    """
    if not free:
        raise ValueError("no free slot")
    reuse = {slot.seq_id: slot.common_prefix(prompt, adapter) for slot in free}
    whole = [s for s in free if s.tokens and reuse[s.seq_id] == len(s.tokens)]
    if whole:
        best = max(whole, key=lambda s: reuse[s.seq_id])
        return SlotChoice(best, None, reuse[best.seq_id])
    empty = [s for s in free if not s.tokens]
    if empty:
        return _with_copy(empty[0], 0, free, busy, prompt, adapter)
    mostly = [s for s in free if reuse[s.seq_id] and 2 * reuse[s.seq_id] >= len(s.tokens)]
    if mostly:
        best = max(mostly, key=lambda s: reuse[s.seq_id])
        return SlotChoice(best, None, reuse[best.seq_id])
    target = min(free, key=lambda s: s.last_used)
    return _with_copy(target, reuse[target.seq_id], free, busy, prompt, adapter)


def _with_copy(
    target: SlotCache,
    own: int,
    free: Sequence[SlotCache],
    busy: Sequence[SlotCache],
    prompt: Sequence[int],
    adapter: str | None,
) -> SlotChoice:
    source: SlotCache | None = None
    best = own
    for slot in (*free, *busy):
        if slot is not target:
            reuse = slot.common_prefix(prompt, adapter)
            if reuse > best:
                source, best = slot, reuse
    if source is not None and best - own >= MIN_COPIED_PREFIX:
        return SlotChoice(target, source, best)
    return SlotChoice(target, None, own)
