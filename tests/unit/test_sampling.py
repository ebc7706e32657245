"""The batch sampler: each row its own settings and its own random stream."""

from __future__ import annotations

import math

import pytest
import torch

from backends.local.plan import SamplingParams
from backends.transformers.sampling import RowSampler, draw

VOCAB = 50


def logits(rows: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, VOCAB, generator=generator) * 3


def row(**params: object) -> RowSampler:
    return RowSampler(SamplingParams(**params), VOCAB, torch.device("cpu"))  # type: ignore[arg-type]


def test_greedy_rows_take_the_argmax_even_beside_sampled_rows():
    x = logits(3)
    best = x.argmax(dim=-1).tolist()
    drawn = draw(x.clone(), [row(temperature=0), row(temperature=1.5, seed=1), row(temperature=0)])
    assert drawn.tokens[0] == best[0] and drawn.tokens[2] == best[2]


def test_a_seeded_row_draws_the_same_whatever_its_neighbours():
    in_batch, alone = row(seed=9), row(seed=9)
    for step in range(5):
        mine = logits(1, step)
        batch = torch.cat([logits(1, 100 + step), mine, logits(1, 200 + step)])
        together = draw(batch, [row(seed=step), in_batch, row()]).tokens[1]
        assert together == draw(mine.clone(), [alone]).tokens[0]


def test_top_k_one_and_tiny_top_p_are_greedy():
    x = logits(4)
    best = x.argmax(dim=-1).tolist()
    rows = [row(top_k=1, seed=1), row(top_p=1e-6, seed=2), row(top_k=1), row(min_p=1.0, seed=3)]
    assert draw(x.clone(), rows).tokens == best


def test_logit_bias_forces_and_bans_tokens():
    x = logits(2)
    best = x.argmax(dim=-1).tolist()
    drawn = draw(
        x.clone(),
        [
            row(temperature=0, logit_bias={7: 100.0}),
            row(temperature=0, logit_bias={best[1]: -100.0}),
        ],
    )
    assert drawn.tokens[0] == 7 and drawn.tokens[1] != best[1]


def test_frequency_penalty_pushes_repeated_tokens_down():
    x = torch.zeros(1, VOCAB)
    x[0, 3] = 1.0
    penalised = row(temperature=0, frequency_penalty=2.0)
    assert draw(x.clone(), [penalised]).tokens == [3]
    penalised.observe(3)
    assert draw(x.clone(), [penalised]).tokens != [3]


def test_sampling_follows_the_distribution():
    x = torch.log(torch.tensor([[0.7, 0.2, 0.1] + [0.0] * (VOCAB - 3)]) + 1e-30)
    sampler = row(seed=5)
    counts = [0, 0, 0]
    for _ in range(2000):
        counts[draw(x.clone(), [sampler]).tokens[0]] += 1
    assert counts[0] / 2000 == pytest.approx(0.7, abs=0.04)
    assert counts[2] / 2000 == pytest.approx(0.1, abs=0.03)


def test_logprobs_are_of_the_raw_distribution():
    x = logits(1)
    drawn = draw(x.clone(), [row(temperature=0.2, logprobs=True, top_logprobs=3, seed=1)])
    chosen, top = drawn.logprobs[0]
    raw = torch.log_softmax(x[0], dim=-1)
    assert chosen == pytest.approx(float(raw[drawn.tokens[0]]), abs=1e-5)
    assert [t for t, _ in top] == raw.topk(3).indices.tolist()
    assert math.fsum(math.exp(lp) for lp in raw.tolist()) == pytest.approx(1.0, abs=1e-4)
    assert draw(x.clone(), [row()]).logprobs == [None]
