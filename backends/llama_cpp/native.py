"""The native llama.cpp objects the scheduler drives, each behind a small owner.

``LlamaContextHandles`` are the context, memory and vocab the engine made; ``token_piece``
reads a token's bytes; ``DecodeBatch`` owns one ``llama_batch`` and writes a step's parts
(``backends.llama_cpp.batch.batch_parts``) into it. Only the scheduler's thread touches them.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backends.llama_cpp.batch import BatchPart


@dataclass(frozen=True)
class LlamaContextHandles:
    """The native pieces the scheduler drives (owned by the engine, freed after ``join``)."""

    ctx: Any  # llama_context_p
    memory: Any  # llama_memory_t
    vocab: Any  # llama_vocab_p
    vocab_size: int
    piece: Callable[[int, bool], bytes]  # token -> its bytes (special: spelled out)


def token_piece(vocab: Any) -> Callable[[int, bool], bytes]:
    """``piece(token, special)``: the bytes a token adds to the text."""
    import llama_cpp

    buffer = ctypes.create_string_buffer(256)

    def piece(token: int, special: bool) -> bytes:
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, special)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(vocab, token, big, len(big), 0, special)
            return big.raw[: max(n, 0)]
        return buffer.raw[:n]

    return piece


class DecodeBatch:
    """A ``llama_batch`` of ``capacity`` tokens, one sequence id each. ``free`` releases it
    (once; the batch is unusable after)."""

    def __init__(self, capacity: int) -> None:
        import llama_cpp

        self.capacity = capacity
        self.native = llama_cpp.llama_batch_init(capacity, 0, 1)
        # the batch's arrays, looked up once (a ctypes field access builds a new pointer object)
        batch = self.native
        self._tokens, self._pos, self._n_seq_id = batch.token, batch.pos, batch.n_seq_id
        self._seq_ids = [batch.seq_id[i] for i in range(capacity)]
        self._logits = batch.logits

    def fill(self, parts: list[BatchPart]) -> tuple[int, int]:
        """Write ``parts`` after each sequence's cached tokens, extend the slots' token lists
        and set each sampling sequence's ``logits_at``. Returns (tokens, of which prompt)."""
        tokens, pos, n_seq_id, seq_ids, logits = (
            self._tokens,
            self._pos,
            self._n_seq_id,
            self._seq_ids,
            self._logits,
        )
        n = prefill = 0
        for part in parts:
            seq = part.seq
            seq_id = seq.slot.seq_id
            start = len(seq.slot.tokens)
            for i, token in enumerate(part.tokens):
                tokens[n] = token
                pos[n] = start + i
                n_seq_id[n] = 1
                seq_ids[n][0] = seq_id
                logits[n] = False
                n += 1
            seq.slot.tokens.extend(part.tokens)
            if part.logits:
                logits[n - 1] = True
                seq.logits_at = n - 1
            if part.prefill:
                prefill += len(part.tokens)
        self.native.n_tokens = n
        return n, prefill

    def free(self) -> None:
        import llama_cpp

        llama_cpp.llama_batch_free(self.native)
