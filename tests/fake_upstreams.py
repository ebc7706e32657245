"""Protocol-faithful test doubles of the upstream servers the gateway proxies to.

``FakeOllama`` speaks Ollama's native API and ``FakeOpenAI`` speaks the OpenAI-compatible API of
vLLM / llama-server. Both are Starlette apps: serve them on a real loopback socket with
``tests.integration.conftest.ServerThread`` and point the code under test at
``http://127.0.0.1:<port>``. Neither runs a model: each model "generates" a scripted, deterministic
list of token strings.

What is faithful (checked against the official ``ollama`` and ``openai`` clients in
``tests/integration/test_fake_upstreams.py``):

* Ollama ``POST /api/chat``: ``stream`` defaults to true; a stream is ``application/x-ndjson``, one
  compact JSON object per line, keys in Go's struct order, ``<``/``>``/``&`` escaped as Go does,
  ``created_at`` in RFC 3339 with nanoseconds (trailing zeros trimmed, as Go prints it). One line
  per token with ``"done": false``, then a final line with empty content, ``done_reason``
  (``"stop"``/``"length"``) and the metrics in nanoseconds. ``"stream": false`` gives one JSON
  object with the whole content and the same metrics. Tool calls come whole in one message with
  ``arguments`` as a JSON object (not a string), on a ``done: false`` line when streaming. An empty
  ``messages`` list answers ``done_reason: "load"`` (``"unload"`` with ``keep_alive: 0``) at once as
  plain JSON, as Ollama does. ``options.num_predict`` <= 0 means "no limit", like the runner.
  A name without a tag means ``:latest``; the reply echoes ``model`` as it was asked for.
  Errors carry Ollama's bodies and statuses: ``{"error": "..."}``; 400 ``missing request body``,
  400 with Go's ``encoding/json`` texts for bad JSON and wrong field types (trailing bytes after
  the first JSON value are ignored, as gin's decoder does) -- message ``content`` must be a string
  and tool-call ``arguments`` an object, as Ollama's structs demand; 400 for a ``keep_alive``
  string that is no Go duration (``"300"``: ``time: missing unit in duration "300"``); 400
  ``model is required``; 404 ``model "x" not found, try pulling it first``; 400
  ``"x" does not support tools`` for a model with ``supports_tools=False``; 500
  ``option "stop" must be of type array`` (and the like) for a mistyped option; 500 for a
  ``format`` that is neither ``"json"`` nor a schema object; and the nested-JSON-string 400
  ``exceed_context_size_error`` for ``truncate: false`` with a prompt longer than ``num_ctx``.
  ``think``: a model with ``reasoning`` streams it first as ``thinking`` lines (content ``""``;
  the whole answer's ``message.thinking`` when not streaming) unless ``think`` is false; ``think``
  true for a model without ``reasoning`` is 400 ``"x" does not support thinking``, and a value
  other than a bool or ``"high"``/``"medium"``/``"low"`` is 400 ``invalid think value``.
  Unknown routes and wrong methods answer gin's text ``404 page not found``.
* ``GET /api/tags``, ``GET /api/ps`` (models used and not unloaded), ``GET /api/version``
  (``{"version": "0.12.3"}``), ``GET /`` and ``HEAD /`` (``Ollama is running``), ``POST /api/show``
  (``{"model": ...}``: ``details``, ``model_info`` with ``general.architecture`` and
  ``<family>.context_length``, ``capabilities`` — ``completion``, ``tools`` unless
  ``supports_tools=False``, ``thinking`` for a model with ``reasoning``; 404 ``model 'x' not
  found``).
* OpenAI ``POST /v1/chat/completions``: non-stream ``chat.completion`` objects; SSE streams of
  ``data: {...}\\n\\n`` events in the order role chunk, content chunks (or tool-call chunks with the
  arguments string split in two), a chunk with ``delta: {}`` and the ``finish_reason``, then, only
  with ``stream_options.include_usage``, a usage chunk with ``choices: []`` (every other chunk then
  carries ``"usage": null``), then ``data: [DONE]``. The finish chunk's (and the whole answer's)
  ``stop_reason`` names the stop string that ended the choice, as vLLM's does. A model's
  ``reasoning`` comes first, as deltas (and in the whole answer's message) under its
  ``reasoning_field``: ``reasoning_content`` (older vLLM, DeepSeek) or ``reasoning`` (newer
  vLLM). ``n`` > 1 works. Errors use the OpenAI envelope
  ``{"error": {"message", "type", "param", "code"}}``: 401 without/with a wrong bearer key (only
  on ``/v1/*``; ``/health`` is open, like vLLM), 404 ``model_not_found``, 400 naming the param for
  out-of-range or mistyped sampling values, ``stream_options`` without ``stream``, a ``tool_choice``
  other than ``none``/``auto`` without ``tools`` or naming a function not in them, and prompts
  over the model's ``context_length`` (``context_length_exceeded``). ``GET /v1/models`` lists the
  models vLLM-style (with ``max_model_len``); ``GET /health`` is an empty 200.

What is simplified:

* "Tokens" are the model's scripted strings. Prompt token counts are the number of
  whitespace-separated words over all message contents (text parts only for OpenAI list contents;
  tool definitions and images count nothing): Ollama's ``prompt_eval_count`` (capped at
  ``num_ctx``, standing for Ollama's silent truncation when ``truncate`` is not false) and
  OpenAI's ``usage.prompt_tokens``. ``eval_count`` / ``completion_tokens`` is the number of scripted
  tokens sent. Durations are plausible, not measured on a model.
* Stop strings cut the text at their first occurrence (the stop string is not sent). A
  ``format`` (Ollama) or ``response_format`` of ``json_object``/``json_schema`` (OpenAI) makes the
  reply JSON, streamed in pieces of 8 characters: the model's ``json_reply`` object, or, when a
  schema is given, a value valid against it built from the schema (local ``$ref`` links,
  ``anyOf``/``oneOf``, ``const``, ``enum``, every property), taking ``json_reply``'s values (and,
  for Ollama, ``tool_call``'s) where they fit and the smallest ones elsewhere. A model configured
  with ``tool_call`` calls it whenever the request has ``tools`` (for Ollama: and no ``format``,
  which constrains the whole answer), OpenAI's ``tool_choice`` is not ``"none"`` and the last
  message is not a tool result; otherwise it answers text. OpenAI's ``tool_choice`` ``"required"``
  or a named function always calls: the scripted call when it is the one wanted, else the
  wanted tool (for ``"required"``: the first) with arguments built from its parameters.
* The ``429`` ``Retry-After`` behaviour and most error texts of an overloaded server are
  stand-ins; real servers differ in wording. Only the endpoints above exist. uvicorn adds its own
  ``server``/``date`` headers.
* Ollama's default ``num_ctx`` is 4096 (Ollama >= 0.6.7); pass ``default_num_ctx`` to change it.

Faults: append ``Fault``\\ s to ``fake.faults``. Each request to a fault's path (by default the
chat endpoint) takes the first matching fault, which is removed unless ``sticky``. A ``status``
fault is applied before any validation (and before the API-key check); hang and die faults also
delay or break error replies. ``status``, ``hang_before_headers`` and ``die_mid_stream`` work on
every endpoint; ``slow_chunks`` and ``error_line`` only mean something on the chat endpoint.
Kinds:

* ``status``: reply ``status`` with the server's native error body (``message`` or a typical text);
  ``429`` gets ``Retry-After: retry_after`` (default ``"1"``).
* ``hang_before_headers``: wait ``seconds`` before sending anything, then answer normally.
* ``die_mid_stream``: write ``after`` body chunks (ndjson lines / SSE events; for a non-stream reply
  the headers and half the body) and close the connection without finishing the response, so the
  client sees an incomplete body (``httpx.RemoteProtocolError``; the openai SDK wraps it in
  ``openai.APIConnectionError``). It is not recorded as a disconnect.
* ``slow_chunks``: wait ``seconds`` between chunks (non-stream: before the reply, per token).
* ``error_line``: after ``after`` content lines, send Ollama's ``{"error": message}`` line and end
  the 200 response (OpenAI: ``data: {"error": {...}}`` then ``data: [DONE]``, as vLLM does). A
  non-stream request gets 500 with the error body instead, as Ollama answers a failed generation.

Records, appended from the server thread: ``fake.requests`` (every request, ``RecordedRequest``),
``fake.chat_bodies`` (the parsed JSON bodies sent to the chat endpoint), ``fake.disconnects``
(``Disconnect`` with the ``time.monotonic()`` at which the server saw the client go away while it
was still answering, including during a hang) and ``fake.in_flight`` (responses being sent now).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.fake_embeddings import ollama_embed, openai_embed

__all__ = [
    "Disconnect",
    "FakeModel",
    "FakeOllama",
    "FakeOpenAI",
    "Fault",
    "FaultKind",
    "RecordedRequest",
    "closed_port",
]

FaultKind = Literal["status", "hang_before_headers", "die_mid_stream", "slow_chunks", "error_line"]
FAULT_KINDS: tuple[str, ...] = (
    "status",
    "hang_before_headers",
    "die_mid_stream",
    "slow_chunks",
    "error_line",
)

OLLAMA_VERSION = "0.12.3"
_JSON_GO = "application/json; charset=utf-8"  # gin's c.JSON
DEFAULT_OLLAMA_TOKENS = ("Hello", " from", " fake", " ollama", ".")
DEFAULT_OPENAI_TOKENS = ("Hello", " from", " fake", " openai", ".")


def closed_port() -> int:
    """A loopback TCP port with nothing listening: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Fault:
    """One injected misbehaviour; see the module docstring for the kinds."""

    kind: FaultKind
    status: int = 500
    message: str | None = None
    retry_after: str | None = None
    seconds: float = 0.0
    after: int = 0
    sticky: bool = False
    path: str | None = None  # None: the fake's chat endpoint

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {FAULT_KINDS}")


