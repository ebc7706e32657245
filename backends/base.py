"""The Backend protocol and the helpers that build OpenAI chunks and completions.

A backend produces one stream of ``ChatCompletionChunk`` per request, always ending with a
usage chunk (``choices == []``). ``stream_for_client`` drops that chunk unless the client
asked for it; ``collect_completion`` folds the same stream into a non-streaming answer, so
every engine implements generation once.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from backends.errors import InternalError, UnsupportedParameterError
from backends.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    FinishReason,
    MessageToolCall,
    TokenLogprob,
    ToolCallDelta,
    ToolCallFunction,
    Usage,
)

# "degraded": an upstream is unreachable; the gateway still serves (fallbacks, other models).
HealthStatus = Literal["ok", "degraded", "loading", "unloaded", "error"]


@dataclass(frozen=True)
class Health:
    status: HealthStatus
    detail: str | None = None


@dataclass
class ServedBy:
    """Who served a request, for the response headers: set by the gateway per request (see
    ``served_by``), filled in by the backend that answered (the upstream replica, if any)."""

    model: str | None = None
    replica: str | None = None


served_by: ContextVar[ServedBy | None] = ContextVar("served_by", default=None)


@dataclass(frozen=True, slots=True)
class EncodedChunk:
    """A chat.completion.chunk already encoded as JSON in the client's terms: an upstream's
    bytes relayed without a decode/validate/encode round trip."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EncodedCompletion:
    """A whole chat.completion already encoded as JSON in the client's terms (relayed)."""

    data: bytes


StreamItem = ChatCompletionChunk | EncodedChunk


@runtime_checkable
class Backend(Protocol):
    """What the router needs from an engine or an upstream.

    ``load``/``unload`` are idempotent and do blocking work off the event loop. ``stream``
    returns an async iterator; closing it (``aclose``) stops generation promptly. Methods raise
    only ``backends.errors`` exceptions.
    """

    model: str
    kind: str

    @property
    def loaded(self) -> bool: ...

    async def load(self) -> None: ...

    async def unload(self) -> None: ...

    async def health(self) -> Health: ...

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion | EncodedCompletion: ...

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamItem]: ...

    async def aclose(self) -> None: ...


def text_content(index: int, message: ChatMessage, backend: str) -> str:
    """A message's content as one string (text parts concatenated, as OpenAI does); a
    non-text part raises ``UnsupportedParameterError`` naming ``messages[index].content``."""
    texts: list[str] = []
    for part in message.text_parts():
        text = getattr(part, "text", None)
        if part.type != "text" or text is None:
            raise UnsupportedParameterError(
                f"content parts of type '{part.type}' are not supported by the {backend} "
                "backend (text only)",
                param=f"messages[{index}].content",
            )
        texts.append(text)
    return "".join(texts)


def plain_messages(messages: list[ChatMessage], backend: str) -> list[dict[str, Any]]:
    """The chat history as the plain dicts chat templates take (``developer`` becomes
    ``system``); content parts other than text and assistant ``tool_calls`` raise
    ``UnsupportedParameterError`` naming the message."""
    plain: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if message.tool_calls:
            raise UnsupportedParameterError(
                f"assistant tool_calls in the history are not supported by the {backend} backend",
                param=f"messages[{index}].tool_calls",
            )
        role = "system" if message.role == "developer" else message.role
        item: dict[str, Any] = {"role": role, "content": text_content(index, message, backend)}
        if message.name:
            item["name"] = message.name
        if message.tool_call_id:
            item["tool_call_id"] = message.tool_call_id
        plain.append(item)
    return plain


def refuse_tools(request: ChatCompletionRequest, backend: str) -> None:
    """Raise ``UnsupportedParameterError`` if ``request`` needs tool calling."""
    if request.tools and request.tool_choice != "none":
        raise UnsupportedParameterError(
            f"model '{request.model}' ({backend} backend) does not support tool calling; "
            "remove 'tools' or set tool_choice to 'none'",
            param="tools",
        )
    if isinstance(request.tool_choice, dict) or request.tool_choice == "required":
        raise UnsupportedParameterError(
            f"model '{request.model}' ({backend} backend) does not support tool calling",
            param="tool_choice",
        )


