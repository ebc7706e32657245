"""Any OpenAI-compatible upstream (vLLM, llama-server, TGI, LM Studio, another llmgate).

Requests are forwarded with the client's own fields (vendor extras included) and the upstream's
model name; replies are relayed with as little re-encoding as possible: stream chunks keep the
upstream's bytes and only get their ``model`` rewritten to what the client asked.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from backends.base import EncodedChunk, EncodedCompletion, StreamItem
from backends.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    RateLimitError,
    UpstreamError,
)
from backends.schemas import ChatCompletionRequest
from backends.settings import OpenAICompatSettings
from backends.upstream import Deadline, UpstreamBackend, next_event

_DONE = b"[DONE]"


def to_upstream_body(request: ChatCompletionRequest, remote_model: str) -> dict[str, Any]:
    """The client's request as sent (unset fields stay unset) with the upstream's model name."""
    body = request.model_dump(mode="json", exclude_unset=True, by_alias=True)
    body["model"] = remote_model
    return body


def openai_error(status: int, body: bytes, model: str = "") -> GatewayError:
    """Map an upstream error reply onto the error tree (see DESIGN.md §6 and issue rules)."""
    message, param, code = _parse_envelope(body)
    if status == 400 or status == 422:
        if code == "context_length_exceeded" or "context length" in message.lower():
            return ContextLengthExceededError(message, param=param or "messages")
        return InvalidRequestError(message, param=param, code=code or "invalid_request")
    if status == 404:
        return ModelNotFoundError(f"model '{model}': the upstream answered 404: {message}")
    if status == 429:
        return RateLimitError(f"the upstream is rate limiting: {message}", retry_after=1)
    if status in (401, 403):
        return UpstreamError(
            f"model '{model}': the upstream refused our credentials ({status}); "
            "check this model's api_key"
        )
    if status == 503:
        return BackendUnavailableError(f"the upstream is unavailable: {message}", retry_after=2)
    return UpstreamError(f"model '{model}': the upstream failed ({status}): {message}")


def _parse_envelope(body: bytes) -> tuple[str, str | None, str | None]:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="replace").strip()[:500] or "no detail", None, None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        return (
            str(error.get("message") or "no detail"),
            error.get("param"),
            str(code) if code is not None else None,
        )
    if isinstance(data, dict) and "message" in data:  # some servers: {"message": ..., ...}
        return str(data["message"]), None, None
    return str(error or data)[:500], None, None


class ModelRewriter:
    """Rewrites ``"model"`` in an upstream JSON payload to the name the client asked for."""

    def __init__(self, remote: str, public: str) -> None:
        self._needle = b'"model":' + json.dumps(remote).encode()
        self._replacement = b'"model":' + json.dumps(public).encode()
        self._public = public

    def __call__(self, data: bytes) -> bytes:
        if self._needle in data:  # compact JSON (vLLM, llama-server): no re-encoding
            return data.replace(self._needle, self._replacement, 1)
        value = json.loads(data)
        if isinstance(value, dict) and "model" in value:
            value["model"] = self._public
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


async def sse_payloads(response: httpx.Response) -> AsyncIterator[bytes]:
    """The ``data:`` payloads of an SSE response, ending with ``[DONE]``; an ``error`` payload
    raises ``UpstreamError``."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue  # comments (": ping"), event names, blank separators
        payload = line[5:].strip().encode()
        if payload.startswith(b'{"error"'):
            message, _, _ = _parse_envelope(payload)
            raise UpstreamError(f"the upstream failed mid-stream: {message}")
        yield payload


class OpenAICompatBackend(UpstreamBackend):
    """A model served by one or more OpenAI-compatible replicas (see the module docstring)."""

    kind = "openai"
    health_path = "/models"

    def __init__(self, settings: OpenAICompatSettings, base_dir: Path | None = None) -> None:
        super().__init__(settings, base_dir)
        self.settings = settings

    def map_status(self, status: int, body: bytes) -> GatewayError:
        return openai_error(status, body, self.model)

    async def chat(self, request: ChatCompletionRequest) -> EncodedCompletion:
        body = to_upstream_body(request, self.settings.remote_model)
        body["stream"] = False
        if not self.client.started:
            await self.load()
        data = await self.client.request_json(
            "/chat/completions", body, Deadline(self.settings.timeouts.total)
        )
        data["model"] = request.model
        return EncodedCompletion(json.dumps(data, ensure_ascii=False).encode())

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamItem]:
        return self._relay(request)

    async def _relay(self, request: ChatCompletionRequest) -> AsyncIterator[StreamItem]:
        body = to_upstream_body(request, self.settings.remote_model)
        body["stream"] = True
        if not self.client.started:
            await self.load()
        timeouts = self.settings.timeouts
        deadline = Deadline(timeouts.total)
        rewrite = ModelRewriter(self.settings.remote_model, request.model)
        upstream = await self.client.open_stream("/chat/completions", body, sse_payloads, deadline)
        try:
            payload = upstream.first
            while payload != _DONE:
                if request.include_usage or b'"choices":[]' not in payload:
                    yield EncodedChunk(rewrite(payload))
                try:
                    payload = await next_event(upstream, self.model, deadline)
                except StopAsyncIteration:
                    raise UpstreamError(
                        f"model '{self.model}': the upstream ended the stream without [DONE]"
                    ) from None
        finally:
            await upstream.aclose()
