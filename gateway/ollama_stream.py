"""The Ollama surface's answers: a backend's events into Ollama's NDJSON lines (``/api/chat``'s
``message``, ``/api/generate``'s ``response``), the final ``done: true`` line with the token
counts and the durations measured here, one whole JSON object when not streaming, and the
``application/x-ndjson`` response that ends with an ``{"error": ...}`` line when a started
stream fails (as Ollama does).

Durations are nanoseconds on the monotonic clock (``Timings``): ``load_duration`` is the time
this request spent loading the model (0 when it was loaded), ``prompt_eval_duration`` from the
request reaching the backend to the first token, ``eval_duration`` from there to the end,
``total_duration`` the whole handler (never less than their sum).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from backends import events as ev
from backends.errors import GatewayError, InternalError
from gateway.errors import ollama_error_body
from gateway.sse import SSEResponse

log = logging.getLogger(__name__)

Surface = Literal["chat", "generate"]

# What Ollama says for a finished tool call, and for a cut answer.
_DONE_REASONS: dict[ev.FinishReason, str] = {
    "stop": "stop",
    "tool_calls": "stop",
    "length": "length",
    "content_filter": "stop",
}


def created_at(ns: int | None = None) -> str:
    """Now as Go writes a UTC ``time.Time``: RFC 3339, nanoseconds, trailing zeros trimmed."""
    ns = time.time_ns() if ns is None else ns
    seconds, fraction = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


@dataclass
class Timings:
    """Monotonic-clock marks of one request (ns); see the module docstring."""

    started: int = field(default_factory=time.monotonic_ns)
    load: int = 0
    engine: int = 0  # the request reached the backend
    first_token: int | None = None
    ended: int | None = None

    def reached_engine(self) -> None:
        self.engine = time.monotonic_ns()
        self.first_token = self.ended = None

    def token(self) -> None:
        if self.first_token is None:
            self.first_token = time.monotonic_ns()

    def end(self) -> None:
        self.ended = time.monotonic_ns()

    def durations(self) -> dict[str, int]:
        """Ollama's four durations; each measured one is at least 1 ns."""
        ended = self.ended if self.ended is not None else time.monotonic_ns()
        first = self.first_token if self.first_token is not None else ended
        engine = self.engine or first
        prompt_eval = max(1, first - engine)
        eval_ = max(1, ended - first)
        total = max(time.monotonic_ns() - self.started, self.load + prompt_eval + eval_)
        return {
            "total_duration": total,
            "load_duration": self.load,
            "prompt_eval_duration": prompt_eval,
            "eval_duration": eval_,
        }


