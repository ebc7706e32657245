"""An upstream Ollama server over its native ``POST /api/chat`` (NDJSON) — ``POST /api/generate``
with ``raw: true`` for a raw prompt — not its /v1 layer (which pins temperature/top_p, cannot
set ``num_ctx`` and ignores ``max_completion_tokens``).

The translation is pure functions with table tests: ``to_ollama_request`` (a
``GenerationRequest`` -> Ollama body), ``ollama_error`` (status + body -> error tree, through
``backends.upstream.statuses``), and ``OllamaLines`` (Ollama lines -> events). Ollama cannot
force a tool call, so ``tool_choice`` "required" or a named function goes as a ``format`` schema
of the call and its JSON answer becomes the call (``backends.upstream.forced_call``).
Capabilities come from ``POST /api/show``. Embeddings go to ``POST /api/embed``
(``backends.upstream.ollama_embed``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

from backends.embeddings import EmbeddingRequest, EmbeddingResult
from backends.errors import (
    GatewayError,
    InvalidRequestError,
    UnsupportedParameterError,
    UpstreamError,
)
from backends.events import (
    Event,
    Finished,
    FinishReason,
    ReasoningDelta,
    Started,
    TextDelta,
    ToolCallDelta,
    Usage,
    new_call_id,
)
from backends.model_types import ModelCapabilities
from backends.protocol import EventStream, OpenStream
from backends.requests import GenerationRequest, Message, TextPart, ToolCall
from backends.upstream.base import UpstreamBackend
from backends.upstream.capabilities import ollama_capabilities
from backends.upstream.client import Deadline
from backends.upstream.forced_call import ForcedCallReader, forced_call_schema, forces_call
from backends.upstream.ollama_embed import from_ollama_embed_reply, to_ollama_embed_request
from backends.upstream.settings import OllamaSettings
from backends.upstream.statuses import UpstreamReply, status_error


def to_ollama_request(
    request: GenerationRequest, settings: OllamaSettings, stream: bool
) -> dict[str, Any]:
    """The ``/api/chat`` body for ``request`` (``/api/generate`` for a raw prompt: see
    ``ollama_path``); refuses what Ollama cannot do, by name."""
    _refuse_unsupported(request)
    body: dict[str, Any] = {"model": settings.remote_model}
    if request.prompt is not None:
        body.update(prompt=request.prompt, raw=True)  # no template: the prompt as written
    else:
        body["messages"] = _ollama_messages(request.messages)
    # Ollama cuts an over-long prompt by default: only when the client's surface asked for it
    # (the Ollama surface); the others fail it, as they do in-process.
    body.update(stream=stream, truncate=request.truncate_prompt)
    options = _ollama_options(request, settings)
    if options:
        body["options"] = options
    if settings.keep_alive is not None:
        body["keep_alive"] = settings.keep_alive
    forced = forced_call_schema(request, "the ollama backend")
    if forced is not None:
        body["format"] = forced  # a call is forced by its schema; tools still go along
    elif request.constraint is not None:
        schema = request.constraint.schema
        body["format"] = dict(schema) if schema else "json"
    if request.wants_tools:
        body["tools"] = [_ollama_tool(tool) for tool in request.tools]
    if request.reasoning is not None:
        body["think"] = request.reasoning
    return body


def ollama_path(request: GenerationRequest) -> str:
    return "/api/generate" if request.is_raw else "/api/chat"


def _refuse_unsupported(request: GenerationRequest) -> None:
    refusals = (
        (bool(request.sampling.logit_bias), "logit_bias", "'logit_bias' is not supported"),
        (request.logprobs, "logprobs", "'logprobs' is not supported"),
        (request.n > 1, "n", "only one choice (n=1) is supported"),
        (
            isinstance(request.prompt, tuple),
            "prompt",
            "token-id prompts are not supported (Ollama takes text); send the prompt as text",
        ),
        (
            request.constraint is not None and request.constraint.kind == "grammar",
            "response_format",
            "output cannot be constrained to a grammar",
        ),
    )
    for refused, param, what in refusals:
        if refused:
            raise UnsupportedParameterError(f"ollama backend: {what}", param=param)


def _ollama_options(request: GenerationRequest, settings: OllamaSettings) -> dict[str, Any]:
    """Ollama's ``options``: only what the client (or the model entry) set."""
    s = request.sampling
    named = {
        "num_predict": request.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k,
        "min_p": s.min_p,
        "seed": s.seed,
        "stop": list(request.stop) or None,
        "presence_penalty": s.presence_penalty,
        "frequency_penalty": s.frequency_penalty,
        "repeat_penalty": s.repetition_penalty,
        "num_ctx": settings.num_ctx or request.num_ctx,  # the entry's window wins
    }
    return {key: value for key, value in named.items() if value is not None}


