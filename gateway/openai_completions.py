"""The OpenAI completions surface's translator (``POST /v1/completions``): a raw prompt that
bypasses the chat template. A ``CompletionRequest`` becomes one ``GenerationRequest`` per
prompt; their events become ``text_completion`` chunks or one ``text_completion`` — or, for a
backend that relays OpenAI, the upstream's own bytes (docs/architecture.md, "The relay").

Choices are numbered as OpenAI numbers them: prompt ``i``'s choice ``j`` is ``i * n + j``.
``echo`` is done here, once for every backend: the prompt is the start of each choice's text.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

from backends import events as ev
from backends.completion_types import (
    DEFAULT_MAX_TOKENS,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
)
from backends.errors import InternalError, InvalidRequestError, UnsupportedParameterError
from backends.openai_types import Usage
from backends.protocol import Backend, EventStream, Relayed
from backends.requests import GenerationRequest, Sampling
from gateway.dispatch import Primed, prime, relays
from gateway.event_merge import merge_events, open_all

# -- request -------------------------------------------------------------------------------


def to_generation_requests(body: CompletionRequest) -> list[GenerationRequest]:
    """One core request per prompt; refuses, by name, what only an OpenAI upstream serves."""
    _refuse_unsupported(body)
    sampling = Sampling(
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        min_p=body.min_p,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logit_bias={int(k): v for k, v in (body.logit_bias or {}).items()},
        seed=body.seed,
    )
    return [
        GenerationRequest(
            model=body.model,
            prompt=prompt,
            max_tokens=DEFAULT_MAX_TOKENS if body.max_tokens is None else body.max_tokens,
            sampling=sampling,
            stop=tuple(body.stop_sequences),
            n=body.n or 1,
            logprobs=body.logprobs is not None,
            top_logprobs=body.logprobs or 0,
            user=body.user,
            extras=dict(body.model_extra or {}),
        )
        for prompt in _prompts(body)
    ]


def _refuse_unsupported(body: CompletionRequest) -> None:
    refusals = (
        (body.suffix, "suffix", "'suffix' (fill-in-the-middle) is not supported by this model"),
        (
            body.best_of not in (None, body.n or 1),
            "best_of",
            "'best_of' larger than n is not supported by this model",
        ),
        (
            body.echo and body.logprobs is not None,
            "echo",
            "'echo' with 'logprobs' needs the prompt's log-probabilities, which this model's "
            "backend does not return; send one or the other",
        ),
    )
    for refused, param, message in refusals:
        if refused:
            raise UnsupportedParameterError(message, param=param)
    if body.max_tokens == 0:
        raise InvalidRequestError(
            "max_tokens must be at least 1 (0 only makes sense with echo and prompt logprobs, "
            "which this model's backend does not return)",
            param="max_tokens",
        )


def _prompts(body: CompletionRequest) -> list[str | tuple[int, ...]]:
    """Each prompt: a text, or the model's own token ids (not echoed: there is no text)."""
    prompts = [p if isinstance(p, str) else tuple(p) for p in body.prompts]
    if body.echo and any(isinstance(p, tuple) for p in prompts):
        raise UnsupportedParameterError(
            "'echo' repeats the prompt's text, and a token-id prompt has none here; "
            "send the prompt as text to echo it",
            param="echo",
        )
    return prompts


# -- stream --------------------------------------------------------------------------------


def new_completion_id() -> str:
    return f"cmpl-{secrets.token_hex(12)}"


@dataclass
class _ChoiceText:
    """Where a choice's text has got to: the next token's ``text_offset``."""

    offset: int = 0


@dataclass
class CompletionChunks:
    """Builds the chunks of one response; all share ``id``, ``created`` and ``model``.
    ``echoes``: per choice index, the prompt to repeat first (empty: no echo)."""

    model: str
    echoes: dict[int, str] = field(default_factory=dict)
    id: str = field(default_factory=new_completion_id)
    created: int = field(default_factory=lambda: int(time.time()))
    _choices: dict[int, _ChoiceText] = field(default_factory=dict)

    def _chunk(self, choices: list[CompletionChoice], usage: Usage | None = None) -> Completion:
        return Completion(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )

    def start(self, index: int) -> Completion | None:
        """The echoed prompt of choice ``index``, if it has one."""
        echo = self.echoes.get(index, "")
        self._choices[index] = _ChoiceText(len(echo))
        return self._chunk([CompletionChoice(text=echo, index=index)]) if echo else None

    def text(self, delta: ev.TextDelta) -> Completion:
        state = self._choices.setdefault(delta.index, _ChoiceText())
        logprobs = None
        if delta.logprobs is not None:
            logprobs = legacy_logprobs(delta.logprobs, state.offset)
        state.offset += len(delta.text)
        return self._chunk(
            [CompletionChoice(text=delta.text, index=delta.index, logprobs=logprobs)]
        )

    def finish(self, index: int, reason: ev.FinishReason) -> Completion:
        return self._chunk([CompletionChoice(text="", index=index, finish_reason=reason)])

    def usage(self, usage: ev.Usage) -> Completion:
        return self._chunk([], Usage.of_event(usage))