@dataclass
class FakeModel:
    """A scripted model. ``tokens=None`` takes the fake's default script."""

    name: str
    tokens: list[str] | None = None
    tool_call: dict[str, Any] | None = None  # {"name": ..., "arguments": {...}}
    json_reply: dict[str, Any] = field(default_factory=lambda: {"answer": "fake"})
    report_counts: bool = True  # Ollama: False omits prompt_eval_count and eval_count
    supports_tools: bool = True  # Ollama: False makes a request with tools a 400
    token_delay: float = 0.0  # seconds between generated tokens
    context_length: int = 4096  # OpenAI: max_model_len; Ollama: /api/ps context_length
    # Thinking, before the answer: OpenAI deltas (and message) under `reasoning_field`; Ollama's
    # `thinking` unless `think` is false. None: the model cannot think (Ollama: `think: true` 400s).
    reasoning: list[str] | None = None
    reasoning_field: Literal["reasoning_content", "reasoning"] = "reasoning_content"
    family: str = "llama"
    parameter_size: str = "8.0B"
    quantization_level: str = "Q4_0"
    size: int = 4_661_224_676
    digest: str = ""  # default: sha256 of the name, 64 hex digits as /api/tags shows it

    def __post_init__(self) -> None:
        if not self.digest:
            self.digest = hashlib.sha256(self.name.encode()).hexdigest()


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    raw: bytes
    body: Any  # the parsed JSON body, or None when it is absent or not JSON
    at: float  # time.monotonic() on arrival
    fault: Fault | None = None


@dataclass
class Disconnect:
    at: float  # time.monotonic() when the server noticed the client had gone
    path: str
    model: str | None
    sent: int  # body chunks written before that


# --------------------------------------------------------------------------------------------
# shared machinery


class _DeliberateDrop(Exception):
    """Raised after the response started: uvicorn then closes the connection mid-body."""


class _HideDeliberateDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _DeliberateDrop)


_DROP_FILTER = _HideDeliberateDrops()


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if _DROP_FILTER not in logger.filters:
        logger.addFilter(_DROP_FILTER)


def _words(text: str) -> int:
    return len(text.split())


def _rfc3339_nano(ns: int | None = None) -> str:
    """``time.Time`` as Go's encoding/json writes it for a UTC time (RFC 3339, nanoseconds with
    trailing zeros trimmed)."""
    ns = time.time_ns() if ns is None else ns
    secs, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


