"""An upstream Ollama server over its native ``POST /api/chat`` (NDJSON), not its /v1 layer
(which pins temperature/top_p, cannot set ``num_ctx`` and ignores ``max_completion_tokens``).

The translation is pure functions with table tests: ``to_ollama_request`` (OpenAI request ->
Ollama body), ``ollama_error`` (status + body -> error tree), and ``OllamaChunker`` (Ollama
lines -> OpenAI chunks). ``OllamaBackend`` wires them to an ``UpstreamClient``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from backends.base import (
    ChunkBuilder,
    StreamItem,
    collect_completion,
    stream_for_client,
    text_content,
)
from backends.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    RateLimitError,
    UnsupportedParameterError,
    UpstreamError,
)
from backends.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChunkChoice,
    Delta,
    FinishReason,
    ToolCallDelta,
    ToolCallFunctionDelta,
)
from backends.settings import OllamaSettings
from backends.upstream import Deadline, UpstreamBackend, next_event


def to_ollama_request(
    request: ChatCompletionRequest, settings: OllamaSettings, stream: bool
) -> dict[str, Any]:
    """The ``/api/chat`` body for ``request``; refuses what Ollama cannot do, by name."""
    for name in ("logit_bias", "logprobs"):
        if getattr(request, name):
            raise UnsupportedParameterError(
                f"'{name}' is not supported by the ollama backend", param=name
            )
    if (request.n or 1) > 1:
        raise UnsupportedParameterError("the ollama backend generates one choice (n=1)", param="n")
    if isinstance(request.tool_choice, dict) or request.tool_choice == "required":
        raise UnsupportedParameterError(
            "Ollama cannot force a tool call; use tool_choice 'auto' or 'none'", param="tool_choice"
        )
    options: dict[str, Any] = {}
    if request.max_new_tokens is not None:
        options["num_predict"] = request.max_new_tokens
    for key in ("temperature", "top_p", "top_k", "min_p", "seed"):
        value = getattr(request, key)
        if value is not None:
            options[key] = value
    if request.stop_sequences:
        options["stop"] = request.stop_sequences
    if request.presence_penalty is not None:
        options["presence_penalty"] = request.presence_penalty
    if request.frequency_penalty is not None:
        options["frequency_penalty"] = request.frequency_penalty
    if settings.num_ctx is not None:
        options["num_ctx"] = settings.num_ctx
    body: dict[str, Any] = {
        "model": settings.remote_model,
        "messages": [_ollama_message(i, m) for i, m in enumerate(request.messages)],
        "stream": stream,
        # Fail an over-long prompt instead of silently dropping the start of the history.
        "truncate": False,
    }
    if options:
        body["options"] = options
    if settings.keep_alive is not None:
        body["keep_alive"] = settings.keep_alive
    if request.response_format is not None and request.response_format.type != "text":
        spec = request.response_format.json_schema
        schema = spec.schema_ if spec is not None else None
        body["format"] = schema if schema else "json"
    if request.tools and request.tool_choice != "none":
        body["tools"] = [t.model_dump(exclude_none=True, by_alias=True) for t in request.tools]
    return body


def _ollama_message(index: int, message: ChatMessage) -> dict[str, Any]:
    role = "system" if message.role == "developer" else message.role
    result: dict[str, Any] = {"role": role, "content": text_content(index, message, "ollama")}
    if message.tool_calls:
        calls = []
        for call in message.tool_calls:
            try:
                arguments = json.loads(call.function.arguments or "{}")
            except ValueError as exc:
                raise InvalidRequestError(
                    f"tool call arguments are not JSON: {call.function.arguments!r}",
                    param=f"messages[{index}].tool_calls",
                ) from exc
            calls.append({"function": {"name": call.function.name, "arguments": arguments}})
        result["tool_calls"] = calls
    if message.role == "tool" and message.name:
        result["tool_name"] = message.name
    return result


def ollama_error(status: int, body: bytes, model: str = "", remote: str = "") -> GatewayError:
    """Map an Ollama error reply (``{"error": "text"}``) onto the error tree."""
    text = _error_text(body)
    if status == 400 and "context" in text and ("exceed" in text or "too long" in text):
        return ContextLengthExceededError(_context_message(text), param="messages")
    if status == 400:
        return InvalidRequestError(f"upstream ollama rejected the request: {text}")
    if status == 404:
        return ModelNotFoundError(
            f"model '{model}': the upstream ollama has no model '{remote}' ({text}); "
            f"run `ollama pull {remote}` there"
        )
    if status == 429:
        return RateLimitError(f"upstream ollama is rate limiting: {text}", retry_after=1)
    if status == 503:
        return BackendUnavailableError(f"upstream ollama is overloaded: {text}", retry_after=2)
    if status in (401, 403):
        return UpstreamError(f"upstream ollama refused our credentials ({status}): {text}")
    return UpstreamError(f"upstream ollama failed ({status}): {text}")


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


@dataclass
class OllamaChunker:
    """Turns Ollama's chat lines into OpenAI chunks (one instance per response)."""

    builder: ChunkBuilder
    tool_calls: int = 0
    content_pieces: int = 0
    usage: tuple[int, int] | None = field(default=None)

    def feed(self, line: dict[str, Any]) -> list[ChatCompletionChunk]:
        """Chunks for one line (error lines never get here: ``ndjson_lines`` raises on them)."""
        out: list[ChatCompletionChunk] = []
        message = line.get("message") or {}
        content = message.get("content")
        if content:
            self.content_pieces += 1
            out.append(self.builder.content(content))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            arguments = function.get("arguments", {})
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            delta = ToolCallDelta(
                index=self.tool_calls,
                id=call.get("id") or f"call_{secrets.token_hex(12)}",
                type="function",
                function=ToolCallFunctionDelta(name=function.get("name", ""), arguments=arguments),
            )
            self.tool_calls += 1
            out.append(self._chunk(Delta(tool_calls=[delta])))
        if line.get("done"):
            out.append(self.builder.finish(self._finish_reason(line.get("done_reason"))))
            prompt = line.get("prompt_eval_count")
            completion = line.get("eval_count")
            self.usage = (
                int(prompt) if prompt is not None else 0,
                int(completion) if completion is not None else self.content_pieces,
            )
        return out

    def _chunk(self, delta: Delta) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.builder.id,
            created=self.builder.created,
            model=self.builder.model,
            choices=[ChunkChoice(index=0, delta=delta)],
        )

    def _finish_reason(self, done_reason: str | None) -> FinishReason:
        if self.tool_calls:
            return "tool_calls"
        return "length" if done_reason == "length" else "stop"


