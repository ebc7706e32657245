"""A request in in-process engine terms, and the checks that need no engine thread.

``check_request`` refuses what an engine cannot do (by capability, before the model loads);
``make_plan`` resolves sampling, checks ``logit_bias`` against the vocabulary and the token
budget against the context window, once for both engines. Both run before a request queues,
so a bad request never waits behind another user's generation. No torch, no llama_cpp.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from backends.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    UnsupportedParameterError,
)
from backends.requests import GenerationRequest, OutputConstraint, TextPart


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
    constraint: OutputConstraint | None = None
    compiled_constraint: Any = None  # the engine's own form of ``constraint`` (a grammar)
    adapter: str | None = None  # a LoRA adapter's name; None: the base model


def check_request(request: GenerationRequest, kind: str, constraints: bool) -> None:
    """Refuse, by field name, what an in-process engine of ``kind`` cannot do; needs no model."""
    if request.wants_tools:
        raise UnsupportedParameterError(
            f"model '{request.model}' ({kind} backend) does not support tool calling; "
            "remove 'tools' or set tool_choice to 'none'",
            param="tools",
        )
    if request.tool_choice is not None and request.tool_choice.mode in ("required", "function"):
        raise UnsupportedParameterError(
            f"model '{request.model}' ({kind} backend) does not support tool calling",
            param="tool_choice",
        )
    if request.constraint is not None and not constraints:
        raise UnsupportedParameterError(
            f"model '{request.model}' ({kind} backend) cannot constrain its output "
            "(response_format); serve it with an engine that can, or drop the field",
            param="response_format",
        )
    constraint = request.constraint
    if constraint is not None and constraint.kind == "grammar" and not constraint.grammar:
        raise InvalidRequestError("a grammar constraint needs a grammar", param="response_format")
    for name, value in (
        ("echo", request.echo or None),
        ("repetition_penalty", request.sampling.repetition_penalty),
        ("reasoning", request.reasoning or None),
    ):
        if value is not None:
            raise UnsupportedParameterError(
                f"'{name}' is not supported by the {kind} backend yet", param=name
            )
    for index, message in enumerate(request.messages):
        if message.text() is None:
            other = next(p.type for p in message.content if not isinstance(p, TextPart))
            raise UnsupportedParameterError(
                f"content parts of type '{other}' are not supported by the {kind} backend "
                "(text only)",
                param=f"messages[{index}].content",
            )
        if message.tool_calls:
            raise UnsupportedParameterError(
                f"assistant tool_calls in the history are not supported by the {kind} backend",
                param=f"messages[{index}].tool_calls",
            )


def template_messages(request: GenerationRequest) -> list[dict[str, Any]]:
    """The chat history as the plain dicts Jinja chat templates take (after ``check_request``)."""
    plain: list[dict[str, Any]] = []
    for message in request.messages:
        item: dict[str, Any] = {"role": message.role, "content": message.text() or ""}
        if message.name:
            item["name"] = message.name
        if message.tool_call_id:
            item["tool_call_id"] = message.tool_call_id
        plain.append(item)
    return plain


def template_rejected(model: str, error: Exception) -> InvalidRequestError:
    """The 400 for a chat template that refused the messages (a Jinja error, or the template's
    own ``raise_exception``, e.g. roles that do not alternate)."""
    return InvalidRequestError(
        f"the chat template of model '{model}' rejected these messages: {error}", param="messages"
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
    for token_id in request.sampling.logit_bias:
        if not 0 <= token_id < limits.vocab_size:
            raise InvalidRequestError(
                f"logit_bias token id {token_id} is outside the vocabulary "
                f"(0..{limits.vocab_size - 1})",
                param="logit_bias",
            )
    return GenerationPlan(
        prompt=prompt,
        max_new_tokens=token_budget(len(prompt), request.max_tokens, limits.context_window),
        sampling=resolve_sampling(request, limits.sampling_defaults, limits.default_seed),
        stops=tuple(s for s in request.stop if s),
        n=request.n,
        constraint=request.constraint,
        adapter=adapter,
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


def token_budget(prompt_len: int, requested: int | None, context: int) -> int:
    """How many tokens may be generated; ``ContextLengthExceededError`` when they do not fit."""
    if requested is not None and prompt_len + requested > context:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_len + requested} tokens ({prompt_len} in the messages, {requested} in the "
            "completion). Please reduce the length of the messages or completion.",
            param="messages",
        )
    if prompt_len >= context:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {context} tokens. However, your messages "
            f"resulted in {prompt_len} tokens. Please reduce the length of the messages.",
            param="messages",
        )
    return requested if requested is not None else context - prompt_len