def _go_json(obj: Any) -> bytes:
    """Compact JSON with Go's default HTML escaping."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text.encode()


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _apply_stop(pieces: list[str], stops: list[str]) -> tuple[list[str], int, bool]:
    """Cut ``pieces`` before the first stop string (which is not sent).

    Returns (pieces to send, tokens generated, whether a stop string matched)."""
    stops = [s for s in stops if s]
    text = ""
    for i, piece in enumerate(pieces):
        text += piece
        hits = [text.find(s) for s in stops if s in text]
        if hits:
            kept = text[: min(hits)]
            out: list[str] = []
            pos = 0
            for p in pieces[: i + 1]:
                if part := kept[pos : pos + len(p)]:
                    out.append(part)
                pos += len(p)
            return out, i + 1, True
    return pieces, len(pieces), False


def _first_stop(text: str, stops: list[str]) -> str | None:
    """The stop string found earliest in ``text`` (None: none is)."""
    hits = [(text.find(s), s) for s in stops if s and s in text]
    return min(hits, key=lambda hit: hit[0])[1] if hits else None


def _generate(pieces: list[str], limit: int, stops: list[str]) -> tuple[list[str], int, str]:
    """Run the script under a token limit (<= 0: none) and stop strings. Returns (pieces to
    send, tokens generated, finish reason). Reaching the limit is ``"length"`` even when the
    script ends there: a real model would only have emitted its end token next."""
    limited = 0 < limit <= len(pieces)
    if limit > 0:
        pieces = pieces[:limit]
    pieces, generated, stopped = _apply_stop(pieces, stops)
    return pieces, generated, "length" if limited and not stopped else "stop"


_KINDS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}
_MINIMAL: dict[str, Any] = {"integer": 0, "number": 0.0, "boolean": True, "null": None}


def _resolve(schema: Any, root: Any) -> Any:
    """``schema`` with a local ``$ref`` (``#/$defs/X``, ``#/definitions/X``) followed."""
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 32:
        target = root
        for key in schema["$ref"].removeprefix("#").strip("/").split("/"):
            target = target.get(key, {}) if isinstance(target, dict) and key else target
        schema, seen = target, seen + 1
    return schema


def _fits(value: Any, schema: Any, root: Any) -> bool:
    """A rough check that ``value`` has the shape ``schema`` asks for (type, const, enum)."""
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return value is not None
    if "const" in schema:
        return bool(value == schema["const"])
    if schema.get("enum"):
        return value in schema["enum"]
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        return any(_fits(value, b, root) for b in branches)
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    return not kinds or any(_KINDS.get(k, lambda v: True)(value) for k in kinds)


def _instance_of(schema: Any, hint: Any = None, root: Any = None) -> Any:
    """A value that satisfies a (simple) JSON schema — ``hint``'s values where they fit, the
    smallest ones elsewhere. Follows local ``$ref``s, picks an ``anyOf``/``oneOf`` branch that
    ``hint`` fits (first a branch whose ``const`` values it matches), fills every property."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return hint if hint is not None else "fake"
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return hint if hint in schema["enum"] else schema["enum"][0]
    branches = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
    if branches:
        return _instance_of(_branch(branches, hint, root), hint, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        fitting = (k for k in kind if hint is not None and _KINDS.get(k, bool)(hint))
        kind = next(fitting, None) or next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        given = hint if isinstance(hint, dict) else {}
        properties = schema.get("properties") or {}
        if not properties:
            return dict(given)
        return {k: _instance_of(v, given.get(k), root) for k, v in properties.items()}
    if kind == "array":
        given_items = hint if isinstance(hint, list) else []
        count = max(len(given_items), int(schema.get("minItems") or 0))
        items = schema.get("items")
        return [
            _instance_of(items, given_items[i] if i < len(given_items) else None, root)
            for i in range(count)
        ]
    if kind in _KINDS and _KINDS[kind](hint):
        return hint
    return _MINIMAL.get(kind, "fake")


def _branch(branches: list[Any], hint: Any, root: Any) -> Any:
    resolved = [_resolve(b, root) for b in branches]
    for branch in resolved:
        properties = branch.get("properties") if isinstance(branch, dict) else None
        consts = {
            k: v["const"]
            for k, v in (properties or {}).items()
            if isinstance(v, dict) and "const" in v
        }
        if consts and isinstance(hint, dict) and all(hint.get(k) == v for k, v in consts.items()):
            return branch
    if hint is not None:
        for branch in resolved:
            if _fits(hint, branch, root):
                return branch
    not_null = [b for b in resolved if not (isinstance(b, dict) and b.get("type") == "null")]
    return (not_null or resolved)[0]


def _json_pieces(value: Any, size: int = 8) -> list[str]:
    """``value`` as JSON text in pieces of ``size`` characters, as a model streams it."""
    text = json.dumps(value)
    return [text[i : i + size] for i in range(0, len(text), size)] or [text]


class _Reply(Response):
    """The fakes' response: applies hang/slow/die faults, watches for the client going away and
    records it, keeps ``fake.in_flight``."""

    def __init__(
        self,
        fake: _FakeUpstream,
        rec: RecordedRequest,
        *,
        media_type: str,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        body: Callable[[], bytes] | None = None,
        chunks: AsyncIterator[bytes] | None = None,
        wait_before: float = 0.0,
        chunk_delay: float = 0.0,
        die_after: int | None = None,
        model: str | None = None,
    ) -> None:
        self.fake = fake
        self.rec = rec
        self.status_code = status_code
        self.media_type = media_type
        self.extra_headers = headers or {}
        self.build_body = body
        self.chunks = chunks
        self.wait_before = wait_before
        self.chunk_delay = chunk_delay
        self.die_after = die_after
        self.model = model
        self.background = None
        self.sent = 0
        self.finished = False

    def _start(self, content_length: int | None) -> dict[str, Any]:
        headers = [(b"content-type", self.media_type.encode())]
        if content_length is not None:
            headers.append((b"content-length", str(content_length).encode()))
        headers += [(k.lower().encode(), v.encode()) for k, v in self.extra_headers.items()]
        return {"type": "http.response.start", "status": self.status_code, "headers": headers}

    async def _watch(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not self.finished:
                    self.fake.disconnects.append(
                        Disconnect(time.monotonic(), self.rec.path, self.model, self.sent)
                    )
                    scope.cancel()
                return

    async def _send_all(self, send: Send) -> bool:
        """Send the response; True when a die fault says to drop the connection now."""
        if self.wait_before > 0:
            await anyio.sleep(self.wait_before)
        if self.chunks is None:
            assert self.build_body is not None
            body = self.build_body()
            await send(self._start(len(body)))
            if self.die_after is not None:
                half = body[: len(body) // 2]
                await send({"type": "http.response.body", "body": half, "more_body": True})
                self.sent = 1
                return True
            self.finished = True
            await send({"type": "http.response.body", "body": body, "more_body": False})
            self.sent = 1
            return False
        await send(self._start(None))
        async with contextlib.aclosing(self.chunks) as chunks:
            async for chunk in chunks:
                if self.die_after is not None and self.sent >= self.die_after:
                    return True
                if self.sent and self.chunk_delay > 0:
                    await anyio.sleep(self.chunk_delay)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self.sent += 1
        if self.die_after is not None:
            return True  # never send the terminating chunk
        self.finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        drop = False
        with self.fake._track():
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, receive, tg.cancel_scope)
                try:
                    drop = await self._send_all(send)
                finally:
                    if drop:
                        self.finished = True
                    tg.cancel_scope.cancel()
        if drop:
            raise _DeliberateDrop("fault: die_mid_stream")


class _FakeUpstream(Starlette):
    chat_path = "/"
    default_tokens: tuple[str, ...] = ()

    def __init__(
        self,
        models: Iterable[FakeModel | str],
        routes: list[Route],
        exception_handlers: dict[Any, Any] | None = None,
    ) -> None:
        _install_log_filter()
        self.models: dict[str, FakeModel] = {}
        for m in models:
            self.add_model(m)
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self.disconnects: list[Disconnect] = []
        self.in_flight = 0
        self._lock = threading.Lock()
        super().__init__(routes=routes, exception_handlers=exception_handlers)

    def add_model(self, model: FakeModel | str) -> FakeModel:
        m = FakeModel(model) if isinstance(model, str) else model
        self.models[m.name] = m
        return m

    @property
    def chat_bodies(self) -> list[Any]:
        """Parsed JSON bodies received on the chat endpoint, in order."""
        return [r.body for r in self.requests if r.path == self.chat_path and r.body is not None]

    def reset(self) -> None:
        """Forget recorded requests/disconnects and pending faults."""
        with self._lock:
            self.faults.clear()
        self.requests.clear()
        self.disconnects.clear()

    def tokens_of(self, model: FakeModel) -> list[str]:
        return list(model.tokens if model.tokens is not None else self.default_tokens)

    @contextlib.contextmanager
    def _track(self) -> Iterator[None]:
        with self._lock:
            self.in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self.faults):
                if (fault.path or self.chat_path) == path:
                    if not fault.sticky:
                        del self.faults[i]
                    return fault
        return None

    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        try:
            parsed = json.loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            parsed = None
        rec = RecordedRequest(
            method=request.method,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            raw=raw,
            body=parsed,
            at=time.monotonic(),
        )
        rec.fault = self._take_fault(rec.path)
        self.requests.append(rec)
        request.state.fake_record = rec
        return rec

    def _status_fault_reply(self, rec: RecordedRequest) -> Response | None:
        fault = rec.fault
        if fault is None or fault.kind != "status":
            return None
        headers = {}
        retry_after = fault.retry_after or ("1" if fault.status == 429 else None)
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        return self._error_response(fault.status, fault.message, headers)

    def _error_response(
        self, status: int, message: str | None, headers: dict[str, str] | None = None
    ) -> Response:
        raise NotImplementedError

    def _plain(
        self, rec: RecordedRequest, data: bytes, media_type: str, status: int = 200
    ) -> Response:
        """A simple reply, or the status fault's."""
        return self._status_fault_reply(rec) or Response(data, status, media_type=media_type)

    def _route(
        self, path: str, handler: Callable[[Request], Awaitable[Response]], method: str
    ) -> Route:
        """A route whose plain (non-``_Reply``) answers, errors included, still honour the
        request's hang and die faults."""

        async def endpoint(request: Request) -> Response:
            response = await handler(request)
            rec: RecordedRequest | None = getattr(request.state, "fake_record", None)
            kind = rec.fault.kind if rec is not None and rec.fault is not None else None
            if rec is None or isinstance(response, _Reply):
                return response
            if kind not in ("hang_before_headers", "die_mid_stream"):
                return response
            data = bytes(response.body)
            skip = ("content-type", "content-length")
            return _Reply(
                self,
                rec,
                media_type=response.headers.get("content-type", "application/octet-stream"),
                status_code=response.status_code,
                headers={k: v for k, v in response.headers.items() if k not in skip},
                body=lambda: data,
                **self._reply_kwargs(rec, None, 1, stream=False),
            )

        return Route(path, endpoint, methods=[method])

    def _reply_kwargs(
        self, rec: RecordedRequest, model: FakeModel | None, n_chunks: int, stream: bool
    ) -> dict[str, Any]:
        """wait/delay/die settings from the request's fault and the model's pace."""
        fault = rec.fault
        wait = 0.0
        delay = model.token_delay if model is not None else 0.0
        die_after = None
        if fault is not None:
            if fault.kind == "hang_before_headers":
                wait += fault.seconds
            elif fault.kind == "slow_chunks":
                delay += fault.seconds
            elif fault.kind == "die_mid_stream":
                die_after = fault.after
        if not stream:
            wait += delay * max(0, n_chunks - 1)
            delay = 0.0
        return {"wait_before": wait, "chunk_delay": delay, "die_after": die_after}


# --------------------------------------------------------------------------------------------
# Ollama


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _go_quote_char(ch: str) -> str:
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    text = json.dumps(ch)[1:-1] if not ch.isprintable() else ch
    return f"'{text}'"


def _go_decode_error(err: json.JSONDecodeError) -> str:
    """The message Go's json.Decoder gives for the same syntax error (approximately)."""
    doc = err.doc
    if err.pos >= len(doc.rstrip()) or err.msg.startswith("Unterminated"):
        return "unexpected EOF"
    ch = _go_quote_char(doc[err.pos])
    if err.msg.startswith("Expecting property name"):
        return f"invalid character {ch} looking for beginning of object key string"
    if err.msg.startswith("Expecting ':'"):
        return f"invalid character {ch} after object key"
    if err.msg.startswith("Expecting ','"):
        stack = doc[: err.pos].rstrip()
        depth = [c for c in stack if c in "[]{}"]
        inside = "array element" if depth and depth[-1] == "[" else "object key:value pair"
        return f"invalid character {ch} after {inside}"
    if err.msg.startswith("Invalid control character"):
        return f"invalid character {ch} in string literal"
    for literal in ("null", "true", "false"):
        if doc[err.pos] == literal[0]:
            for k, want in enumerate(literal):
                if err.pos + k >= len(doc):
                    return "unexpected EOF"
                if doc[err.pos + k] != want:
                    got = _go_quote_char(doc[err.pos + k])
                    return f"invalid character {got} in literal {literal} (expecting '{want}')"
    return f"invalid character {ch} looking for beginning of value"


# Go types of the ChatRequest fields the fake checks, and Options' kinds.
_CHAT_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), "string"),
    "messages": ((list,), "[]api.Message"),
    "stream": ((bool,), "bool"),
    "options": ((dict,), "map[string]interface {}"),
    "truncate": ((bool,), "bool"),
    "shift": ((bool,), "bool"),
    "tools": ((list,), "api.Tools"),
}
_INT_OPTIONS = {
    "num_predict",
    "top_k",
    "seed",
    "num_ctx",
    "num_keep",
    "num_batch",
    "num_gpu",
    "num_thread",
    "repeat_last_n",
    "main_gpu",
}
_FLOAT_OPTIONS = {
    "temperature",
    "top_p",
    "min_p",
    "typical_p",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
}
_BOOL_OPTIONS = {"use_mmap", "numa", "penalize_newline", "low_vram"}


