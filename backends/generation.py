"""A request for an in-process batching engine, in engine terms (no torch: importable anywhere).

``plan_generation`` in ``backends.transformers`` builds these from an OpenAI request; the
scheduler (``backends.batching``) and the sampler (``backends.sampling``) consume them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    """One choice's sampling settings, already resolved (no None: defaults applied)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None  # choice i of a request uses seed + i
    logprobs: bool = False
    top_logprobs: int = 0


# (log-probability of the chosen token, [(token id, log-probability)] of the most likely ones)
TokenLogprobs = tuple[float, list[tuple[int, float]]]


@dataclass(frozen=True)
class GenerationJob:
    """One request: ``n`` choices continuing one tokenized prompt."""

    prompt: list[int]
    max_new_tokens: int
    sampling: SamplingParams
    stops: list[str] = field(default_factory=list)
    n: int = 1
    adapter: str | None = None  # a LoRA adapter's name; None: the base model