def _ollama_tool(tool: Any) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.parameters is not None:
        function["parameters"] = dict(tool.parameters)
    return {"type": "function", "function": function}


def _ollama_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    # A tool result names its tool for Ollama's templates; OpenAI clients send only the id of
    # the call it answers, so the name comes from that call earlier in the history.
    names: dict[str, str] = {}
    out = []
    for index, message in enumerate(messages):
        names.update((call.id, call.name) for call in message.tool_calls)
        tool_name = message.name or names.get(message.tool_call_id or "")
        out.append(_ollama_message(index, message, tool_name))
    return out


def _ollama_message(index: int, message: Message, tool_name: str | None) -> dict[str, Any]:
    text = message.text()
    if text is None:
        kind = next(p.type for p in message.content if not isinstance(p, TextPart))
        raise UnsupportedParameterError(
            f"content parts of type '{kind}' are not supported by the ollama backend (text only)",
            param=f"messages[{index}].content",
        )
    result: dict[str, Any] = {"role": message.role, "content": text}
    if message.tool_calls:
        result["tool_calls"] = [
            {"function": {"name": call.name, "arguments": _arguments_object(index, call)}}
            for call in message.tool_calls
        ]
    if message.role == "tool" and tool_name:
        result["tool_name"] = tool_name
    if message.reasoning:
        result["thinking"] = message.reasoning
    return result


def _arguments_object(index: int, call: ToolCall) -> dict[str, Any]:
    """Ollama takes a call's arguments as an object, not as the JSON text OpenAI sends."""
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise InvalidRequestError(
            f"tool call arguments must be a JSON object, got {call.arguments!r}",
            param=f"messages[{index}].tool_calls",
        )
    return arguments


def ollama_error(status: int, body: bytes, model: str = "", remote: str = "") -> GatewayError:
    """Map an Ollama error reply (``{"error": "text"}``) onto the error tree."""
    text = _error_text(body)
    context = status == 400 and "context" in text and ("exceed" in text or "too long" in text)
    if context:
        message = _context_message(text)
    elif status == 400:
        message = f"upstream ollama rejected the request: {text}"
    else:
        message = text
    return status_error(
        UpstreamReply(status, message, context_exceeded=context),
        model=model,
        upstream="upstream ollama",
        missing=f"the upstream ollama has no model '{remote}'; run `ollama pull {remote}` there",
    )


def _error_text(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="replace").strip()[:500] or "no detail"
    error = data.get("error") if isinstance(data, dict) else None
    return str(error if error is not None else data)[:1000]


def _context_message(text: str) -> str:
    # Ollama nests the runner's JSON error as a string: unwrap it when it is there.
    try:
        inner = json.loads(text)["error"]
        return (
            f"This model's context window is {inner['n_ctx']} tokens, but the messages need "
            f"{inner['n_prompt_tokens']} tokens. Shorten the messages or raise num_ctx."
        )
    except (ValueError, KeyError, TypeError):
        return f"the messages do not fit the model's context window: {text}"