def _ollama_option_error(options: dict[str, Any]) -> str | None:
    for key, val in options.items():
        if val is None:
            continue
        if key in _INT_OPTIONS and (isinstance(val, bool) or not isinstance(val, int | float)):
            return f'option "{key}" must be of type integer'
        if key in _FLOAT_OPTIONS and (isinstance(val, bool) or not isinstance(val, int | float)):
            return f'option "{key}" must be of type float32'
        if key in _BOOL_OPTIONS and not isinstance(val, bool):
            return f'option "{key}" must be of type boolean'
        if key == "stop":
            if not isinstance(val, list):
                return 'option "stop" must be of type array'
            if not all(isinstance(s, str) for s in val):
                return 'option "stop" must be of an array of strings'
    return None


_THINK_LEVELS = ("high", "medium", "low")
_GO_DURATION = re.compile(r"[-+]?([0-9]*(\.[0-9]*)?(ns|us|µs|μs|ms|s|m|h))+")


def _ollama_name(name: str) -> str:
    """Ollama's name normalisation for lookups: a missing tag means ``:latest``."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


class FakeOllama(_FakeUpstream):
    """Ollama's native API (``/api/chat``, ``/api/tags``, ``/api/ps``, ``/api/version``, ``/``;
    ``/api/embed`` as ``tests.fake_embeddings`` describes).

    ``models``: ``FakeModel``\\ s or names (default one model, ``llama3:8b``).
    ``default_num_ctx``: ``num_ctx`` when the request's options do not set it.
    """

    chat_path = "/api/chat"
    default_tokens = DEFAULT_OLLAMA_TOKENS

    def __init__(
        self,
        models: Iterable[FakeModel | str] = ("llama3:8b",),
        *,
        default_num_ctx: int = 4096,
        version: str = OLLAMA_VERSION,
    ) -> None:
        self.default_num_ctx = default_num_ctx
        self.version = version
        self.loaded: dict[str, str] = {}  # model name -> expires_at
        routes = [
            self._route("/", self._root, "GET"),
            self._route("/api/version", self._version, "GET"),
            self._route("/api/tags", self._tags, "GET"),
            self._route("/api/ps", self._ps, "GET"),
            self._route("/api/show", self._show, "POST"),
            self._route("/api/chat", self._chat, "POST"),
            self._route("/api/generate", self._generate_raw, "POST"),
            self._route("/api/embed", self._embed, "POST"),
        ]
        handlers = {404: self._not_found, 405: self._not_found}
        super().__init__(models, routes, handlers)

    # -- helpers

    def reset(self) -> None:
        """Forget records, pending faults and which models are loaded."""
        super().reset()
        self.loaded.clear()

    def lookup(self, name: str) -> FakeModel | None:
        wanted = _ollama_name(name)
        for model in self.models.values():
            if _ollama_name(model.name) == wanted:
                return model
        return None

    @staticmethod
    def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(_go_json(obj), status, headers, media_type=_JSON_GO)

    def _error_response(
        self, status: int, message: str | None, headers: dict[str, str] | None = None
    ) -> Response:
        default = {
            400: "bad request",
            404: "model not found",
            429: "too many requests, please try again later",
            500: "llama runner process has terminated: exit status 2",
            503: "server busy, please try again.  maximum pending requests exceeded",
        }.get(status, "internal server error")
        return self._json({"error": message or default}, status, headers)

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return PlainTextResponse("404 page not found", 404)

    def _details(self, m: FakeModel) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": m.family,
            "families": [m.family],
            "parameter_size": m.parameter_size,
            "quantization_level": m.quantization_level,
        }

    # -- simple routes

    async def _root(self, request: Request) -> Response:
        rec = await self._record(request)
        return self._plain(rec, b"Ollama is running", "text/plain; charset=utf-8")

    async def _version(self, request: Request) -> Response:
        rec = await self._record(request)
        return self._plain(rec, _go_json({"version": self.version}), _JSON_GO)

    async def _tags(self, request: Request) -> Response:
        rec = await self._record(request)
        models = [
            {
                "name": m.name,
                "model": m.name,
                "modified_at": "2025-09-30T10:12:09.123456789Z",
                "size": m.size,
                "digest": m.digest,
                "details": self._details(m),
            }
            for m in self.models.values()
        ]
        return self._plain(rec, _go_json({"models": models}), _JSON_GO)

    async def _ps(self, request: Request) -> Response:
        rec = await self._record(request)
        models = [
            {
                "name": m.name,
                "model": m.name,
                "size": m.size,
                "digest": m.digest,
                "details": self._details(m),
                "expires_at": self.loaded[m.name],
                "size_vram": m.size,
                "context_length": m.context_length,
            }
            for m in self.models.values()
            if m.name in self.loaded
        ]
        return self._plain(rec, _go_json({"models": models}), _JSON_GO)

    async def _show(self, request: Request) -> Response:
        rec = await self._record(request)
        if reply := self._status_fault_reply(rec):
            return reply
        body = rec.body if isinstance(rec.body, dict) else {}
        name = body.get("model") or body.get("name") or ""
        if not isinstance(name, str) or not name:
            return self._json({"error": "model is required"}, 400)
        model = self.lookup(name)
        if model is None:
            return self._json({"error": f"model '{name}' not found"}, 404)
        capabilities = ["completion"]
        if model.supports_tools:
            capabilities.append("tools")
        if model.reasoning is not None:
            capabilities.append("thinking")
        family = model.family
        show = {
            "license": "",
            "modelfile": f"FROM {model.name}\n",
            "parameters": 'stop "<|eot_id|>"',
            "template": "{{ .Prompt }}",
            "details": self._details(model),
            "model_info": {
                "general.architecture": family,
                "general.parameter_count": 8_030_261_248,
                f"{family}.context_length": model.context_length,
                f"{family}.embedding_length": 4096,
            },
            "capabilities": capabilities,
            "modified_at": "2025-09-30T10:12:09.123456789Z",
        }
        return self._json(show)

    # -- /api/chat

    async def _embed(self, request: Request) -> Response:
        """``/api/embed`` (``tests.fake_embeddings``)."""
        rec = await self._record(request)
        if reply := self._status_fault_reply(rec):
            return reply
        body = rec.body if isinstance(rec.body, dict) else {}
        model = self.lookup(str(body.get("model") or ""))
        status, payload = ollama_embed(body, model is not None, self.default_num_ctx)
        if model is not None and status == 200:
            self._mark_loaded(model, body.get("keep_alive"))
        return self._json(payload, status)

    async def _chat(self, request: Request) -> Response:
        started = time.monotonic_ns()
        rec = await self._record(request)
        if reply := self._status_fault_reply(rec):
            return reply
        raw = rec.raw
        if not raw.strip():
            return self._json({"error": "missing request body"}, 400)
        try:
            text = raw.decode()
            body, _ = json.JSONDecoder().raw_decode(text, len(text) - len(text.lstrip()))
        except UnicodeDecodeError:
            return self._json({"error": "invalid character looking for beginning of value"}, 400)
        except json.JSONDecodeError as err:
            return self._json({"error": _go_decode_error(err)}, 400)
        if not isinstance(body, dict):
            msg = f"json: cannot unmarshal {_go_type(body)} into Go value of type api.ChatRequest"
            return self._json({"error": msg}, 400)
        rec.body = body
        if error := self._type_error(body):
            return self._json({"error": error}, 400)

        name = body.get("model") or ""
        if not name:
            return self._json({"error": "model is required"}, 400)
        model = self.lookup(name)
        if model is None:
            return self._json({"error": f'model "{name}" not found, try pulling it first'}, 404)

        messages: list[dict[str, Any]] = body.get("messages") or []
        keep_alive = body.get("keep_alive")
        if not messages:
            unload = keep_alive in (0, "0", "0s", "0m")
            if unload:
                self.loaded.pop(model.name, None)
            else:
                self._mark_loaded(model, keep_alive)
            return self._json(
                {
                    "model": name,
                    "created_at": _rfc3339_nano(),
                    "message": {"role": "assistant", "content": ""},
                    "done_reason": "unload" if unload else "load",
                    "done": True,
                }
            )
        tools = body.get("tools") or []
        if tools and not model.supports_tools:
            return self._json({"error": f'"{name}" does not support tools'}, 400)
        options: dict[str, Any] = body.get("options") or {}
        if error := _ollama_option_error(options):
            return self._json({"error": error}, 500)
        fmt = body.get("format")
        if fmt not in (None, "", "json") and not isinstance(fmt, dict):
            quoted = json.dumps(json.dumps(fmt))
            msg = f'invalid format: {quoted}; expected "json" or a valid JSON Schema object'
            return self._json({"error": msg}, 500)
        think = body.get("think")
        if think is not None and not isinstance(think, bool) and think not in _THINK_LEVELS:
            msg = (
                f"invalid think value: {json.dumps(think)} "
                '(must be "high", "medium", "low", true, or false)'
            )
            return self._json({"error": msg}, 400)
        if think not in (None, False) and model.reasoning is None:
            return self._json({"error": f'"{name}" does not support thinking'}, 400)

        num_ctx = int(options.get("num_ctx") or self.default_num_ctx)
        prompt_tokens = sum(_words(m.get("content") or "") for m in messages if isinstance(m, dict))
        if body.get("truncate") is False and prompt_tokens > num_ctx:
            inner = {
                "error": {
                    "code": 400,
                    "message": f"request ({prompt_tokens} tokens) exceeds the available context "
                    f"size ({num_ctx} tokens), try increasing it",
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": prompt_tokens,
                    "n_ctx": num_ctx,
                }
            }
            return self._json({"error": json.dumps(inner, separators=(",", ":"))}, 400)
        prompt_tokens = min(prompt_tokens, num_ctx)
        self._mark_loaded(model, keep_alive)

        # what the model "generates"
        last_role = messages[-1].get("role") if isinstance(messages[-1], dict) else None
        # a format constrains the whole answer: the model writes JSON, not a call
        tool_call = model.tool_call if tools and not fmt and last_role != "tool" else None
        thoughts = list(model.reasoning or []) if think is not False else []
        if tool_call is not None:
            pieces: list[str] = []
            generated, reason = 1, "stop"
        else:
            if fmt:
                hint = {**model.json_reply, **(model.tool_call or {})}
                value = _instance_of(fmt, hint) if isinstance(fmt, dict) else model.json_reply
                pieces = _json_pieces(value)
            else:
                pieces = self.tokens_of(model)
            limit = int(options.get("num_predict") or 0)  # <= 0: no limit
            pieces, generated, reason = _generate(pieces, limit, options.get("stop") or [])

        stream = body.get("stream")
        stream = True if stream is None else stream
        fault = rec.fault
        n_chunks = max(1, len(pieces)) + 1
        generated += len(thoughts)
        kwargs = self._reply_kwargs(rec, model, n_chunks + len(thoughts), stream)

        def final(
            content: str, tool_calls: list[dict[str, Any]] | None, thinking: str = ""
        ) -> dict[str, Any]:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            if tool_calls:
                message["tool_calls"] = tool_calls
            out: dict[str, Any] = {
                "model": name,
                "created_at": _rfc3339_nano(),
                "message": message,
                "done_reason": reason,
                "done": True,
            }
            load_ns = 1_250_000
            prompt_ns = 150_000 * max(1, prompt_tokens)
            eval_ns = max(10_000 * generated, time.monotonic_ns() - started - load_ns - prompt_ns)
            out["total_duration"] = load_ns + prompt_ns + eval_ns + 250_000
            out["load_duration"] = load_ns
            if model.report_counts:
                out["prompt_eval_count"] = prompt_tokens
            out["prompt_eval_duration"] = prompt_ns
            if model.report_counts:
                out["eval_count"] = generated
            out["eval_duration"] = eval_ns
            return out

        calls = (
            [{"function": {"name": tool_call["name"], "arguments": tool_call["arguments"]}}]
            if tool_call is not None
            else None
        )
        error_text = (fault.message if fault else None) or (
            "an error was encountered while running the model: unexpected EOF"
        )
        if not stream:
            if fault is not None and fault.kind == "error_line":
                return self._json({"error": error_text}, 500)
            return _Reply(
                self,
                rec,
                media_type=_JSON_GO,
                body=lambda: _go_json(final("".join(pieces), calls, "".join(thoughts))),
                model=name,
                **kwargs,
            )

        async def lines() -> AsyncIterator[bytes]:
            error_after = fault.after if fault is not None and fault.kind == "error_line" else None
            partials: list[dict[str, Any]] = [
                {"role": "assistant", "content": "", "thinking": piece} for piece in thoughts
            ]
            partials += [{"role": "assistant", "content": piece} for piece in pieces]
            if calls is not None:
                partials[len(thoughts) :] = [
                    {"role": "assistant", "content": "", "tool_calls": calls}
                ]
            for sent, message in enumerate(partials):
                if error_after is not None and sent >= error_after:
                    break
                line = {
                    "model": name,
                    "created_at": _rfc3339_nano(),
                    "message": message,
                    "done": False,
                }
                yield _go_json(line) + b"\n"
            if error_after is not None:
                yield _go_json({"error": error_text}) + b"\n"
                return
            yield _go_json(final("", None)) + b"\n"

        return _Reply(
            self, rec, media_type="application/x-ndjson", chunks=lines(), model=name, **kwargs
        )

    # -- /api/generate (raw prompts only: what llmgate sends)

    async def _generate_raw(self, request: Request) -> Response:
        rec = await self._record(request)
        if reply := self._status_fault_reply(rec):
            return reply
        body = rec.body if isinstance(rec.body, dict) else {}
        name = body.get("model") or ""
        model = self.lookup(name) if name else None
        if model is None:
            return self._json({"error": f'model "{name}" not found, try pulling it first'}, 404)
        options: dict[str, Any] = body.get("options") or {}
        limit = int(options.get("num_predict") or 0)
        pieces, generated, reason = _generate(
            self.tokens_of(model), limit, options.get("stop") or []
        )
        prompt_tokens = _words(body.get("prompt") or "")
        self._mark_loaded(model, body.get("keep_alive"))

        def line(text: str, done: bool) -> bytes:
            out: dict[str, Any] = {
                "model": name,
                "created_at": _rfc3339_nano(),
                "response": text,
                "done": done,
            }
            if done:
                out.update(
                    done_reason=reason,
                    context=[1, 2, 3],
                    total_duration=2_000_000,
                    load_duration=1_000_000,
                    prompt_eval_count=prompt_tokens,
                    prompt_eval_duration=500_000,
                    eval_count=generated,
                    eval_duration=500_000,
                )
            return _go_json(out)

        if body.get("stream") is False:
            return self._json(json.loads(line("".join(pieces), True)))

        async def lines() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield line(piece, False) + b"\n"
            yield line("", True) + b"\n"

        kwargs = self._reply_kwargs(rec, model, len(pieces) + 1, True)
        return _Reply(
            self, rec, media_type="application/x-ndjson", chunks=lines(), model=name, **kwargs
        )

    def _mark_loaded(self, model: FakeModel, keep_alive: Any) -> None:
        if keep_alive in (0, "0", "0s", "0m"):
            self.loaded.pop(model.name, None)
            return
        self.loaded[model.name] = _rfc3339_nano(time.time_ns() + 300 * 1_000_000_000)

    @staticmethod
    def _type_error(body: dict[str, Any]) -> str | None:
        for key, (types, go_type) in _CHAT_FIELDS.items():
            val = body.get(key)
            if val is not None and (
                not isinstance(val, types) or (bool not in types and isinstance(val, bool))
            ):
                return (
                    f"json: cannot unmarshal {_go_type(val)} into Go struct field "
                    f"ChatRequest.{key} of type {go_type}"
                )
        keep_alive = body.get("keep_alive")
        if isinstance(keep_alive, str) and keep_alive not in ("", "0"):
            if re.fullmatch(r"[-+]?[0-9.]+", keep_alive):
                return f'time: missing unit in duration "{keep_alive}"'
            if not _GO_DURATION.fullmatch(keep_alive):
                return f'time: invalid duration "{keep_alive}"'
        elif keep_alive is not None and not isinstance(keep_alive, str | int | float):
            return (
                f"json: cannot unmarshal {_go_type(keep_alive)} into Go struct field "
                "ChatRequest.keep_alive of type api.Duration"
            )
        for message in body.get("messages") or []:
            if not isinstance(message, dict):
                return (
                    f"json: cannot unmarshal {_go_type(message)} into Go struct field "
                    "ChatRequest.messages of type api.Message"
                )
            for key in ("role", "content"):
                val = message.get(key)
                if val is not None and not isinstance(val, str):
                    return (
                        f"json: cannot unmarshal {_go_type(val)} into Go struct field "
                        f"ChatRequest.messages.{key} of type string"
                    )
            for call in message.get("tool_calls") or []:
                args = (
                    (call.get("function") or {}).get("arguments")
                    if isinstance(call, dict)
                    else None
                )
                if args is not None and not isinstance(args, dict):
                    return (
                        f"json: cannot unmarshal {_go_type(args)} into Go struct field "
                        "ChatRequest.messages.tool_calls.function.arguments of type "
                        "api.ToolCallFunctionArguments"
                    )
        return None


# --------------------------------------------------------------------------------------------
# OpenAI-compatible (vLLM / llama-server)


def _oai_error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    payload = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return Response(_compact(payload), status, headers, media_type="application/json")


def _content_words(content: Any) -> int:
    if isinstance(content, str):
        return _words(content)
    if isinstance(content, list):
        return sum(
            _words(part.get("text") or "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return 0


_NUMBER_LIMITS: dict[str, tuple[float, float, str]] = {
    "temperature": (0, 2, "decimal"),
    "top_p": (0, 1, "decimal"),
    "presence_penalty": (-2, 2, "decimal"),
    "frequency_penalty": (-2, 2, "decimal"),
    "max_tokens": (1, math.inf, "integer"),
    "max_completion_tokens": (1, math.inf, "integer"),
    "n": (1, 128, "integer"),
    "seed": (-math.inf, math.inf, "integer"),
    "top_logprobs": (0, 20, "integer"),
}
_ROLES = ("system", "assistant", "user", "function", "tool", "developer")


def _oai_kind(value: Any) -> str:
    return {
        "bool": "a boolean",
        "number": "a number",
        "string": "a string",
        "array": "an array",
        "object": "an object",
    }.get(_go_type(value), "null")


def _fmt_num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _oai_validate(body: dict[str, Any], models: dict[str, FakeModel]) -> Response | None:
    if "model" not in body or body["model"] in (None, ""):
        return _oai_error(
            400,
            "Missing required parameter: 'model'.",
            param="model",
            code="missing_required_parameter",
        )
    if not isinstance(body["model"], str):
        return _oai_error(
            400,
            "Invalid type for 'model': expected a string, but got "
            f"{_oai_kind(body['model'])} instead.",
            param="model",
            code="invalid_type",
        )
    if body["model"] not in models:
        return _oai_error(
            404,
            f"The model `{body['model']}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    messages = body.get("messages")
    if messages is None:
        return _oai_error(
            400,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list):
        return _oai_error(
            400,
            f"Invalid type for 'messages': expected an array, but got {_oai_kind(messages)} "
            "instead.",
            param="messages",
            code="invalid_type",
        )
    if not messages:
        return _oai_error(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in _ROLES:
            supported = ", ".join(f"'{r}'" for r in _ROLES[:-1]) + f", and '{_ROLES[-1]}'"
            return _oai_error(
                400,
                f"Invalid value: '{role}'. Supported values are: {supported}.",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
    for name, (lo, hi, kind) in _NUMBER_LIMITS.items():
        value = body.get(name)
        if value is None:
            continue
        ok_type = not isinstance(value, bool) and (
            isinstance(value, int) if kind == "integer" else isinstance(value, int | float)
        )
        if not ok_type:
            return _oai_error(
                400,
                f"Invalid type for '{name}': expected "
                f"{'an integer' if kind == 'integer' else 'a decimal'}, "
                f"but got {_oai_kind(value)} instead.",
                param=name,
                code="invalid_type",
            )
        if value < lo or value > hi:
            side, bound, cmp = (
                ("below minimum", lo, ">=") if value < lo else ("above maximum", hi, "<=")
            )
            return _oai_error(
                400,
                f"Invalid '{name}': {kind} {side} value. Expected a value {cmp} "
                f"{_fmt_num(bound)}, but got {_fmt_num(value)} instead.",
                param=name,
                code=f"{kind}_{'below_min' if value < lo else 'above_max'}_value",
            )
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        return _oai_error(
            400,
            "Invalid type for 'stop': expected one of a string or an array of strings.",
            param="stop",
            code="invalid_type",
        )
    if body.get("stream_options") is not None and not body.get("stream"):
        return _oai_error(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    return None


def _oai_tool_choice_error(tools: Any, choice: Any) -> Response | None:
    if choice is None or choice in ("none", "auto"):
        return None
    if not tools:
        return _oai_error(
            400,
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            param="tool_choice",
        )
    if choice == "required":
        return None
    wanted = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if wanted is None:
        return _oai_error(
            400,
            f"Invalid value for 'tool_choice': {json.dumps(choice)}.",
            param="tool_choice",
            code="invalid_value",
        )
    if wanted not in _oai_tool_names(tools):
        return _oai_error(
            400,
            f"Invalid value for 'tool_choice': no function named '{wanted}' was specified in "
            "the 'tools' parameter.",
            param="tool_choice",
            code="invalid_value",
        )
    return None


def _oai_tool_names(tools: list[Any]) -> list[str]:
    return [str((t.get("function") or {}).get("name")) for t in tools if isinstance(t, dict)]


def _oai_tool_call(
    model: FakeModel, tools: list[Any], choice: Any, messages: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The call the model makes: a forced one ("required", a named function) always — the
    scripted call when it is the one wanted, else the wanted tool with arguments built from its
    parameters; with "auto" the scripted call unless the last message is a tool result."""
    if not tools or choice in (None, "auto", "none"):
        auto = choice != "none" and messages[-1].get("role") != "tool"
        return model.tool_call if tools and auto else None
    names = _oai_tool_names(tools)
    scripted = model.tool_call
    if isinstance(choice, dict):
        wanted = choice["function"]["name"]
    else:
        wanted = scripted["name"] if scripted and scripted["name"] in names else names[0]
    if scripted is not None and scripted["name"] == wanted:
        return scripted
    parameters = next(
        (t["function"].get("parameters") for t in tools if t["function"].get("name") == wanted),
        None,
    )
    arguments = _instance_of(parameters, model.json_reply) if parameters else {}
    return {"name": wanted, "arguments": arguments}