async def ndjson_lines(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Ollama's NDJSON lines; an ``{"error": ...}`` line (Ollama sends them inside a 200
    stream) raises ``UpstreamError`` — before the first line, that is retryable."""
    async for raw in response.aiter_lines():
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise UpstreamError(
                f"upstream ollama sent a line that is not JSON: {raw[:200]!r}"
            ) from exc
        if not isinstance(value, dict):
            raise UpstreamError("upstream ollama sent an unexpected line")
        if "error" in value:
            raise UpstreamError(f"upstream ollama failed: {value['error']}")
        yield value


class OllamaBackend(UpstreamBackend):
    """A model served by one or more Ollama replicas.

    Raises ``BackendUnavailableError`` (all replicas down), ``BackendTimeoutError``,
    ``UpstreamError`` (upstream 5xx or a broken stream), ``ContextLengthExceededError`` and
    ``UnsupportedParameterError`` (400s). Closing a stream closes the upstream request.
    """

    kind = "ollama"
    health_path = "/api/version"

    def __init__(self, settings: OllamaSettings, base_dir: Path | None = None) -> None:
        super().__init__(settings, base_dir)
        self.settings = settings

    def map_status(self, status: int, body: bytes) -> GatewayError:
        return ollama_error(status, body, self.model, self.settings.remote_model)

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        return await collect_completion(self._generate(request))

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamItem]:
        return stream_for_client(self._generate(request), request.include_usage)

    async def _generate(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        body = to_ollama_request(request, self.settings, stream=True)
        if not self.client.started:
            await self.load()
        timeouts = self.settings.timeouts
        deadline = Deadline(timeouts.total)
        upstream = await self.client.open_stream("/api/chat", body, ndjson_lines, deadline)
        chunker = OllamaChunker(ChunkBuilder(model=request.model))
        try:
            yield chunker.builder.role()
            line = upstream.first
            while True:
                for chunk in chunker.feed(line):
                    yield chunk
                if line.get("done"):
                    break
                try:
                    line = await next_event(upstream, self.model, deadline)
                except StopAsyncIteration:
                    raise UpstreamError(
                        f"model '{self.model}': upstream ollama ended the stream early"
                    ) from None
            prompt, completion = chunker.usage or (0, 0)
            yield chunker.builder.usage(prompt, completion)
        finally:
            await upstream.aclose()
