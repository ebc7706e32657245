"""Prefix reuse across requests: the KV of sequences that ended, kept for prompts that start the
same way (the next turn of a chat starts with every earlier turn).

``PrefixCache`` holds entries of (adapter, token ids, per-layer keys and values): the tokens a
sequence had evaluated when it left the batch (its prompt and the generated tokens fed back),
and their KV exactly as computed. ``lookup`` finds the entry of the same adapter sharing the
longest common prefix with a new prompt and returns views of that prefix's KV; the scheduler
copies them into the request's own cache and reads only the rest of the prompt. The last prompt
token is never taken from the cache (its logits seed the first sampled token).

Bounded by a token budget summed over entries; the least recently used entries go first. An
entry whose tokens start another entry's is redundant and is dropped (or not added). Not
thread-safe: the scheduler's thread is its only user, and tensors stay on the device (and, with
``device_map``, on the layer's device) where the model computed them. Nothing here mutates a
stored tensor; the caches built from them grow by concatenation, into new tensors.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

# Shorter matches are not reused: a chat template's opening tokens are shared by every prompt,
# and reading them again costs less than keeping the entries that only they would refresh.
MIN_PREFIX_TOKENS = 16

LayerKV = tuple[torch.Tensor, torch.Tensor]  # keys, values: [1, kv heads, tokens, head dim]


@dataclass
class _Entry:
    adapter: str
    tokens: list[int]
    layers: list[LayerKV]


@dataclass(frozen=True)
class PrefixHit:
    """``tokens`` leading prompt tokens whose KV is ``layers`` (views into a cache entry:
    copy them before growing)."""

    tokens: int
    layers: list[LayerKV]


class PrefixCache:
    """See the module docstring. ``budget_tokens`` 0 turns it off (nothing is kept)."""

    def __init__(self, budget_tokens: int, min_tokens: int = MIN_PREFIX_TOKENS) -> None:
        if budget_tokens < 0 or min_tokens < 1:
            raise ValueError(f"budget_tokens {budget_tokens} < 0 or min_tokens {min_tokens} < 1")
        self.budget = budget_tokens
        self.min_tokens = min_tokens
        self.tokens = 0  # held now, summed over entries
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # least recently used first
        self._next_key = 0

    @property
    def enabled(self) -> bool:
        return self.budget >= self.min_tokens

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, adapter: str, prompt: list[int]) -> PrefixHit | None:
        """The longest reusable prefix of ``prompt`` under ``adapter`` (at most all tokens but
        the last), or None when no entry shares at least ``min_tokens``. A hit refreshes the
        entry's place in the LRU order."""
        best_key, best = -1, 0
        for key, entry in self._entries.items():
            if entry.adapter == adapter:
                shared = common_prefix(entry.tokens, prompt)
                if shared > best:
                    best_key, best = key, shared
        best = min(best, len(prompt) - 1)
        if best < self.min_tokens:
            return None
        self._entries.move_to_end(best_key)
        layers = self._entries[best_key].layers
        return PrefixHit(best, [(k[:, :, :best], v[:, :, :best]) for k, v in layers])

    def insert(self, adapter: str, tokens: list[int], layers: list[LayerKV]) -> None:
        """Keep ``layers``, the KV of ``tokens`` computed under ``adapter`` (taken over: the
        caller must not change them; tensors longer than the budget are cut to it). Raises
        ValueError when the KV's length is not the number of tokens."""
        if not self.enabled or len(tokens) < self.min_tokens:
            return
        length = layers[0][0].shape[-2] if layers else -1
        if length != len(tokens):
            raise ValueError(f"KV of {length} positions for {len(tokens)} tokens")
        if len(tokens) > self.budget:
            tokens = tokens[: self.budget]
            layers = [(k[:, :, : self.budget].clone(), v[:, :, : self.budget].clone())
                      for k, v in layers]  # fmt: skip
        for key, entry in list(self._entries.items()):
            if entry.adapter != adapter:
                continue
            shared = common_prefix(entry.tokens, tokens)
            if shared == len(tokens):  # already held, maybe with more after it
                self._entries.move_to_end(key)
                return
            if shared == len(entry.tokens):  # the new entry covers this one
                self._remove(key)
        self._entries[self._next_key] = _Entry(adapter, list(tokens), layers)
        self._next_key += 1
        self.tokens += len(tokens)
        while self.tokens > self.budget:
            self._remove(next(iter(self._entries)))

    def clear(self) -> None:
        self._entries.clear()
        self.tokens = 0

    def _remove(self, key: int) -> None:
        self.tokens -= len(self._entries.pop(key).tokens)


def common_prefix(a: list[int], b: list[int], block: int = 64) -> int:
    """How many leading tokens ``a`` and ``b`` share (whole blocks compared at C speed)."""
    n = min(len(a), len(b))
    i = 0
    while i + block <= n and a[i : i + block] == b[i : i + block]:
        i += block
    while i < n and a[i] == b[i]:
        i += 1
    return i