def legacy_logprobs(logprobs: tuple[ev.TokenLogprob, ...], offset: int) -> CompletionLogprobs:
    """The legacy shape of ``logprobs``, the first token at ``offset`` in the choice's text.
    Each ``top_logprobs`` entry holds the most likely tokens and, as OpenAI documents, the
    sampled one too (so up to ``logprobs + 1`` entries)."""
    out = CompletionLogprobs()
    for lp in logprobs:
        out.tokens.append(lp.token)
        out.token_logprobs.append(lp.logprob)
        out.top_logprobs.append({**{t.token: t.logprob for t in lp.top}, lp.token: lp.logprob})
        out.text_offset.append(offset)
        offset += len(lp.token)
    return out


async def completion_chunks(
    events: AsyncIterator[ev.Event], builder: CompletionChunks, include_usage: bool
) -> AsyncGenerator[Completion, None]:
    """The chunk stream for ``events``: per choice its echo (if any), text deltas and a finish
    chunk; then usage only if asked. Closing it closes ``events``."""
    try:
        async for event in events:
            if isinstance(event, ev.TextDelta):
                yield builder.text(event)
            elif isinstance(event, ev.Started):
                echoed = builder.start(event.index)
                if echoed is not None:
                    yield echoed
            elif isinstance(event, ev.Finished):
                yield builder.finish(event.index, event.reason)
            elif isinstance(event, ev.Usage) and include_usage:
                yield builder.usage(event)
            # a raw prompt is never read for reasoning or tool calls: nothing else comes
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


# -- whole answer --------------------------------------------------------------------------


async def collect_completion(
    events: AsyncIterator[ev.Event], builder: CompletionChunks
) -> Completion:
    """Fold the chunks of ``events`` into one ``text_completion``."""
    texts: dict[int, list[str]] = {}
    logprobs: dict[int, CompletionLogprobs] = {}
    finish: dict[int, ev.FinishReason] = {}
    usage: Usage | None = None
    async for chunk in completion_chunks(events, builder, include_usage=True):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts.setdefault(choice.index, []).append(choice.text)
            if choice.logprobs is not None:
                _extend(logprobs.setdefault(choice.index, CompletionLogprobs()), choice.logprobs)
            if choice.finish_reason is not None:
                finish[choice.index] = choice.finish_reason
    if usage is None:
        raise InternalError("the backend's answer ended without usage")
    choices = [
        CompletionChoice(
            text="".join(parts),
            index=index,
            logprobs=logprobs.get(index),
            finish_reason=finish.get(index),
        )
        for index, parts in sorted(texts.items())
    ]
    return Completion(
        id=builder.id, created=builder.created, model=builder.model, choices=choices, usage=usage
    )


def _extend(into: CompletionLogprobs, more: CompletionLogprobs) -> None:
    into.tokens += more.tokens
    into.token_logprobs += more.token_logprobs
    into.top_logprobs += more.top_logprobs
    into.text_offset += more.text_offset


# -- serving -------------------------------------------------------------------------------


async def open_completion_stream(backend: Backend, body: CompletionRequest) -> Primed[bytes]:
    """Start ``backend`` on a streaming request: its chunk payloads, the first one arrived."""
    if relays(backend):
        relayed = await backend.relay_stream("/completions", body, body.include_usage)
        return await prime(relayed, relayed.replica)
    events, builder, replica = await _start(backend, body)
    chunks = completion_chunks(events, builder, body.include_usage)
    return await prime(_encoded(chunks), replica)


async def complete(backend: Backend, body: CompletionRequest) -> Relayed:
    """A non-streaming answer from ``backend``, as the JSON bytes the client gets."""
    if relays(backend):
        return await backend.relay("/completions", body)
    events, builder, replica = await _start(backend, body)
    completion = await collect_completion(events, builder)
    return Relayed(completion.model_dump_json().encode(), replica)


async def _start(
    backend: Backend, body: CompletionRequest
) -> tuple[AsyncIterator[ev.Event], CompletionChunks, str | None]:
    requests = to_generation_requests(body)
    n = body.n or 1
    streams: list[EventStream] = await open_all(backend, requests)
    echoes = {}
    if body.echo:
        texts = [r.prompt if isinstance(r.prompt, str) else "" for r in requests]
        echoes = {i * n + j: text for i, text in enumerate(texts) for j in range(n)}
    builder = CompletionChunks(model=body.model, echoes=echoes)
    return merge_events(streams, n), builder, streams[0].replica


async def _encoded(chunks: AsyncGenerator[Completion, None]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk.model_dump_json().encode()
    finally:
        await chunks.aclose()