def new_completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


@dataclass
class ChunkBuilder:
    """Builds the chunks of one response; all share ``id``, ``created`` and ``model``."""

    model: str
    id: str = field(default_factory=new_completion_id)
    created: int = field(default_factory=lambda: int(time.time()))

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )

    def role(self, index: int = 0) -> ChatCompletionChunk:
        delta = Delta(role="assistant", content="")
        return self._chunk([ChunkChoice(index=index, delta=delta)])

    def content(
        self, text: str, index: int = 0, logprobs: list[TokenLogprob] | None = None
    ) -> ChatCompletionChunk:
        lp = ChoiceLogprobs(content=logprobs) if logprobs is not None else None
        return self._chunk([ChunkChoice(index=index, delta=Delta(content=text), logprobs=lp)])

    def finish(self, reason: FinishReason, index: int = 0) -> ChatCompletionChunk:
        return self._chunk([ChunkChoice(index=index, delta=Delta(), finish_reason=reason)])

    def usage(self, prompt_tokens: int, completion_tokens: int) -> ChatCompletionChunk:
        return self._chunk([], Usage.of(prompt_tokens, completion_tokens))


async def stream_for_client(
    chunks: AsyncIterator[ChatCompletionChunk], include_usage: bool
) -> AsyncIterator[ChatCompletionChunk]:
    """Relay ``chunks``, dropping the trailing usage chunk unless the client asked for it.
    Closing this iterator closes ``chunks``."""
    try:
        async for chunk in chunks:
            if chunk.usage is not None and not chunk.choices and not include_usage:
                continue
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass
class _ToolCallAccumulator:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _ChoiceAccumulator:
    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None
    tool_calls: dict[int, _ToolCallAccumulator] = field(default_factory=dict)

    def add_tool_calls(self, deltas: list[ToolCallDelta]) -> None:
        for delta in deltas:
            call = self.tool_calls.setdefault(delta.index, _ToolCallAccumulator())
            call.id = delta.id or call.id
            if delta.function is not None:
                call.name = delta.function.name or call.name
                if delta.function.arguments:
                    call.arguments.append(delta.function.arguments)

    def message(self) -> AssistantMessage:
        calls = [
            MessageToolCall(
                id=call.id,
                function=ToolCallFunction(name=call.name, arguments="".join(call.arguments)),
            )
            for _, call in sorted(self.tool_calls.items())
        ]
        text = "".join(self.text)
        return AssistantMessage(
            content=text if text or not calls else None, tool_calls=calls or None
        )


async def collect_completion(chunks: AsyncIterator[ChatCompletionChunk]) -> ChatCompletion:
    """Fold a backend's chunk stream (which ends with a usage chunk) into one completion."""
    choices: dict[int, _ChoiceAccumulator] = {}
    usage: Usage | None = None
    first: ChatCompletionChunk | None = None
    try:
        async for chunk in chunks:
            first = first or chunk
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                acc = choices.setdefault(choice.index, _ChoiceAccumulator())
                if choice.delta.content:
                    acc.text.append(choice.delta.content)
                if choice.delta.tool_calls:
                    acc.add_tool_calls(choice.delta.tool_calls)
                if choice.logprobs is not None and choice.logprobs.content is not None:
                    acc.logprobs = (acc.logprobs or []) + choice.logprobs.content
                if choice.finish_reason is not None:
                    acc.finish_reason = choice.finish_reason
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    if first is None or usage is None:
        raise InternalError("backend stream ended without a usage chunk")
    return ChatCompletion(
        id=first.id,
        created=first.created,
        model=first.model,
        system_fingerprint=first.system_fingerprint,
        choices=[
            Choice(
                index=index,
                message=acc.message(),
                finish_reason=acc.finish_reason,
                logprobs=ChoiceLogprobs(content=acc.logprobs) if acc.logprobs is not None else None,
            )
            for index, acc in sorted(choices.items())
        ],
        usage=usage,
    )