class OllamaLines:
    """Turns Ollama's chat (or generate) lines into events (one instance per response).

    ``forced``: the answer is a tool call forced through ``format`` (``forced_call``), read
    into the call's deltas as it streams — unless Ollama parsed the call itself, whose
    ``tool_calls`` are used then. ``one_call``: only the first call is kept (the client set
    ``parallel_tool_calls: false``)."""

    def __init__(self, forced: bool = False, one_call: bool = False) -> None:
        self.tool_calls = 0  # calls Ollama returned
        self.content_pieces = 0
        self._forced = ForcedCallReader("upstream ollama") if forced else None
        self._one_call = one_call

    @classmethod
    def for_request(cls, request: GenerationRequest) -> OllamaLines:
        return cls(forces_call(request), request.parallel_tool_calls is False)

    def feed(self, line: dict[str, Any]) -> list[Event]:
        """Events for one line (error lines never get here: ``ndjson_lines`` raises on them)."""
        out: list[Event] = []
        message = line.get("message") or {}
        thinking = message.get("thinking") or line.get("thinking")
        if thinking:
            out.append(ReasoningDelta(0, thinking))
        content = message.get("content") or line.get("response")  # /api/chat or /api/generate
        if content:
            self.content_pieces += 1
            if self._forced is None:
                out.append(TextDelta(0, content))
            elif not self.tool_calls:
                out += self._forced.feed(content)
        for call in message.get("tool_calls") or []:
            if (self._one_call and self.tool_calls) or (self._forced and self._forced.started):
                continue
            out.append(self._call(call))
        if line.get("done"):
            truncated = line.get("done_reason") == "length"
            forced_call = False
            if self._forced is not None and not self.tool_calls:
                out += self._forced.end(truncated)
                forced_call = self._forced.complete
            reason: FinishReason = "length" if truncated else "stop"
            out.append(Finished(0, "tool_calls" if self.tool_calls or forced_call else reason))
            prompt = line.get("prompt_eval_count")
            completion = line.get("eval_count")
            out.append(
                Usage(
                    int(prompt) if prompt is not None else 0,
                    int(completion) if completion is not None else self.content_pieces,
                )
            )
        return out

    def _call(self, call: dict[str, Any]) -> ToolCallDelta:
        function = call.get("function") or {}
        arguments = function.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        delta = ToolCallDelta(
            0, self.tool_calls, call.get("id") or new_call_id(), function.get("name", ""), arguments
        )
        self.tool_calls += 1
        return delta


async def ndjson_lines(lines: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """Ollama's NDJSON lines, parsed; an ``{"error": ...}`` line (Ollama sends them inside a
    200 stream) raises ``UpstreamError`` — before the first line, that is retryable."""
    async for raw in lines:
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except ValueError as exc:
            text = raw[:200].decode(errors="replace")
            raise UpstreamError(f"upstream ollama sent a line that is not JSON: {text!r}") from exc
        if not isinstance(value, dict):
            raise UpstreamError("upstream ollama sent an unexpected line")
        if "error" in value:
            raise UpstreamError(f"upstream ollama failed: {value['error']}")
        yield value


class OllamaBackend(UpstreamBackend):
    """A model served by one or more Ollama replicas.

    ``generate`` raises ``BackendUnavailableError`` (all replicas down),
    ``BackendTimeoutError``, ``UpstreamError`` (upstream 5xx or a broken stream),
    ``ContextLengthExceededError`` and ``UnsupportedParameterError`` (400s). Closing the
    stream closes the upstream request.
    """

    kind = "ollama"
    health_path = "/api/version"

    def __init__(self, settings: OllamaSettings, base_dir: Path | None = None) -> None:
        super().__init__(settings, base_dir)
        self.settings = settings

    def map_status(self, status: int, body: bytes) -> GatewayError:
        return ollama_error(status, body, self.model, self.settings.remote_model)

    async def ask_capabilities(self) -> ModelCapabilities | None:
        show = await self.client.fetch_json(
            "POST", "/api/show", {"model": self.settings.remote_model}
        )
        return ollama_capabilities(show, self.settings.num_ctx)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Embed through ``/api/embed`` (``backends.protocol.Embedder``); one request, retried on
        another replica like any other before it answers."""
        if self.settings.task != "embed":
            raise InvalidRequestError(
                f"model '{self.model}' is a text-generation model: it makes no embeddings "
                "(serve an embedding model with `task: embed`)",
                param="model",
                code="model_not_supported",
            )
        body = to_ollama_embed_request(request, self.settings)
        if not self.client.started:
            await self.load()
        deadline = Deadline(self.settings.timeouts.total)
        reply = await self.client.request_json("/api/embed", body, deadline)
        return from_ollama_embed_reply(reply.data, len(request.inputs), reply.replica.url)

    async def generate(self, request: GenerationRequest) -> EventStream:
        body = to_ollama_request(request, self.settings, stream=True)
        upstream, deadline = await self.open(ollama_path(request), body, ndjson_lines)
        lines = self.items(upstream, deadline, "upstream ollama ended the stream early")
        events = self._events(lines, OllamaLines.for_request(request))
        return OpenStream(events, replica=upstream.replica, cleanup=upstream.aclose)

    @staticmethod
    async def _events(
        lines: AsyncGenerator[dict[str, Any], None], parser: OllamaLines
    ) -> AsyncIterator[Event]:
        try:
            yield Started(0)
            async for line in lines:
                for event in parser.feed(line):
                    yield event
                if line.get("done"):
                    break
        finally:
            await lines.aclose()
