"""The OpenAI Responses surface's translator (``POST /v1/responses``, stateless): a
``ResponsesRequest`` into the core's ``GenerationRequest`` and the response's echo of the
request; the events become the Responses stream or one response in
``gateway.responses_stream``. The routes are in ``gateway.responses_api``.

llmgate stores nothing, so what needs a stored response (``previous_response_id``,
``store: true``, ``conversation``, ``background``, stored ``prompt``s, ``item_reference``
items) is a 400 that names the field, never silently dropped. Every backend serves this
surface through ``generate`` (an OpenAI-compatible upstream gets chat completions).
"""

from __future__ import annotations

import time
from typing import Any

from backends.errors import InvalidRequestError, UnsupportedParameterError
from backends.protocol import Backend, Relayed
from backends.requests import (
    ContentPart,
    GenerationRequest,
    Message,
    OtherPart,
    OutputConstraint,
    Role,
    Sampling,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from backends.responses_types import (
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    InputItem,
    InputPart,
    MessageItem,
    ReasoningEcho,
    ReasoningItem,
    ResponseObject,
    ResponsesRequest,
    TextConfig,
    TextConfigEcho,
    ToolParam,
)
from gateway.dispatch import Primed, prime
from gateway.responses_items import new_response_id
from gateway.responses_stream import collect_response, response_events, response_frames

STATELESS = (
    "llmgate is stateless and stores no responses: send the whole conversation in 'input' "
    "(earlier output items can be sent back as input items)"
)
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
# The one `include` entry that asks for something llmgate could give but does not yet; the
# others name outputs of features it does not have (built-in tools, encrypted reasoning), so
# there is nothing to add and they are accepted.
_LOGPROBS = "message.output_text.logprobs"

# -- request -------------------------------------------------------------------------------


def to_generation_request(request: ResponsesRequest) -> GenerationRequest:
    """The core request for a Responses request; raises ``InvalidRequestError`` /
    ``UnsupportedParameterError`` (400, ``param`` naming the field) for what it cannot
    serve."""
    refuse_stateful(request)
    return GenerationRequest(
        model=request.model,
        messages=to_messages(request.instructions, request.input),
        max_tokens=request.max_output_tokens,
        sampling=Sampling(temperature=request.temperature, top_p=request.top_p),
        tools=to_tools(request.tools),
        tool_choice=to_tool_choice(request.tool_choice),
        parallel_tool_calls=request.parallel_tool_calls,
        constraint=to_constraint(request.text),
        reasoning=_reasoning(request),
        user=request.user or request.safety_identifier,
    )


def refuse_stateful(request: ResponsesRequest) -> None:
    """400 for what needs stored state or a feature llmgate does not have."""
    if request.previous_response_id is not None:
        raise UnsupportedParameterError(
            f"previous_response_id is not supported: {STATELESS}", param="previous_response_id"
        )
    if request.store:
        raise UnsupportedParameterError(
            f"store: true is not supported: {STATELESS}; leave 'store' unset or false",
            param="store",
        )
    for name in ("conversation", "prompt"):
        if getattr(request, name) is not None:
            raise UnsupportedParameterError(f"{name} is not supported: {STATELESS}", param=name)
    if request.background:
        raise UnsupportedParameterError(
            f"background responses are not supported: {STATELESS}; use 'stream' instead",
            param="background",
        )
    if request.truncation == "auto":
        raise UnsupportedParameterError(
            "truncation 'auto' is not supported: llmgate never drops input; a conversation "
            "over the context window is a 400",
            param="truncation",
        )
    if request.top_logprobs or _LOGPROBS in (request.include or []):
        raise UnsupportedParameterError(
            "logprobs are not supported on /v1/responses yet; use /v1/chat/completions",
            param="top_logprobs" if request.top_logprobs else "include",
        )


def to_messages(instructions: str | None, items: list[InputItem]) -> tuple[Message, ...]:
    """``instructions`` as the first (system) message, then the input items as turns: a
    ``function_call`` joins the assistant turn before it, a ``reasoning`` item's text becomes
    the next assistant turn's thinking (dropped if no assistant turn follows)."""
    history = _History()
    if instructions:
        history.turns.append(_Turn("system", [TextPart(instructions)]))
    for index, item in enumerate(items):
        history.add(index, item)
    if not history.turns:
        raise InvalidRequestError("input is empty: send at least one message", param="input")
    return tuple(turn.message() for turn in history.turns)


class _Turn:
    def __init__(
        self,
        role: Role,
        parts: list[ContentPart] | None = None,
        reasoning: str | None = None,
        tool_call_id: str | None = None,
    ) -> None:
        self.role: Role = role
        self.parts = parts or []
        self.reasoning = reasoning
        self.tool_call_id = tool_call_id
        self.calls: list[ToolCall] = []

    def message(self) -> Message:
        return Message(
            role=self.role,
            content=tuple(self.parts),
            tool_calls=tuple(self.calls),
            tool_call_id=self.tool_call_id,
            reasoning=self.reasoning,
        )


class _History:
    def __init__(self) -> None:
        self.turns: list[_Turn] = []
        self._thinking: str | None = None  # a reasoning item's text, for the next assistant turn

    def add(self, index: int, item: InputItem) -> None:
        thinking, self._thinking = self._thinking, None
        if isinstance(item, MessageItem):
            role: Role = "system" if item.role == "developer" else item.role
            parts = to_parts(item.content, f"input[{index}].content")
            self.turns.append(_Turn(role, parts, thinking if role == "assistant" else None))
        elif isinstance(item, FunctionCallItem):
            last = self.turns[-1] if self.turns else None
            if last is None or last.role != "assistant" or thinking is not None:
                last = _Turn("assistant", reasoning=thinking)
                self.turns.append(last)
            last.calls.append(ToolCall(item.call_id, item.name, item.arguments))
        elif isinstance(item, FunctionCallOutputItem):
            parts = to_parts(item.output, f"input[{index}].output")
            self.turns.append(_Turn("tool", parts, tool_call_id=item.call_id))
        elif isinstance(item, ReasoningItem):
            texts = [p.text for p in item.content or []] or [p.text for p in item.summary]
            self._thinking = "\n".join(texts) or None
        elif item.type == "item_reference":
            raise UnsupportedParameterError(
                f"item references are not supported: {STATELESS}", param=f"input[{index}]"
            )
        else:
            raise UnsupportedParameterError(
                f"input items of type '{item.type}' are not supported: llmgate takes message, "
                "function_call, function_call_output and reasoning items",
                param=f"input[{index}]",
            )


def to_parts(content: list[InputPart], param: str) -> list[ContentPart]:
    """Text parts as text; an image or file as the chat API's part (an OpenAI-compatible
    upstream may take it; the other backends refuse non-text parts with a 400)."""
    parts: list[ContentPart] = []
    for number, part in enumerate(content):
        text = part.refusal if part.type == "refusal" else part.text
        if part.type in _TEXT_PARTS or part.type == "refusal":
            if text is None:
                raise InvalidRequestError(
                    f"a content part of type '{part.type}' needs a string "
                    f"'{'refusal' if part.type == 'refusal' else 'text'}'",
                    param=f"{param}[{number}]",
                )
            parts.append(TextPart(text))
        else:
            parts.append(_other_part(part))
    return parts


def _other_part(part: InputPart) -> OtherPart:
    extra = dict(part.model_extra or {})
    if part.type == "input_image" and isinstance(extra.get("image_url"), str):
        image = {"url": extra["image_url"], "detail": extra.get("detail") or "auto"}
        return OtherPart("image_url", {"image_url": image})
    if part.type == "input_file":
        keys = ("file_id", "file_data", "filename")
        return OtherPart("file", {"file": {k: extra[k] for k in keys if k in extra}})
    return OtherPart(part.type, extra)


def to_tools(tools: list[ToolParam] | None) -> tuple[Tool, ...]:
    out: list[Tool] = []
    for index, tool in enumerate(tools or []):
        if tool.type != "function":
            raise UnsupportedParameterError(
                f"tools of type '{tool.type}' are not supported: llmgate serves function "
                "tools only",
                param=f"tools[{index}].type",
            )
        if not tool.name:
            raise InvalidRequestError(
                "a function tool needs a 'name'", param=f"tools[{index}].name"
            )
        out.append(Tool(tool.name, tool.description, tool.parameters, tool.strict))
    return tuple(out)


def to_tool_choice(choice: str | dict[str, Any] | None) -> ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        return ToolChoice(choice)  # type: ignore[arg-type]
    name = choice.get("name")
    if choice.get("type") != "function" or not isinstance(name, str) or not name:
        raise UnsupportedParameterError(
            "tool_choice must be 'none', 'auto', 'required' or "
            '{"type": "function", "name": ...}',
            param="tool_choice",
        )
    return ToolChoice("function", name)


def to_constraint(text: TextConfig | None) -> OutputConstraint | None:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return OutputConstraint("json_object")
    if fmt.schema_ is None:
        raise InvalidRequestError(
            "text.format of type 'json_schema' needs a 'schema'", param="text.format.schema"
        )
    return OutputConstraint("json_schema", fmt.schema_, name=fmt.name)


def _reasoning(request: ResponsesRequest) -> bool | None:
    """As the chat surface reads ``reasoning_effort``: "none" turns thinking off, another
    effort on; None: the model's default."""
    effort = request.reasoning.effort if request.reasoning is not None else None
    return None if effort is None else effort != "none"


# -- the response's echo of the request ----------------------------------------------------


def response_template(request: ResponsesRequest) -> ResponseObject:
    """The response before any output: a new id, ``in_progress``, the request's settings."""
    fmt = request.text.format if request.text is not None else None
    reasoning = request.reasoning
    return ResponseObject(
        id=new_response_id(),
        created_at=int(time.time()),
        status="in_progress",
        instructions=request.instructions,
        max_output_tokens=request.max_output_tokens,
        model=request.model,
        parallel_tool_calls=request.parallel_tool_calls is not False,
        reasoning=ReasoningEcho(
            effort=reasoning.effort if reasoning else None,
            summary=reasoning.summary if reasoning else None,
        ),
        temperature=request.temperature,
        top_p=request.top_p,
        text=TextConfigEcho(
            format=fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}
        ),
        tool_choice=request.tool_choice if request.tool_choice is not None else "auto",
        tools=[
            FunctionTool(
                name=t.name or "",
                description=t.description,
                parameters=t.parameters,
                strict=t.strict,
            )
            for t in request.tools or []
        ],
        user=request.user,
        metadata=request.metadata or {},
    )


# -- serving -------------------------------------------------------------------------------


async def open_response_stream(
    backend: Backend, body: ResponsesRequest, request: GenerationRequest
) -> Primed[bytes]:
    """Start ``backend``: the stream's frames, the first one (``response.created``) ready."""
    events = await backend.generate(request)
    frames = response_frames(response_events(events, response_template(body)))
    return await prime(frames, events.replica)


async def complete_response(
    backend: Backend, body: ResponsesRequest, request: GenerationRequest
) -> Relayed:
    """A non-streaming response from ``backend``, as the JSON bytes the client gets."""
    events = await backend.generate(request)
    response = await collect_response(events, response_template(body))
    return Relayed(response.model_dump_json().encode(), events.replica)