@dataclass
class _Call:
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class OllamaLineBuilder:
    """Ollama's lines for one response of ``surface``, ``model`` as the client sent it.
    Tool calls are sent whole, ``arguments`` as an object, on a ``done: false`` line after the
    model finished (Ollama parses a call before sending it). A call whose arguments are not a
    JSON object is left out when ``num_predict`` cut it short (as the in-process engines leave
    out a cut call), else sent as the text it is."""

    def __init__(self, surface: Surface, model: str, timings: Timings) -> None:
        self.surface = surface
        self.model = model
        self.timings = timings
        self._calls: dict[int, _Call] = {}
        self._reason: ev.FinishReason = "stop"

    def feed(self, event: ev.Event) -> list[dict[str, Any]]:
        if isinstance(event, ev.TextDelta):
            self.timings.token()
            return [self._line(content=event.text)] if event.text else []
        if isinstance(event, ev.ReasoningDelta):
            self.timings.token()
            return [self._line(thinking=event.text)] if event.text else []
        if isinstance(event, ev.ToolCallDelta):
            self.timings.token()
            call = self._calls.setdefault(event.call, _Call())
            call.name = event.name or call.name
            call.arguments.append(event.arguments)
            return []
        if isinstance(event, ev.Finished):
            self._reason = event.reason
            return self._tool_call_lines()
        if isinstance(event, ev.Usage):
            self.timings.end()
            return [self.final(event)]
        return []

    def _tool_call_lines(self) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = []
        texts: list[str] = []
        for _, call in sorted(self._calls.items()):
            text = "".join(call.arguments)
            try:
                arguments = json.loads(text or "{}")
            except ValueError:
                arguments = None
            if isinstance(arguments, dict):
                calls.append({"function": {"name": call.name, "arguments": arguments}})
            elif self._reason != "length":  # a call num_predict cut short is left out
                texts.append(text)
        self._calls.clear()
        lines = [self._line(content=text) for text in texts]
        if calls:
            lines.append(self._line(tool_calls=calls))
        return lines

    def _line(
        self,
        content: str = "",
        thinking: str | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        line: dict[str, Any] = {"model": self.model, "created_at": created_at()}
        if self.surface == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking is not None:
                message["thinking"] = thinking
            if tool_calls is not None:
                message["tool_calls"] = tool_calls
            line["message"] = message
        else:
            line["response"] = content
            if thinking is not None:
                line["thinking"] = thinking
        line["done"] = False
        return line

    def final(self, usage: ev.Usage) -> dict[str, Any]:
        """The ``done: true`` line: reason, counts and durations."""
        line: dict[str, Any] = {"model": self.model, "created_at": created_at()}
        if self.surface == "chat":
            line["message"] = {"role": "assistant", "content": ""}
        else:
            line["response"] = ""
        line["done"] = True
        line["done_reason"] = _DONE_REASONS[self._reason]
        if self.surface == "generate":
            line["context"] = []  # no token context: send the conversation to /api/chat
        durations = self.timings.durations()
        line.update(
            total_duration=durations["total_duration"],
            load_duration=durations["load_duration"],
            prompt_eval_count=usage.prompt_tokens,
            prompt_eval_duration=durations["prompt_eval_duration"],
            eval_count=usage.completion_tokens,
            eval_duration=durations["eval_duration"],
        )
        return line


def encode(line: dict[str, Any]) -> bytes:
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


async def ndjson_lines(
    events: AsyncIterator[ev.Event], builder: OllamaLineBuilder
) -> AsyncIterator[bytes]:
    """The encoded lines for ``events``; closing this closes ``events``."""
    try:
        async for event in events:
            for line in builder.feed(event):
                yield encode(line)
    finally:
        await _close(events)


async def whole_answer(events: AsyncIterator[ev.Event], builder: OllamaLineBuilder) -> bytes:
    """``stream: false``: the lines folded into one object (the final line's fields, with the
    whole content, thinking and tool calls)."""
    content: list[str] = []
    thinking: list[str] = []
    calls: list[Any] = []
    final: dict[str, Any] | None = None
    try:
        async for event in events:
            for line in builder.feed(event):
                part = line.get("message", line)
                content.append(part.get("content", part.get("response", "")))
                thinking.append(part.get("thinking") or "")
                calls += part.get("tool_calls") or []
                if line["done"]:
                    final = line
    finally:
        await _close(events)
    if final is None:
        raise InternalError("the backend's answer ended without usage")
    text, thought = "".join(content), "".join(thinking)
    answer: dict[str, Any] = {"model": final["model"], "created_at": final["created_at"]}
    if builder.surface == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thought:
            message["thinking"] = thought
        if calls:
            message["tool_calls"] = calls
        answer["message"] = message
    else:
        answer["response"] = text
        if thought:
            answer["thinking"] = thought
    answer.update((k, v) for k, v in final.items() if k not in answer and k != "response")
    return json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()


def load_reply(surface: Surface, model: str, reason: str = "load") -> bytes:
    """Ollama's answer to a load request (no messages / an empty prompt); ``reason``
    ``unload`` for one with ``keep_alive: 0``."""
    line: dict[str, Any] = {"model": model, "created_at": created_at()}
    if surface == "chat":
        line["message"] = {"role": "assistant", "content": ""}
    else:
        line["response"] = ""
    line.update(done_reason=reason, done=True)
    return json.dumps(line, separators=(",", ":")).encode()


class NDJSONResponse(SSEResponse):
    """``application/x-ndjson`` from an async iterator of ready-made lines; closes the
    iterator however the response ends (a client that goes away: the engine stops)."""

    media_type = "application/x-ndjson"


def ndjson_response(
    first: bytes | None, lines: AsyncIterator[bytes], headers: dict[str, str] | None = None
) -> NDJSONResponse:
    """Stream ``first`` (awaited by the caller, so early errors kept their status) and the
    rest of ``lines``; a failure after that is an ``{"error": ...}`` line, then the end."""

    async def all_lines() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield first
                async for line in lines:
                    yield line
        except GatewayError as exc:
            yield encode(ollama_error_body(exc))
        except Exception:
            log.exception("ollama stream failed after headers were sent")
            yield encode(ollama_error_body(InternalError("internal server error")))
        finally:
            await _close(lines)

    return NDJSONResponse(all_lines(), headers=headers)


async def _close(items: AsyncIterator[Any]) -> None:
    aclose = getattr(items, "aclose", None)
    if aclose is not None:
        await aclose()
