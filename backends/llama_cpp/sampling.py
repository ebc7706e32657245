"""Per-sequence sampling for the llama.cpp engine: each choice has its own llama.cpp sampler
chain (its own seed and penalty history), so a sequence samples the same tokens whether it
decodes alone or batched with others.

``logit_bias`` and the grammar's mask (``backends.local.grammar``) are applied to the
sequence's row of the context's logits in place, then the chain samples from that row:
penalties, top_k, top_p, min_p, temperature, a seeded draw. Greedy decoding without penalties
(temperature 0, the common case for tools and structured output) takes the row's first
highest logit directly, as llama.cpp's greedy sampler does, without building the chain's
candidate array of the whole vocabulary (~50 us a token for SmolLM2's 49,152 tokens).
Log-probabilities are read from the row before any of that, as OpenAI reports them.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

from backends.events import TokenLogprob, TopToken
from backends.local.grammar import TokenConstraint
from backends.local.plan import SamplingParams

PENALTY_WINDOW = 64  # tokens the presence / frequency penalties look back over (llama.cpp's)


class SequenceSampler:
    """One choice's sampler over a context's logits rows. Used on the engine thread only;
    ``close`` frees the chain (idempotent)."""

    def __init__(
        self,
        sampling: SamplingParams,
        seed: int,
        vocab_size: int,
        constraint: TokenConstraint | None,
    ) -> None:
        import llama_cpp
        import numpy as np

        self._vocab = vocab_size
        self._row_type = ctypes.c_float * vocab_size  # a logits row, viewed in place
        self._constraint = constraint
        self._bias_ids = np.fromiter(sampling.logit_bias, dtype=np.int64)
        self._bias_values = np.fromiter(sampling.logit_bias.values(), dtype=np.float32)
        penalties = bool(sampling.presence_penalty or sampling.frequency_penalty)
        self._argmax = sampling.temperature <= 0 and not penalties
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        if penalties:
            add(
                chain,
                llama_cpp.llama_sampler_init_penalties(
                    vocab_size,
                    PENALTY_WINDOW,
                    1.0,
                    sampling.frequency_penalty,
                    sampling.presence_penalty,
                ),
            )
        if sampling.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            if sampling.top_k > 0:
                add(chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
            if sampling.top_p < 1.0:
                add(chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
            if sampling.min_p > 0.0:
                add(chain, llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
            add(chain, llama_cpp.llama_sampler_init_temp(sampling.temperature))
            add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        self._chain: Any = chain

    def sample(self, ctx: Any, index: int, keep_logits: bool = False) -> tuple[int, Any]:
        """Sample from the logits of output ``index`` of the last decode (and accept it).
        With ``keep_logits``, also returns a copy of the row as the model gave it (for
        ``token_logprob``); else None."""
        import llama_cpp
        import numpy as np

        kept = None
        row = None
        if keep_logits or len(self._bias_ids) or self._constraint is not None or self._argmax:
            ptr = llama_cpp.llama_get_logits_ith(ctx, index)
            view: Any = self._row_type.from_address(ctypes.addressof(ptr.contents))
            row = np.frombuffer(view, dtype=np.float32)
            if keep_logits:
                kept = row.astype(np.float64)
            if len(self._bias_ids):
                row[self._bias_ids] += self._bias_values
            if self._constraint is not None:
                row[~self._constraint.allowed()] = -math.inf
        if self._argmax and row is not None:
            token = int(row.argmax())  # the first highest, as llama.cpp's greedy sampler
        else:
            token = int(llama_cpp.llama_sampler_sample(self._chain, ctx, index))
        if self._constraint is not None:
            self._constraint.accept(token)
        return token, kept

    def close(self) -> None:
        import llama_cpp

        chain, self._chain = self._chain, None
        if chain is not None:
            llama_cpp.llama_sampler_free(chain)


def token_logprob(logits: Any, token: int, top: int, piece: Any) -> TokenLogprob:
    """``token``'s log-probability in the distribution of ``logits`` (a float64 row, as
    ``SequenceSampler.sample`` keeps it) and the ``top`` most likely tokens';
    ``piece(token) -> bytes`` spells a token."""
    import numpy as np

    peak = float(logits.max())
    logprobs = logits - (peak + math.log(float(np.exp(logits - peak).sum())))

    def spelled(tid: int) -> TopToken:
        raw = bytes(piece(tid))
        return TopToken(raw.decode("utf-8", errors="replace"), float(logprobs[tid]), raw)

    alternatives: list[TopToken] = []
    if top:
        best = np.argpartition(-logprobs, top)[:top]
        alternatives = [spelled(int(t)) for t in sorted(best.tolist(), key=lambda t: -logprobs[t])]
    chosen = spelled(token)
    return TokenLogprob(chosen.token, chosen.logprob, chosen.bytes, tuple(alternatives))
