"""The generate path to an OpenAI-compatible upstream: a ``GenerationRequest`` becomes a chat
body (``to_chat_body``) — a completions body for a raw prompt (``to_completion_body``) — and
the upstream's stream chunks become events (``ChunkEvents``, which reads both), for every
surface other than the OpenAI relay (``backends.upstream.openai_compat``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from backends.errors import UnsupportedParameterError, UpstreamError
from backends.events import (
    Event,
    Finished,
    ReasoningDelta,
    Started,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
    TopToken,
    Usage,
)
from backends.requests import GenerationRequest, Message, OutputConstraint


def upstream_call(request: GenerationRequest, remote_model: str) -> tuple[str, dict[str, Any]]:
    """The endpoint and body that serve ``request``: ``/completions`` for a raw prompt,
    ``/chat/completions`` otherwise."""
    if request.prompt is not None:
        return "/completions", to_completion_body(request, request.prompt, remote_model)
    return "/chat/completions", to_chat_body(request, remote_model)


def to_completion_body(
    request: GenerationRequest, prompt: str | tuple[int, ...], remote_model: str
) -> dict[str, Any]:
    """A completions body for a raw prompt, streaming with usage. A raw prompt is never read
    for tool calls, so tools and constraints other than none are refused by name."""
    if request.wants_tools:
        raise UnsupportedParameterError("tools need a chat, not a raw prompt", param="tools")
    if request.constraint is not None:
        raise UnsupportedParameterError(
            "the openai backend cannot constrain a raw prompt's output", param="format"
        )
    fields = _chat_fields(request)
    if request.logprobs:
        fields.pop("top_logprobs", None)
        fields["logprobs"] = request.top_logprobs
    fields.pop("parallel_tool_calls", None)
    return {
        **request.extras,
        "model": remote_model,
        "prompt": prompt if isinstance(prompt, str) else list(prompt),
        "stream": True,
        "stream_options": {"include_usage": True},
        **fields,
    }


def to_chat_body(request: GenerationRequest, remote_model: str) -> dict[str, Any]:
    """A chat completions body for ``request`` (the ``generate`` path), streaming with usage;
    ``extras`` (vendor fields) go along as sent."""
    body: dict[str, Any] = {
        **request.extras,
        "model": remote_model,
        "messages": [_chat_message(m) for m in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body.update(_chat_fields(request))
    if request.continue_final:  # vLLM's names for prefill (llama-server continues by itself)
        body.update(continue_final_message=True, add_generation_prompt=False)
    if request.tools:
        body["tools"] = [_chat_tool(tool) for tool in request.tools]
    if request.tool_choice is not None:
        choice = request.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}}
            if choice.mode == "function"
            else choice.mode
        )
    if request.constraint is not None:
        body["response_format"] = _response_format(request.constraint)
    return body


def _chat_fields(request: GenerationRequest) -> dict[str, Any]:
    """The scalar fields the client set (OpenAI's names, vLLM's for top_k / min_p /
    repetition_penalty)."""
    s = request.sampling
    named: dict[str, Any] = {
        "max_tokens": request.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k,
        "min_p": s.min_p,
        "presence_penalty": s.presence_penalty,
        "frequency_penalty": s.frequency_penalty,
        "repetition_penalty": s.repetition_penalty,
        "seed": s.seed,
        "parallel_tool_calls": request.parallel_tool_calls,
        "user": request.user,
        "logit_bias": {str(k): v for k, v in s.logit_bias.items()} or None,
        "stop": list(request.stop) or None,
        "n": request.n if request.n != 1 else None,
    }
    if request.logprobs:
        named.update(logprobs=True, top_logprobs=request.top_logprobs)
    return {key: value for key, value in named.items() if value is not None}


def _response_format(constraint: OutputConstraint) -> dict[str, Any]:
    if constraint.kind == "grammar":
        raise UnsupportedParameterError(
            "the openai backend cannot pass a grammar upstream", param="response_format"
        )
    if constraint.kind == "json_schema" and constraint.schema is not None:
        schema = {"name": constraint.name or "response", "schema": dict(constraint.schema)}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": "json_object"}


def _chat_message(message: Message) -> dict[str, Any]:
    text = message.text()
    content: Any = (
        text
        if text is not None
        else [{"type": p.type, **getattr(p, "data", {}), **_text(p)} for p in message.content]
    )
    out: dict[str, Any] = {"role": message.role, "content": content}
    if message.name:
        out["name"] = message.name
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
        if not text:
            out["content"] = None
    return out


def _text(part: Any) -> dict[str, Any]:
    return {"text": part.text} if part.type == "text" else {}


def _chat_tool(tool: Any) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    for key in ("description", "parameters", "strict"):
        value = getattr(tool, key)
        if value is not None:
            function[key] = dict(value) if isinstance(value, Mapping) else value
    return {"type": "function", "function": function}


class ChunkEvents:
    """Turns an upstream's chat completion chunks (or completion chunks: ``text`` instead of
    ``delta``) into events (one instance per response)."""

    def __init__(self) -> None:
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self._usage: Usage | None = None
        self._pieces = 0

    def feed(self, payload: bytes) -> list[Event]:
        try:
            chunk = json.loads(payload)
        except ValueError as exc:
            raise UpstreamError(
                f"the upstream sent a chunk that is not JSON: {payload[:200]!r}"
            ) from exc
        if not isinstance(chunk, dict):
            raise UpstreamError("the upstream sent an unexpected chunk")
        out: list[Event] = []
        for choice in chunk.get("choices") or []:
            index = int(choice.get("index", 0))
            if index not in self._started:
                self._started.add(index)
                out.append(Started(index))
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                out.append(ReasoningDelta(index, reasoning))
            logprobs = _logprobs(choice.get("logprobs"))
            text = delta.get("content") or choice.get("text")
            if text or logprobs:
                self._pieces += 1
                out.append(TextDelta(index, text or "", logprobs))
            for call in delta.get("tool_calls") or []:
                function = call.get("function") or {}
                out.append(
                    ToolCallDelta(
                        index,
                        int(call.get("index", 0)),
                        call.get("id"),
                        function.get("name"),
                        function.get("arguments") or "",
                    )
                )
            reason = choice.get("finish_reason")
            if reason is not None:
                self._finished.add(index)
                known = ("stop", "length", "tool_calls", "content_filter")
                # vLLM names the stop string that ended the choice in `stop_reason`
                matched = choice.get("stop_reason") if reason == "stop" else None
                out.append(
                    Finished(
                        index,
                        reason if reason in known else "stop",
                        matched if isinstance(matched, str) else None,
                    )
                )
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            details = usage.get("prompt_tokens_details")
            cached = details.get("cached_tokens") if isinstance(details, dict) else None
            self._usage = Usage(
                int(usage.get("prompt_tokens") or 0),
                int(usage.get("completion_tokens") or 0),
                cached if isinstance(cached, int) and not isinstance(cached, bool) else None,
            )
        return out

    def end(self) -> list[Event]:
        """At ``[DONE]``: close choices the upstream left open, then the usage."""
        out: list[Event] = [Finished(i, "stop") for i in sorted(self._started - self._finished)]
        out.append(self._usage or Usage(0, self._pieces))
        return out


def _logprobs(data: Any) -> tuple[TokenLogprob, ...] | None:
    if isinstance(data, dict) and isinstance(data.get("tokens"), list):
        return _legacy_logprobs(data)
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        return None

    def raw(item: dict[str, Any]) -> bytes:
        listed = item.get("bytes")
        return bytes(listed) if isinstance(listed, list) else str(item.get("token", "")).encode()

    return tuple(
        TokenLogprob(
            str(item.get("token", "")),
            float(item.get("logprob", 0.0)),
            raw(item),
            tuple(
                TopToken(str(t.get("token", "")), float(t.get("logprob", 0.0)), raw(t))
                for t in item.get("top_logprobs") or []
            ),
        )
        for item in data["content"]
    )


def _legacy_logprobs(data: dict[str, Any]) -> tuple[TokenLogprob, ...]:
    """A completions chunk's logprobs (parallel lists) as events' logprobs."""
    tokens = data.get("tokens") or []
    values = data.get("token_logprobs") or []
    tops = data.get("top_logprobs") or []
    out = []
    for i, token in enumerate(tokens):
        value = values[i] if i < len(values) and values[i] is not None else 0.0
        top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        alternatives = tuple(TopToken(str(t), float(lp), str(t).encode()) for t, lp in top.items())
        out.append(TokenLogprob(str(token), float(value), str(token).encode(), alternatives))
    return tuple(out)
