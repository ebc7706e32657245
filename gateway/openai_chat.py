"""The OpenAI chat surface's translator: a backend's events into ``chat.completion.chunk``s or
one ``chat.completion`` — or, for a backend that relays OpenAI chat, the upstream's own bytes
(docs/architecture.md, "The relay"). The request side is ``gateway.openai_chat_request``; the
routes are in ``gateway.api``."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

from backends import events as ev
from backends.errors import InternalError
from backends.openai_types import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    MessageToolCall,
    TokenLogprob,
    ToolCallDelta,
    ToolCallFunction,
    ToolCallFunctionDelta,
    TopLogprob,
    Usage,
)
from backends.protocol import Backend, Relayed
from gateway.dispatch import Primed, prime, relays
from gateway.openai_chat_request import to_generation_request
from gateway.openai_functions import wire_reason

# -- stream --------------------------------------------------------------------------------


def new_completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


@dataclass
class ChunkBuilder:
    """Builds the chunks of one response; all share ``id``, ``created`` and ``model``. With
    ``include_usage``, each has a ``usage`` field (null until the last chunk's). With
    ``functions`` (the deprecated API), the call is ``function_call`` deltas (the first call
    only) and its finish reason ``function_call``."""

    model: str
    include_usage: bool = False
    functions: bool = False
    id: str = field(default_factory=new_completion_id)
    created: int = field(default_factory=lambda: int(time.time()))
    _content_prefix: bytes | None = field(default=None, init=False, repr=False)

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        chunk = ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )
        return chunk.usage_in_every_chunk() if self.include_usage else chunk

    def _delta(self, index: int, delta: Delta) -> ChatCompletionChunk:
        return self._chunk([ChunkChoice(index=index, delta=delta)])

    def role(self, index: int = 0) -> ChatCompletionChunk:
        return self._delta(index, Delta(role="assistant", content=""))

    def content(
        self, text: str, index: int = 0, logprobs: list[TokenLogprob] | None = None
    ) -> ChatCompletionChunk:
        lp = ChoiceLogprobs(content=logprobs) if logprobs is not None else None
        return self._chunk([ChunkChoice(index=index, delta=Delta(content=text), logprobs=lp)])

    def reasoning(self, text: str, index: int = 0) -> ChatCompletionChunk:
        return self._delta(index, Delta(reasoning_content=text, reasoning=text))

    def tool_call(self, call: ev.ToolCallDelta) -> ChatCompletionChunk | None:
        if self.functions:
            if call.call != 0:
                return None
            function = ToolCallFunctionDelta(name=call.name, arguments=call.arguments)
            return self._delta(call.index, Delta(function_call=function))
        delta = ToolCallDelta(
            index=call.call,
            id=call.id,
            type="function" if call.id is not None else None,
            function=ToolCallFunctionDelta(name=call.name, arguments=call.arguments),
        )
        return self._delta(call.index, Delta(tool_calls=[delta]))

    def finish(self, reason: ev.FinishReason, index: int = 0) -> ChatCompletionChunk:
        wire = wire_reason(reason, self.functions)
        return self._chunk([ChunkChoice(index=index, delta=Delta(), finish_reason=wire)])

    def usage(self, usage: ev.Usage) -> ChatCompletionChunk:
        return self._chunk([], Usage.of_event(usage))

    def of(self, event: ev.Event) -> ChatCompletionChunk | None:
        """The chunk for ``event`` (None: usage, not asked for)."""
        if isinstance(event, ev.TextDelta):
            logprobs = wire_logprobs(event.logprobs) if event.logprobs is not None else None
            return self.content(event.text, event.index, logprobs)
        if isinstance(event, ev.Started):
            return self.role(event.index)
        if isinstance(event, ev.ToolCallDelta):
            return self.tool_call(event)
        if isinstance(event, ev.ReasoningDelta):
            return self.reasoning(event.text, event.index)
        if isinstance(event, ev.Finished):
            return self.finish(event.reason, event.index)
        if self.include_usage:
            return self.usage(event)
        return None

    def content_json(self, text: str, index: int = 0) -> bytes:
        """``content(text, index).model_dump_json()``'s bytes, from a template: a text delta
        is most of a stream's chunks, and building and dumping the model cost ~8x this."""
        prefix = self._content_prefix
        if prefix is None:
            model = json.dumps(self.model, ensure_ascii=False)
            prefix = self._content_prefix = (
                f'{{"id":{json.dumps(self.id)},"object":"chat.completion.chunk",'
                f'"created":{self.created},"model":{model},"choices":[{{"index":'
            ).encode()
        return b"".join(
            (
                prefix,
                str(index).encode(),
                b',"delta":{"content":',
                json.dumps(text, ensure_ascii=False).encode(),
                b'},"logprobs":null,"finish_reason":null}],"usage":null}'
                if self.include_usage
                else b'},"logprobs":null,"finish_reason":null}]}',
            )
        )


def wire_logprobs(logprobs: tuple[ev.TokenLogprob, ...]) -> list[TokenLogprob]:
    return [
        TokenLogprob(
            token=lp.token,
            logprob=lp.logprob,
            bytes=list(lp.bytes),
            top_logprobs=[
                TopLogprob(token=t.token, logprob=t.logprob, bytes=list(t.bytes)) for t in lp.top
            ],
        )
        for lp in logprobs
    ]


async def chunks_of(
    events: AsyncIterator[ev.Event], model: str, include_usage: bool, functions: bool = False
) -> AsyncGenerator[ChatCompletionChunk, None]:
    """The chunk stream for ``events`` (the README's order: role, deltas, finish, then usage only
    if asked). Closing it closes ``events``."""
    builder = ChunkBuilder(model=model, include_usage=include_usage, functions=functions)
    try:
        async for event in events:
            chunk = builder.of(event)
            if chunk is not None:
                yield chunk
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


async def encoded_chunks(
    events: AsyncIterator[ev.Event], model: str, include_usage: bool, functions: bool = False
) -> AsyncGenerator[bytes, None]:
    """``chunks_of``, each chunk as its JSON bytes; a text delta without logprobs (most of
    them) from ``ChunkBuilder.content_json``'s template. Closing it closes ``events``."""
    builder = ChunkBuilder(model=model, include_usage=include_usage, functions=functions)
    try:
        async for event in events:
            if isinstance(event, ev.TextDelta) and event.logprobs is None:
                yield builder.content_json(event.text, event.index)
                continue
            chunk = builder.of(event)
            if chunk is not None:
                yield chunk.model_dump_json().encode()
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


# -- whole answer --------------------------------------------------------------------------


@dataclass
class _ToolCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _Choice:
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: ev.FinishReason | None = None
    tool_calls: dict[int, _ToolCall] = field(default_factory=dict)

    def add(self, event: ev.Event) -> None:
        if isinstance(event, ev.TextDelta):
            self.text.append(event.text)
            if event.logprobs is not None:
                self.logprobs = (self.logprobs or []) + wire_logprobs(event.logprobs)
        elif isinstance(event, ev.ReasoningDelta):
            self.reasoning.append(event.text)
        elif isinstance(event, ev.ToolCallDelta):
            call = self.tool_calls.setdefault(event.call, _ToolCall())
            call.id = event.id or call.id
            call.name = event.name or call.name
            call.arguments.append(event.arguments)
        elif isinstance(event, ev.Finished):
            self.finish_reason = event.reason

    def choice(self, index: int, functions: bool = False) -> Choice:
        calls = [
            MessageToolCall(
                id=call.id,
                function=ToolCallFunction(name=call.name, arguments="".join(call.arguments)),
            )
            for _, call in sorted(self.tool_calls.items())
        ]
        text = "".join(self.text)
        reasoning = "".join(self.reasoning) or None
        message = AssistantMessage(
            content=text if text or not calls else None,
            reasoning_content=reasoning,
            reasoning=reasoning,
            tool_calls=None if functions else calls or None,
            function_call=calls[0].function if functions and calls else None,
        )
        logprobs = ChoiceLogprobs(content=self.logprobs) if self.logprobs is not None else None
        reason = wire_reason(self.finish_reason, functions)
        return Choice(index=index, message=message, finish_reason=reason, logprobs=logprobs)


async def collect_completion(
    events: AsyncIterator[ev.Event], model: str, functions: bool = False
) -> ChatCompletion:
    """Fold a backend's events (which end with ``Usage``) into one ``chat.completion``
    (``functions``: as ``ChunkBuilder`` says)."""
    choices: dict[int, _Choice] = {}
    usage: ev.Usage | None = None
    try:
        async for event in events:
            if isinstance(event, ev.Usage):
                usage = event
            else:
                choices.setdefault(event.index, _Choice()).add(event)
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    if usage is None:
        raise InternalError("the backend's answer ended without usage")
    return ChatCompletion(
        id=new_completion_id(),
        created=int(time.time()),
        model=model,
        choices=[acc.choice(index, functions) for index, acc in sorted(choices.items())],
        usage=Usage.of_event(usage),
    )


# -- serving -------------------------------------------------------------------------------


async def open_chat_stream(backend: Backend, body: ChatCompletionRequest) -> Primed[bytes]:
    """Start ``backend`` on a streaming request: its chunk payloads, the first one arrived."""
    if relays(backend):
        relayed = await backend.relay_stream("/chat/completions", body, body.include_usage)
        return await prime(relayed, relayed.replica)
    events = await backend.generate(to_generation_request(body))
    chunks = encoded_chunks(events, body.model, body.include_usage, body.legacy_functions)
    return await prime(chunks, events.replica)


async def complete_chat(backend: Backend, body: ChatCompletionRequest) -> Relayed:
    """A non-streaming answer from ``backend``, as the JSON bytes the client gets."""
    if relays(backend):
        # as sent: no translation, no re-encoding
        return await backend.relay("/chat/completions", body)
    events = await backend.generate(to_generation_request(body))
    completion = await collect_completion(events, body.model, body.legacy_functions)
    return Relayed(completion.model_dump_json().encode(), events.replica)