class FakeOpenAI(_FakeUpstream):
    """An OpenAI-compatible server (``/v1/chat/completions``, ``/v1/models``, ``/health``;
    ``/v1/embeddings`` as ``tests.fake_embeddings`` describes).

    ``models``: ``FakeModel``\\ s or names (default one model, ``fake-model``).
    ``api_key``: when set, ``/v1/*`` requires ``Authorization: Bearer <api_key>``.
    ``owned_by``: the ``owned_by`` of ``/v1/models`` entries.
    """

    chat_path = "/v1/chat/completions"
    default_tokens = DEFAULT_OPENAI_TOKENS

    def __init__(
        self,
        models: Iterable[FakeModel | str] = ("fake-model",),
        *,
        api_key: str | None = None,
        owned_by: str = "vllm",
    ) -> None:
        self.api_key = api_key
        self.owned_by = owned_by
        self.created = int(time.time())
        routes = [
            self._route("/health", self._health, "GET"),
            self._route("/v1/models", self._models, "GET"),
            self._route("/v1/chat/completions", self._chat, "POST"),
            self._route("/v1/completions", self._completions, "POST"),
            self._route("/v1/embeddings", self._embeddings, "POST"),
        ]
        super().__init__(models, routes, {404: self._not_found, 405: self._not_allowed})

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return Response(b'{"detail":"Not Found"}', 404, media_type="application/json")

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        body = b'{"detail":"Method Not Allowed"}'
        return Response(body, 405, media_type="application/json")

    def _error_response(
        self, status: int, message: str | None, headers: dict[str, str] | None = None
    ) -> Response:
        type_, code, default = {
            400: ("invalid_request_error", None, "Bad request."),
            401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
            404: ("invalid_request_error", None, "Not found."),
            429: (
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached for requests. Please try again in 1s.",
            ),
            500: (
                "server_error",
                None,
                "The server had an error while processing your request. Sorry about that!",
            ),
            503: ("server_error", None, "The server is overloaded or not ready yet."),
        }.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
        )
        return _oai_error(status, message or default, type_=type_, code=code, headers=headers)

    def _auth_error(self, rec: RecordedRequest) -> Response | None:
        if self.api_key is None:
            return None
        header = rec.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header or scheme.lower() != "bearer":
            return _oai_error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if token.strip() != self.api_key:
            masked = token[:3] + "*" * 10 + token[-4:] if len(token) > 8 else "*" * len(token)
            return _oai_error(401, f"Incorrect API key provided: {masked}.", code="invalid_api_key")
        return None

    async def _health(self, request: Request) -> Response:
        rec = await self._record(request)
        return self._plain(rec, b"", "application/json")

    async def _models(self, request: Request) -> Response:
        rec = await self._record(request)
        if reply := self._status_fault_reply(rec) or self._auth_error(rec):
            return reply
        data = [
            {
                "id": m.name,
                "object": "model",
                "created": self.created,
                "owned_by": self.owned_by,
                "root": m.name,
                "parent": None,
                "max_model_len": m.context_length,
            }
            for m in self.models.values()
        ]
        return self._plain(rec, _compact({"object": "list", "data": data}), "application/json")

    async def _embeddings(self, request: Request) -> Response:
        """``/v1/embeddings`` (``tests.fake_embeddings``)."""
        rec = await self._record(request)
        if reply := self._status_fault_reply(rec) or self._auth_error(rec):
            return reply
        body = rec.body if isinstance(rec.body, dict) else {}
        status, payload = openai_embed(body, body.get("model") in self.models)
        if isinstance(payload, tuple):
            message, param, code = payload
            return _oai_error(status, message, param=param, code=code)
        return Response(_compact(payload), status, media_type="application/json")

    async def _chat(self, request: Request) -> Response:
        rec = await self._record(request)
        if reply := self._status_fault_reply(rec) or self._auth_error(rec):
            return reply
        body = rec.body
        if not isinstance(body, dict):
            return _oai_error(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
                "but what was sent was not valid JSON. If you have trouble figuring out how to fix "
                "this, please contact us through our help center at help.openai.com.)",
            )
        if error := _oai_validate(body, self.models):
            return error
        name: str = body["model"]
        model = self.models[name]
        messages: list[dict[str, Any]] = body["messages"]
        prompt_tokens = sum(_content_words(m.get("content")) for m in messages)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if prompt_tokens + (max_tokens or 0) > model.context_length:
            return _oai_error(
                400,
                f"This model's maximum context length is {model.context_length} tokens. However, "
                f"you requested {prompt_tokens + (max_tokens or 0)} tokens ({prompt_tokens} in "
                f"the messages, {max_tokens or 0} in the completion). Please reduce the length "
                "of the messages or completion.",
                param="messages",
                code="context_length_exceeded",
            )

        tools = body.get("tools") or []
        if error := _oai_tool_choice_error(tools, body.get("tool_choice")):
            return error
        tool_call = _oai_tool_call(model, tools, body.get("tool_choice"), messages)
        pieces: list[str] = []
        generated, reason = 0, "stop"
        matched: str | None = None  # vLLM's `stop_reason`: the stop string that ended it
        call_id = "call_" + secrets.token_hex(12)
        thoughts = list(model.reasoning or [])
        if tool_call is not None:
            arguments = json.dumps(tool_call["arguments"])
            generated, reason = max(1, _words(arguments)), "tool_calls"
        else:
            fmt = body.get("response_format")
            fmt = fmt if isinstance(fmt, dict) else {}
            if fmt.get("type") == "json_schema":
                schema = (fmt.get("json_schema") or {}).get("schema")
                pieces = _json_pieces(_instance_of(schema, model.json_reply))
            elif fmt.get("type") == "json_object":
                pieces = _json_pieces(model.json_reply)
            else:
                pieces = self.tokens_of(model)
            stop = body.get("stop") or []
            stops = [stop] if isinstance(stop, str) else stop
            script = pieces
            pieces, generated, reason = _generate(pieces, max_tokens or 0, stops)
            matched = _first_stop("".join(script[:generated]), stops)

        generated += len(thoughts)
        n = int(body.get("n") or 1)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": generated * n,
            "total_tokens": prompt_tokens + generated * n,
        }
        completion_id = "chatcmpl-" + uuid.uuid4().hex
        created = int(time.time())
        fault = rec.fault
        stream = bool(body.get("stream"))
        steps = len(thoughts) + (3 if tool_call is not None else len(pieces))
        kwargs = self._reply_kwargs(rec, model, steps + 2, stream)
        error_text = (fault.message if fault else None) or "The model's engine died unexpectedly."

        if not stream:
            if fault is not None and fault.kind == "error_line":
                return self._error_response(500, error_text)
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(pieces) if tool_call is None else None,
                "refusal": None,
            }
            if thoughts:
                message[model.reasoning_field] = "".join(thoughts)
            if tool_call is not None:
                message["tool_calls"] = [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": tool_call["name"], "arguments": arguments},
                    }
                ]
            payload = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": name,
                "choices": [
                    {
                        "index": i,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": reason,
                        "stop_reason": matched,
                    }
                    for i in range(n)
                ],
                "usage": usage,
            }
            return _Reply(
                self,
                rec,
                media_type="application/json",
                body=lambda: _compact(payload),
                model=name,
                **kwargs,
            )

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> bytes:
            payload: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": name,
                "choices": [],
            }
            if delta is not None:
                payload["choices"] = [
                    {
                        "index": i,
                        "delta": delta,
                        "logprobs": None,
                        "finish_reason": finish,
                        "stop_reason": matched if finish else None,
                    }
                    for i in range(n)
                ]
            if include_usage:
                payload["usage"] = usage if delta is None else None
            return b"data: " + _compact(payload) + b"\n\n"

        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{model.reasoning_field: piece} for piece in thoughts]
        if tool_call is not None:
            half = len(arguments) // 2
            deltas += [
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": tool_call["name"], "arguments": ""},
                        }
                    ]
                },
                {"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]},
                {"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]},
            ]
        else:
            deltas += [{"content": piece} for piece in pieces]

        async def events() -> AsyncIterator[bytes]:
            error_after = fault.after if fault is not None and fault.kind == "error_line" else None
            for sent, delta in enumerate(deltas):
                if error_after is not None and sent >= error_after:
                    break
                yield chunk(delta)
            if error_after is not None:
                error = {
                    "error": {
                        "message": error_text,
                        "type": "InternalServerError",
                        "param": None,
                        "code": 500,
                    }
                }
                yield b"data: " + _compact(error) + b"\n\n"
                yield b"data: [DONE]\n\n"
                return
            yield chunk({}, reason)
            if include_usage:
                yield chunk(None)
            yield b"data: [DONE]\n\n"

        return _Reply(
            self,
            rec,
            media_type="text/event-stream; charset=utf-8",
            chunks=events(),
            model=name,
            **kwargs,
        )

    async def _completions(self, request: Request) -> Response:
        """``/v1/completions`` as vLLM answers it: one set of ``n`` choices per prompt, ``echo``
        repeats the prompt, token-id prompts count one token per id."""
        rec = await self._record(request)
        if reply := self._status_fault_reply(rec) or self._auth_error(rec):
            return reply
        body = rec.body if isinstance(rec.body, dict) else {}
        name = body.get("model")
        if name not in self.models:
            return _oai_error(
                404, f"The model `{name}` does not exist.", param="model", code="model_not_found"
            )
        model = self.models[name]
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) or not isinstance(prompt, list) else prompt
        if prompts and all(isinstance(t, int) for t in prompts):
            prompts = [prompts]
        stop = body.get("stop") or []
        max_tokens = body.get("max_tokens")
        limit = 16 if max_tokens is None else int(max_tokens)
        pieces, generated, reason = _generate(
            self.tokens_of(model), limit, [stop] if isinstance(stop, str) else stop
        )
        n = int(body.get("n") or 1)
        echo = bool(body.get("echo"))

        def prompt_text(p: Any) -> str:
            return p if isinstance(p, str) else " ".join(map(str, p))

        prompt_tokens = sum(_words(p) if isinstance(p, str) else len(p) for p in prompts)
        choices = [
            (i * n + j, prompt_text(p) if echo else "")
            for i, p in enumerate(prompts)
            for j in range(n)
        ]
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": generated * len(choices),
            "total_tokens": prompt_tokens + generated * len(choices),
        }
        base = {
            "id": "cmpl-" + uuid.uuid4().hex,
            "object": "text_completion",
            "created": int(time.time()),
            "model": name,
        }

        def choice(index: int, text: str, finish: str | None) -> dict[str, Any]:
            return {
                "index": index,
                "text": text,
                "logprobs": None,
                "finish_reason": finish,
                "stop_reason": None,
            }

        if not body.get("stream"):
            payload = {
                **base,
                "choices": [choice(i, e + "".join(pieces), reason) for i, e in choices],
                "usage": usage,
            }
            return self._plain(rec, _compact(payload), "application/json")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            for index, echoed in choices:
                for k, piece in enumerate(pieces):
                    text = (echoed if k == 0 else "") + piece
                    yield (
                        b"data: "
                        + _compact({**base, "choices": [choice(index, text, None)]})
                        + b"\n\n"
                    )
                yield (
                    b"data: " + _compact({**base, "choices": [choice(index, "", reason)]}) + b"\n\n"
                )
            if include_usage:
                yield b"data: " + _compact({**base, "choices": [], "usage": usage}) + b"\n\n"
            yield b"data: [DONE]\n\n"

        kwargs = self._reply_kwargs(rec, model, len(pieces) * len(choices) + 2, True)
        return _Reply(
            self,
            rec,
            media_type="text/event-stream; charset=utf-8",
            chunks=events(),
            model=name,
            **kwargs,
        )
