"""A request in in-process engine terms, and the checks that need no engine thread.

``check_request`` refuses what an engine cannot do (by capability, before the model loads);
``make_plan`` resolves sampling, checks ``logit_bias`` against the vocabulary and the token
budget against the context window, once for both engines. Both run before a request queues,
so a bad request never waits behind another user's generation. No torch, no llama_cpp.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from backends.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    UnsupportedParameterError,
)
from backends.local.output import OutputSpec
from backends.requests import GenerationRequest, TextPart

if TYPE_CHECKING:
    from backends.local.grammar import CompiledGrammar


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

    def for_choice(self, index: int) -> SamplingParams:
        """The settings of choice ``index`` of ``n``: its own seed, so choices differ."""
        if self.seed is None or index == 0:
            return self
        return replace(self, seed=self.seed + index)


@dataclass(frozen=True)
class EngineLimits:
    """What a loaded engine can serve: its window, its vocabulary, its defaults and features."""

    context_window: int
    vocab_size: int
    sampling_defaults: Mapping[str, float]  # for unset knobs: temperature, top_p, top_k, min_p
    default_seed: int | None = None
    max_n: int = 16


@dataclass(frozen=True)
class GenerationPlan:
    """One request ready for an engine thread: ``n`` choices continuing one tokenized prompt."""

    prompt: list[int]
    max_new_tokens: int
    sampling: SamplingParams
    stops: tuple[str, ...] = ()
    n: int = 1
    adapter: str | None = None  # a LoRA adapter's name; None: the base model
    spec: OutputSpec = field(default_factory=OutputSpec)  # how the output is read
    grammar: CompiledGrammar | None = None  # what decoding is constrained to
    visible: frozenset[int] = frozenset()  # special tokens shown as text (the spec's markers)


def check_request(request: GenerationRequest, kind: str) -> None:
    """Refuse, by field name, what an in-process engine of ``kind`` cannot do; needs no model."""
    constraint = request.constraint
    if constraint is not None and constraint.kind == "grammar" and not constraint.grammar:
        raise InvalidRequestError("a grammar constraint needs a grammar", param="response_format")
    if request.sampling.repetition_penalty is not None:
        raise UnsupportedParameterError(
            f"'repetition_penalty' is not supported by the {kind} backend yet",
            param="repetition_penalty",
        )
    for index, message in enumerate(request.messages):
        if message.text() is None:
            other = next(p.type for p in message.content if not isinstance(p, TextPart))
            raise UnsupportedParameterError(
                f"content parts of type '{other}' are not supported by the {kind} backend "
                "(text only)",
                param=f"messages[{index}].content",
            )


def make_plan(
    request: GenerationRequest,
    prompt: list[int],
    limits: EngineLimits,
    adapter: str | None = None,
) -> GenerationPlan:
    """Resolve ``request`` against a loaded engine's ``limits``. Raises
    ``ContextLengthExceededError``, ``InvalidRequestError`` (token ids outside the vocabulary)
    and ``UnsupportedParameterError`` (``n`` above what the engine decodes at once)."""
    if request.n > limits.max_n:
        raise UnsupportedParameterError(
            f"n={request.n} is more than this model decodes at once ({limits.max_n})", param="n"
        )
    if isinstance(request.prompt, tuple):
        _check_prompt_ids(request.prompt, limits.vocab_size)
    for token_id in request.sampling.logit_bias:
        if not 0 <= token_id < limits.vocab_size:
            raise InvalidRequestError(
                f"logit_bias token id {token_id} is outside the vocabulary "
                f"(0..{limits.vocab_size - 1})",
                param="logit_bias",
            )
    return GenerationPlan(
        prompt=prompt,
        max_new_tokens=token_budget(
            len(prompt),
            request.max_tokens,
            limits.context_window,
            "prompt" if request.is_raw else "messages",
            fit=request.max_tokens_fits_window,
        ),
        sampling=resolve_sampling(request, limits.sampling_defaults, limits.default_seed),
        stops=tuple(s for s in request.stop if s),
        n=request.n,
        adapter=adapter,
    )


def _check_prompt_ids(ids: tuple[int, ...], vocab_size: int) -> None:
    if not ids:
        raise InvalidRequestError("the prompt has no token ids", param="prompt")
    bad = next((t for t in ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise InvalidRequestError(
            f"the prompt has token id {bad}, outside this model's vocabulary "
            f"(0..{vocab_size - 1}); token ids are the model's own, not tiktoken's",
            param="prompt",
        )


def resolve_sampling(
    request: GenerationRequest, defaults: Mapping[str, float], seed: int | None
) -> SamplingParams:
    """The request's sampling settings; unset ones come from ``defaults`` (the engine's or the
    model's own), then OpenAI's (temperature 1, top_p 1, no top_k / min_p)."""
    s = request.sampling

    def pick(value: float | None, key: str, fallback: float) -> float:
        return value if value is not None else defaults.get(key, fallback)

    top_k = s.top_k if s.top_k is not None else int(defaults.get("top_k", 0))
    return SamplingParams(
        temperature=pick(s.temperature, "temperature", 1.0),
        top_p=pick(s.top_p, "top_p", 1.0),
        top_k=max(top_k, 0),
        min_p=pick(s.min_p, "min_p", 0.0),
        presence_penalty=s.presence_penalty or 0.0,
        frequency_penalty=s.frequency_penalty or 0.0,
        logit_bias=dict(s.logit_bias),
        seed=s.seed if s.seed is not None else seed,
        logprobs=request.logprobs,
        top_logprobs=request.top_logprobs,
    )


def token_budget(
    prompt_len: int,
    requested: int | None,
    context: int,
    field: str = "messages",
    fit: bool = False,
) -> int:
    """How many tokens may be generated; ``ContextLengthExceededError`` (naming ``field``, the
    request's ``messages`` or raw ``prompt``) when they do not fit. With ``fit``, ``requested``
    is a cap: what does not fit is cut to the room the prompt leaves."""
    if fit and requested is not None:  # the prompt alone too long: said below
        requested = min(requested, context - prompt_len) if prompt_len < context else None
    if requested is not None and prompt_len + requested > context:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_len + requested} tokens ({prompt_len} in the {field}, {requested} in the "
            f"completion). Please reduce the length of the {field} or completion.",
            # the token limit alone leaves no room for any prompt: it is what to change
            param="max_tokens" if requested >= context else field,
        )
    if prompt_len >= context:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {context} tokens. However, your {field} "
            f"resulted in {prompt_len} tokens. Please reduce the length of the {field}.",
            param=field,
        )
    return requested if requested is not None else context - prompt_len
