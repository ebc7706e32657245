"""Choosing the next token for every row of a batch at once, each row with its own settings.

A grammar (``backends.local.grammar``) first masks the tokens it does not allow. Then OpenAI
semantics: ``logit_bias`` is added to the raw logits; presence/frequency penalties
subtract ``presence * [count > 0] + frequency * count`` over the tokens generated so far;
temperature 0 is greedy. Then, in vLLM's order: temperature, top-k, softmax, min-p, top-p.
Each row draws from its own ``torch.Generator`` (seeded from the request's seed), so a
request's random stream never depends on who shares its batch. Log-probabilities are those
of the raw distribution, before any of these transforms (as OpenAI reports them).

Everything runs on the engine thread; the work per step is a few tensor operations over the
whole batch, plus per-row work only for the rows that ask for it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import torch

from backends.local.grammar import TokenConstraint
from backends.local.plan import SamplingParams

# (log-probability of the chosen token, [(token id, log-probability)] of the most likely ones)
TokenLogprobs = tuple[float, list[tuple[int, float]]]


class RowSampler:
    """The sampling state of one sequence: its generator and its token counts."""

    def __init__(
        self,
        params: SamplingParams,
        vocab_size: int,
        device: Any,
        constraint: TokenConstraint | None = None,
    ) -> None:
        self.params = params
        self.constraint = constraint  # the grammar's position, if decoding is constrained
        self.device = device
        self.generator = torch.Generator(device="cpu")
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        self.generator.manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)
        self.bias_ids: torch.Tensor | None = None
        self.bias_values: torch.Tensor | None = None
        if params.logit_bias:
            ids = list(params.logit_bias)
            self.bias_ids = torch.tensor(ids, device=device)
            self.bias_values = torch.tensor([params.logit_bias[i] for i in ids], device=device)
        self.counts: torch.Tensor | None = None
        if params.presence_penalty or params.frequency_penalty:
            self.counts = torch.zeros(vocab_size, device=device)

    def observe(self, token: int) -> None:
        if self.counts is not None:
            self.counts[token] += 1

    def follow(self, token: int) -> None:
        """Advance the grammar past ``token`` (an end-of-generation token included)."""
        if self.constraint is not None:
            self.constraint.accept(token)

    def allowed(self, width: int) -> torch.Tensor | None:
        """The grammar's mask for the next token over ``width`` logits (None: no grammar)."""
        if self.constraint is None:
            return None
        mask = torch.from_numpy(self.constraint.allowed())
        if mask.shape[0] < width:  # logits padded past the tokenizer's vocabulary
            mask = torch.cat([mask, torch.zeros(width - mask.shape[0], dtype=torch.bool)])
        return mask[:width].to(self.device, non_blocking=True)


@dataclass(frozen=True)
class Drawn:
    """The tokens chosen for each row; ``logprobs[i]`` is None unless row ``i`` asked."""

    tokens: list[int]
    logprobs: list[TokenLogprobs | None]


def draw(logits: torch.Tensor, rows: list[RowSampler]) -> Drawn:
    """Choose one token per row of ``logits`` ([rows, vocab], float32, modified in place)."""
    logprobs = _logprobs(logits, rows)
    _adjust(logits, rows)
    greedy = [i for i, row in enumerate(rows) if row.params.temperature == 0]
    if len(greedy) == len(rows):
        tokens = logits.argmax(dim=-1).tolist()
        return Drawn(tokens, _report(logprobs, rows, tokens))
    argmax = logits.argmax(dim=-1) if greedy else None
    probs = _probabilities(logits, rows)
    uniform = torch.tensor(
        [float(torch.rand(1, generator=row.generator)) for row in rows], device=logits.device
    )
    cdf = probs.cumsum(dim=-1)
    targets = (uniform * cdf[:, -1]).unsqueeze(-1)
    drawn = torch.searchsorted(cdf, targets).squeeze(-1).clamp_(max=logits.shape[-1] - 1)
    if argmax is not None:
        drawn[greedy] = argmax[greedy]
    chosen = drawn.tolist()
    return Drawn(chosen, _report(logprobs, rows, chosen))


def _adjust(logits: torch.Tensor, rows: list[RowSampler]) -> None:
    for i, row in enumerate(rows):
        allowed = row.allowed(logits.shape[-1])
        if allowed is not None:
            logits[i].masked_fill_(~allowed, float("-inf"))
        if row.bias_ids is not None and row.bias_values is not None:
            logits[i].index_add_(0, row.bias_ids, row.bias_values)
        if row.counts is not None:
            p = row.params
            logits[i] -= p.frequency_penalty * row.counts + p.presence_penalty * (row.counts > 0)


def _probabilities(logits: torch.Tensor, rows: list[RowSampler]) -> torch.Tensor:
    temperatures = torch.tensor(
        [row.params.temperature or 1.0 for row in rows], device=logits.device
    ).unsqueeze(-1)
    logits.div_(temperatures)
    for i, row in enumerate(rows):
        k = row.params.top_k
        if 0 < k < logits.shape[-1]:
            kth = torch.topk(logits[i], k).values[-1]
            logits[i].masked_fill_(logits[i] < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    min_p = [row.params.min_p for row in rows]
    if any(min_p):
        floor = torch.tensor(min_p, device=logits.device).unsqueeze(-1)
        probs.masked_fill_(probs < floor * probs.amax(dim=-1, keepdim=True), 0.0)
    top_p = [row.params.top_p for row in rows]
    if any(p < 1.0 for p in top_p):
        ordered, order = probs.sort(dim=-1, descending=True)
        mass_before = ordered.cumsum(dim=-1) - ordered
        limit = torch.tensor(top_p, device=logits.device).unsqueeze(-1)
        ordered.masked_fill_(mass_before > limit * ordered.sum(dim=-1, keepdim=True), 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, ordered)
    return probs


def _logprobs(logits: torch.Tensor, rows: list[RowSampler]) -> list[torch.Tensor | None]:
    return [
        torch.log_softmax(logits[i], dim=-1) if row.params.logprobs else None
        for i, row in enumerate(rows)
    ]


def _report(
    logprobs: list[torch.Tensor | None], rows: list[RowSampler], tokens: list[int]
) -> list[TokenLogprobs | None]:
    out: list[TokenLogprobs | None] = []
    for lp, row, token in zip(logprobs, rows, tokens, strict=True):
        if lp is None:
            out.append(None)
            continue
        top: list[tuple[int, float]] = []
        if row.params.top_logprobs:
            values, ids = torch.topk(lp, row.params.top_logprobs)
            top = list(zip(ids.tolist(), values.tolist(), strict=True))
        out.append((float(lp[token]), top))
    return out
