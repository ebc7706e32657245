"""Any OpenAI-compatible upstream (vLLM, llama-server, TGI, LM Studio, another llmgate).

Two paths. The relay (``OpenAIRelay``): an OpenAI request (chat, completions, embeddings) is
forwarded with the client's own fields (vendor extras included) and the upstream's model name,
and the reply is relayed with as little re-encoding as possible: stream chunks keep the
upstream's bytes and only get their ``model`` rewritten — and a chat chunk with thinking gets it
under both names (``with_reasoning_twins``). ``generate`` serves any other surface: a
``GenerationRequest`` becomes a chat body and the upstream's chunks become events
(``backends.upstream.openai_generate``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.errors import GatewayError, UpstreamError
from backends.events import (
    Event,
)
from backends.model_types import ModelCapabilities
from backends.openai_types import OpenAIRequest
from backends.protocol import EventStream, OpenStream, Relayed, RelayEndpoint
from backends.requests import GenerationRequest
from backends.upstream.base import UpstreamBackend
from backends.upstream.capabilities import openai_capabilities
from backends.upstream.client import Deadline, UpstreamStream
from backends.upstream.openai_generate import ChunkEvents, upstream_call
from backends.upstream.settings import OpenAICompatSettings
from backends.upstream.statuses import UpstreamReply, status_error

_DONE = b"[DONE]"
_REASONING = b'"reasoning'
_REASONING_TWINS = (("reasoning", "reasoning_content"), ("reasoning_content", "reasoning"))


def to_upstream_body(request: OpenAIRequest, remote_model: str) -> dict[str, Any]:
    """The client's request as sent (unset fields stay unset) with the upstream's model name."""
    body = request.model_dump(mode="json", exclude_unset=True, by_alias=True)
    body["model"] = remote_model
    return body


def openai_error(status: int, body: bytes, model: str = "") -> GatewayError:
    """Map an upstream error reply (an OpenAI envelope, or not) onto the error tree."""
    envelope = parse_envelope(body)
    return status_error(
        UpstreamReply(
            status,
            envelope.message,
            envelope.param,
            envelope.code,
            context_exceeded=envelope.context_exceeded,
            enveloped=envelope.enveloped,
        ),
        model=model,
        upstream="the upstream",
        missing="the upstream answered 404",
    )


# how OpenAI-compatible servers say a prompt does not fit: OpenAI's and vLLM's "maximum context
# length", llama-server's "exceeds the available context size" (type exceed_context_size_error)
_CONTEXT_WORDS = ("context length", "context size", "context window")
_CONTEXT_TYPES = frozenset({"exceed_context_size_error", "context_length_exceeded"})


@dataclass(frozen=True)
class ErrorEnvelope:
    """An upstream's error body, read leniently. ``code`` only when it is symbolic (OpenAI's
    "context_length_exceeded"; llama-server's HTTP status number is not a code). ``enveloped``:
    the body was a JSON error object (the server's own words)."""

    message: str
    param: str | None = None
    code: str | None = None
    kind: str | None = None
    enveloped: bool = False

    @property
    def context_exceeded(self) -> bool:
        lowered = self.message.lower()
        return (
            self.code == "context_length_exceeded"
            or self.kind in _CONTEXT_TYPES
            or any(words in lowered for words in _CONTEXT_WORDS)
        )


def parse_envelope(body: bytes) -> ErrorEnvelope:
    try:
        data = json.loads(body)
    except ValueError:
        return ErrorEnvelope(body.decode("utf-8", errors="replace").strip()[:500] or "no detail")
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        code, param, kind = error.get("code"), error.get("param"), error.get("type")
        return ErrorEnvelope(
            str(error.get("message") or "no detail"),
            param if isinstance(param, str) else None,
            code if isinstance(code, str) and not code.isdigit() else None,
            kind if isinstance(kind, str) else None,
            enveloped=True,
        )
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        # vLLM's older {"object": "error", "message": ..., "type": ...}, and other servers'
        kind = data.get("type")
        return ErrorEnvelope(
            data["message"], kind=kind if isinstance(kind, str) else None, enveloped=True
        )
    if isinstance(error, str):
        return ErrorEnvelope(error[:500] or "no detail", enveloped=True)
    return ErrorEnvelope(str(data)[:500])


class ModelRewriter:
    """Rewrites ``"model"`` in an upstream JSON payload to the name the client asked for."""

    def __init__(self, remote: str, public: str) -> None:
        self.needle = b'"model":' + json.dumps(remote).encode()
        self.replacement = b'"model":' + json.dumps(public).encode()
        self._public = public

    def __call__(self, data: bytes) -> bytes:
        if self.needle in data:  # compact JSON (vLLM, llama-server): no re-encoding
            return data.replace(self.needle, self.replacement, 1)
        try:
            value = json.loads(data)
        except ValueError:
            raise UpstreamError("the upstream sent a stream chunk that is not JSON") from None
        if isinstance(value, dict) and "model" in value:
            value["model"] = self._public
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()

    def answer(self, raw: bytes, data: dict[str, Any], twins: bool) -> bytes:
        """A whole (non-streaming) answer, ``raw`` parsed as ``data``, with ``model`` set to
        the client's name (added if missing) and, with ``twins``, thinking under both names
        (``add_reasoning_twins``). Where only the model name changes, the upstream's bytes
        are kept with it replaced."""
        if self.needle in raw and not (twins and _REASONING in raw):
            return raw.replace(self.needle, self.replacement, 1)
        data["model"] = self._public
        if twins:
            add_reasoning_twins(data, "message")
        return json.dumps(data, ensure_ascii=False).encode()


def without_usage(payload: bytes) -> bytes | None:
    """A relayed stream chunk as a client that did not ask for usage sees it: the usage chunk
    (``choices: []``) is left out (None), and ``"usage":null`` (include_usage's mark on every
    other chunk) dropped."""
    if b'"choices":[]' in payload:
        return None
    if b'"usage":null' in payload:
        return payload.replace(b',"usage":null', b"", 1)
    return payload


def with_reasoning_twins(payload: bytes) -> bytes:
    """A stream chunk with its thinking under both names (``add_reasoning_twins``). Only a
    chunk whose bytes mention ``"reasoning`` is parsed; every other one, and one with nothing
    to add, stays byte for byte."""
    if _REASONING not in payload:
        return payload
    try:
        chunk = json.loads(payload)
    except ValueError:
        return payload
    if not add_reasoning_twins(chunk, "delta"):
        return payload
    return json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode()


def add_reasoning_twins(reply: Any, part: str) -> bool:
    """In each choice's ``part`` (``delta`` of a chunk, ``message`` of a completion), set the
    missing one of ``reasoning`` / ``reasoning_content`` to the other: upstreams send
    thinking under one name (vLLM and Ollama's /v1 the first, DeepSeek and older vLLM the
    second) and clients read one or the other. True when one was added."""
    added = False
    choices = reply.get("choices") if isinstance(reply, dict) else None
    for choice in choices if isinstance(choices, list) else []:
        fields = choice.get(part) if isinstance(choice, dict) else None
        if not isinstance(fields, dict):
            continue
        for name, twin in _REASONING_TWINS:
            if isinstance(fields.get(name), str) and fields.get(twin) is None:
                fields[twin] = fields[name]
                added = True
                break
    return added


async def sse_payloads(lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The data of each event of an SSE response's ``lines`` (ending with ``[DONE]``), as the
    SSE spec reads it: an event ends at a blank line, its ``data:`` lines joined with a line
    feed (a server may split a JSON object over several). An ``error`` payload raises
    ``UpstreamError``. Data left without its blank line when the body ends is an event too
    (servers that end on ``data: [DONE]`` alone)."""
    data: list[bytes] = []
    async for line in lines:
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif not line and data:
            yield _event_data(data)
            data = []
        # else: comments (": ping"), event names, ids, blank lines between events
    if data:
        yield _event_data(data)


def _event_data(data: list[bytes]) -> bytes:
    payload = (data[0] if len(data) == 1 else b"\n".join(data)).strip()
    if payload.startswith(b'{"error"') or _is_error_object(payload):
        message = parse_envelope(payload).message
        raise UpstreamError(f"the upstream failed mid-stream: {message}")
    return payload


def _is_error_object(payload: bytes) -> bool:
    """vLLM's older error chunk, ``{"object": "error", "message": ...}`` (checked only for a
    payload that names it, so a normal chunk costs one search)."""
    if b'"object":"error"' not in payload and b'"object": "error"' not in payload:
        return False
    try:
        data = json.loads(payload)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("object") == "error"


class OpenAICompatBackend(UpstreamBackend):
    """A model served by one or more OpenAI-compatible replicas (see the module docstring)."""

    kind = "openai"
    health_path = "/models"

    def __init__(self, settings: OpenAICompatSettings, base_dir: Path | None = None) -> None:
        super().__init__(settings, base_dir)
        self.settings = settings

    def map_status(self, status: int, body: bytes) -> GatewayError:
        return openai_error(status, body, self.model)

    async def ask_capabilities(self) -> ModelCapabilities | None:
        models = await self.client.fetch_json("GET", "/models")
        return openai_capabilities(models, self.settings.remote_model)

    async def relay(self, endpoint: RelayEndpoint, request: OpenAIRequest) -> Relayed:
        body = to_upstream_body(request, self.settings.remote_model)
        if endpoint != "/embeddings":
            body["stream"] = False
        if not self.client.started:
            await self.load()
        reply = await self.client.request_json(
            endpoint, body, Deadline(self.settings.timeouts.total)
        )
        listed = "data" if endpoint == "/embeddings" else "choices"
        if not isinstance(reply.data.get(listed), list):  # the client would index it
            raise UpstreamError(f"the upstream's answer has no '{listed}' list")
        rewrite = ModelRewriter(self.settings.remote_model, request.model)
        answer = rewrite.answer(reply.raw, reply.data, twins=endpoint == "/chat/completions")
        return Relayed(answer, reply.replica.url)

    async def relay_stream(
        self, endpoint: RelayEndpoint, request: OpenAIRequest, keep_usage: bool
    ) -> OpenStream[bytes]:
        body = to_upstream_body(request, self.settings.remote_model)
        body["stream"] = True
        # usage always, so that the request is metered (token limits, logs) whatever the client
        # asked; ``_relay`` leaves it out for a client that did not ask
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        payloads, upstream = await self._open(endpoint, body)
        rewrite = ModelRewriter(self.settings.remote_model, request.model)
        relay = self._relay(payloads, rewrite, keep_usage, endpoint == "/chat/completions")
        return OpenStream(relay, replica=upstream.replica, cleanup=upstream.aclose)

    async def generate(self, request: GenerationRequest) -> EventStream:
        endpoint, body = upstream_call(request, self.settings.remote_model)
        payloads, upstream = await self._open(endpoint, body)
        events = self._events(payloads)
        return OpenStream(events, replica=upstream.replica, cleanup=upstream.aclose)

    async def _open(
        self, endpoint: str, body: dict[str, Any]
    ) -> tuple[AsyncGenerator[bytes, None], UpstreamStream[bytes]]:
        """POST ``body`` to ``endpoint`` as a stream: its SSE payloads (up to ``[DONE]``) and
        the open upstream response (closing it drops the connection)."""
        upstream, deadline = await self.open(endpoint, body, sse_payloads)
        ended = "the upstream ended the stream without [DONE]"
        return self.items(upstream, deadline, ended), upstream

    @staticmethod
    async def _relay(
        payloads: AsyncGenerator[bytes, None],
        rewrite: ModelRewriter,
        keep_usage: bool,
        twins: bool,
    ) -> AsyncIterator[bytes]:
        needle, replacement = rewrite.needle, rewrite.replacement
        try:
            async for payload in payloads:  # per chunk: the common cases inline
                if payload == _DONE:
                    break
                if not keep_usage:
                    if (unasked := without_usage(payload)) is None:
                        continue
                    payload = unasked
                if twins and _REASONING in payload:
                    payload = with_reasoning_twins(payload)
                if needle in payload:
                    yield payload.replace(needle, replacement, 1)
                else:
                    yield rewrite(payload)
        finally:
            await payloads.aclose()

    @staticmethod
    async def _events(payloads: AsyncGenerator[bytes, None]) -> AsyncIterator[Event]:
        chunks = ChunkEvents()
        try:
            async for payload in payloads:
                if payload == _DONE:
                    break
                for event in chunks.feed(payload):
                    yield event
            for event in chunks.end():
                yield event
        finally:
            await payloads.aclose()
