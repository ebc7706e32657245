"""The Anthropic Messages surface's translator: a ``MessagesRequest`` (or a count_tokens body)
into the core's ``GenerationRequest``, and the serving steps the routes
(``gateway.anthropic_api``) hand to ``dispatch.open_first``. The events become Anthropic's
stream or one message in ``gateway.anthropic_stream``.

Mapping (README, "Anthropic Messages API"): ``system`` is a system message first (text blocks
joined by a blank line); consecutive turns of one role are one turn, as Anthropic combines
them; in a user turn, ``tool_result`` blocks become ``tool`` messages (first, in order) and the
rest a user message; in an assistant turn, ``tool_use`` blocks become its tool calls and
``thinking`` blocks its reasoning (replayed to templates that use it; ``redacted_thinking`` is
Anthropic-encrypted and dropped). ``tool_choice`` ``any`` is ``required``, ``tool`` a named
function; ``disable_parallel_tool_use`` is ``parallel_tool_calls: false``; ``thinking``
``enabled`` / ``disabled`` turns reasoning on / off (``budget_tokens`` is checked as Anthropic
checks it but not enforced: only ``max_tokens`` bounds the answer, thinking included). Tool
names, input schemas and stop sequences are checked as Anthropic's API checks them. A final
assistant turn is the start of the answer, which the model continues (prefill; the reply holds
the continuation). Server tools and unknown block types are a 400 naming the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace

from backends.anthropic_types import (
    ContentBlockParam,
    CountTokensRequest,
    MessageParam,
    MessagesRequest,
    OutputConfigParam,
    ThinkingParam,
    ToolChoiceParam,
    ToolParam,
)
from backends.errors import InternalError, InvalidRequestError, UnsupportedParameterError
from backends.events import Usage
from backends.protocol import Backend, Relayed, TokenCounter
from backends.requests import (
    ContentPart,
    GenerationRequest,
    Message,
    OtherPart,
    OutputConstraint,
    Sampling,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from gateway.anthropic_checks import check_prefill, check_thinking_budget, stop_sequences
from gateway.anthropic_stream import collect_message, message_events, message_frames
from gateway.dispatch import Primed, prime

# -- request -------------------------------------------------------------------------------


def to_generation_request(body: MessagesRequest) -> GenerationRequest:
    """The core request for a messages request; raises ``InvalidRequestError`` /
    ``UnsupportedParameterError`` (400, ``param`` naming the field) for what it cannot
    serve."""
    base = count_request(body)
    check_thinking_budget(body.thinking, body.max_tokens)
    return replace(
        base,
        max_tokens=body.max_tokens,
        sampling=Sampling(temperature=body.temperature, top_p=body.top_p, top_k=body.top_k),
        stop=stop_sequences(body.stop_sequences),
        user=body.metadata.user_id if body.metadata is not None else None,
    )


def count_request(body: CountTokensRequest) -> GenerationRequest:
    """The core request for the prompt part of ``body`` (what count_tokens counts)."""
    check_thinking_budget(body.thinking, None)
    choice = to_tool_choice(body.tool_choice)
    disabled = body.tool_choice is not None and body.tool_choice.disable_parallel_tool_use
    return GenerationRequest(
        model=body.model,
        messages=to_messages(body.system, body.messages),
        tools=to_tools(body.tools),
        tool_choice=choice,
        parallel_tool_calls=False if disabled else None,
        constraint=to_constraint(body.output_config),
        reasoning=to_reasoning(body.thinking),
        continue_final=bool(body.messages) and body.messages[-1].role == "assistant",
    )


def to_messages(
    system: str | list[ContentBlockParam] | None, messages: list[MessageParam]
) -> tuple[Message, ...]:
    out: list[Message] = []
    if system:
        text = system if isinstance(system, str) else _system_text(system)
        out.append(Message("system", (TextPart(text),)))
    if not messages:
        raise InvalidRequestError("messages: at least one message is required", param="messages")
    if messages[-1].role == "assistant":
        check_prefill(len(messages) - 1, messages[-1])
    for role, blocks in _turns(messages):
        out += _user_turn(blocks) if role == "user" else [_assistant_turn(blocks)]
    return tuple(out)


def _system_text(blocks: list[ContentBlockParam]) -> str:
    texts = []
    for number, block in enumerate(blocks):
        if block.type != "text" or block.text is None:
            raise InvalidRequestError(
                f"system blocks must be text blocks, not '{block.type}'",
                param=f"system[{number}]",
            )
        texts.append(block.text)
    return "\n\n".join(texts)


def _turns(messages: list[MessageParam]) -> list[tuple[str, list[tuple[str, ContentBlockParam]]]]:
    """Runs of same-role messages as one turn: (role, its blocks with the param naming each)."""
    turns: list[tuple[str, list[tuple[str, ContentBlockParam]]]] = []
    for index, message in enumerate(messages):
        final = index == len(messages) - 1 and message.role == "assistant"
        if not message.content and final:  # an empty prefill: the answer starts afresh
            blocks: list[tuple[str, ContentBlockParam]] = []
        elif not message.content:  # "" or []: as Anthropic's API, refused
            raise InvalidRequestError(
                f"messages.{index}: all messages must have non-empty content except for the "
                "optional final assistant message",
                param=f"messages[{index}].content",
            )
        elif isinstance(message.content, str):
            blocks = [(f"messages[{index}].content", _text_block(message.content))]
        else:
            blocks = [
                (f"messages[{index}].content[{n}]", block)
                for n, block in enumerate(message.content)
            ]
        if turns and turns[-1][0] == message.role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((message.role, blocks))
    return turns


def _text_block(text: str) -> ContentBlockParam:
    return ContentBlockParam(type="text", text=text)


def _user_turn(blocks: list[tuple[str, ContentBlockParam]]) -> list[Message]:
    results: list[Message] = []
    parts: list[ContentPart] = []
    for param, block in blocks:
        if block.type == "tool_result":
            results.append(_tool_result(block, param))
        elif block.type in ("tool_use", "thinking", "redacted_thinking"):
            raise InvalidRequestError(
                f"a user message cannot hold a '{block.type}' block", param=param
            )
        else:
            parts.append(_part(block, param))
    if parts or not results:
        results.append(Message("user", tuple(parts)))
    return results


def _tool_result(block: ContentBlockParam, param: str) -> Message:
    if not block.tool_use_id:
        raise InvalidRequestError("a tool_result block needs a 'tool_use_id'", param=param)
    content = block.content
    parts: list[ContentPart]
    if content is None:
        parts = []
    elif isinstance(content, str):
        parts = [TextPart(content)]
    else:
        parts = [_part(b, f"{param}.content[{n}]") for n, b in enumerate(content)]
    if block.is_error:  # the core has no flag for it: the model reads it
        parts = [TextPart("Error: "), *parts]
    return Message("tool", tuple(parts), tool_call_id=block.tool_use_id)


def _assistant_turn(blocks: list[tuple[str, ContentBlockParam]]) -> Message:
    parts: list[ContentPart] = []
    calls: list[ToolCall] = []
    thinking: list[str] = []
    for param, block in blocks:
        if block.type == "tool_use":
            if not block.id or not block.name:
                raise InvalidRequestError("a tool_use block needs 'id' and 'name'", param=param)
            arguments = json.dumps(block.input or {}, ensure_ascii=False)
            calls.append(ToolCall(block.id, block.name, arguments))
        elif block.type == "thinking":
            if block.thinking:
                thinking.append(block.thinking)
        elif block.type == "redacted_thinking":
            continue  # encrypted by Anthropic for Claude: nothing a local model can read
        elif block.type == "tool_result":
            raise InvalidRequestError(
                "an assistant message cannot hold a 'tool_result' block", param=param
            )
        else:
            parts.append(_part(block, param))
    return Message(
        "assistant",
        tuple(parts),
        tool_calls=tuple(calls),
        reasoning="\n".join(thinking) or None,
    )


def _part(block: ContentBlockParam, param: str) -> ContentPart:
    """A text block as text; an image as the chat API's ``image_url`` part (an
    OpenAI-compatible upstream may take it; the other backends refuse non-text parts with a
    400); a document as a part of its own type (refused the same way)."""
    if block.type == "text":
        if block.text is None:
            raise InvalidRequestError("a text block needs a string 'text'", param=param)
        if not block.text:
            raise InvalidRequestError(
                "messages: text content blocks must be non-empty", param=param
            )
        return TextPart(block.text)
    if block.type == "image":
        source = block.source or {}
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data')}"
            return OtherPart("image_url", {"image_url": {"url": url}})
        if source.get("type") == "url":
            return OtherPart("image_url", {"image_url": {"url": source.get("url")}})
        return OtherPart("image", {"source": source})
    if block.type == "document":
        return OtherPart("document", {"source": block.source or {}})
    raise UnsupportedParameterError(
        f"content blocks of type '{block.type}' are not supported: llmgate takes text, image, "
        "document, tool_use, tool_result, thinking and redacted_thinking blocks",
        param=param,
    )


_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")  # Anthropic's rule for tool names


def to_tools(tools: list[ToolParam] | None) -> tuple[Tool, ...]:
    out: list[Tool] = []
    for index, tool in enumerate(tools or []):
        if tool.type not in (None, "custom"):
            raise UnsupportedParameterError(
                f"tools of type '{tool.type}' are not supported: Anthropic's server tools run "
                "on Anthropic's servers; llmgate serves client tools (name, description, "
                "input_schema) only",
                param=f"tools[{index}].type",
            )
        if not tool.name:
            raise InvalidRequestError("a tool needs a 'name'", param=f"tools[{index}].name")
        if not _TOOL_NAME.fullmatch(tool.name):
            raise InvalidRequestError(
                f"tools.{index}.custom.name: String should match pattern '{_TOOL_NAME.pattern}'",
                param=f"tools[{index}].name",
            )
        if tool.input_schema is None:
            raise InvalidRequestError(
                "a tool needs an 'input_schema'", param=f"tools[{index}].input_schema"
            )
        if tool.input_schema.get("type") != "object":
            raise InvalidRequestError(
                f"tools.{index}.custom.input_schema.type: Input should be 'object'",
                param=f"tools[{index}].input_schema.type",
            )
        out.append(Tool(tool.name, tool.description, tool.input_schema, tool.strict))
    return tuple(out)


def to_tool_choice(choice: ToolChoiceParam | None) -> ToolChoice | None:
    if choice is None:
        return None
    if choice.type == "any":
        return ToolChoice("required")
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequestError(
                "tool_choice of type 'tool' needs a 'name'", param="tool_choice.name"
            )
        return ToolChoice("function", choice.name)
    return ToolChoice(choice.type)


def to_reasoning(thinking: ThinkingParam | None) -> bool | None:
    """``enabled``: think (models that can); ``disabled``: don't; ``adaptive`` or absent: the
    model's default."""
    if thinking is None or thinking.type == "adaptive":
        return None
    if thinking.type in ("enabled", "disabled"):
        return thinking.type == "enabled"
    raise UnsupportedParameterError(
        f"thinking of type '{thinking.type}' is not supported: use 'enabled', 'disabled' or "
        "'adaptive'",
        param="thinking.type",
    )


def to_constraint(config: OutputConfigParam | None) -> OutputConstraint | None:
    fmt = config.format if config is not None else None
    if fmt is None:
        return None
    if fmt.type != "json_schema" or fmt.schema_ is None:
        raise UnsupportedParameterError(
            "output_config.format must be {'type': 'json_schema', 'schema': ...}",
            param="output_config.format",
        )
    return OutputConstraint("json_schema", fmt.schema_)


# -- serving -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counted:
    """A count_tokens answer and the upstream that gave it, if any."""

    input_tokens: int
    replica: str | None = None


async def open_message_stream(
    backend: Backend, body: MessagesRequest, request: GenerationRequest
) -> Primed[bytes]:
    """Start ``backend``: the stream's frames, the first one (``message_start``) ready."""
    events = await backend.generate(request)
    return await prime(message_frames(message_events(events, body.model)), events.replica)


async def complete_message(
    backend: Backend, body: MessagesRequest, request: GenerationRequest
) -> Relayed:
    """A non-streaming message from ``backend``, as the JSON bytes the client gets."""
    events = await backend.generate(request)
    message = await collect_message(events, body.model)
    return Relayed(message.model_dump_json().encode(), events.replica)


async def count_tokens(backend: Backend, request: GenerationRequest) -> Counted:
    """The exact prompt tokens of ``request`` on ``backend``: counted without generating by a
    ``TokenCounter`` (the in-process engines), else by generating one token and reading the
    usage's ``prompt_tokens`` (upstreams), the stream closed as soon as it is known."""
    if isinstance(backend, TokenCounter):
        return Counted(await backend.count_tokens(request))
    events = await backend.generate(replace(request, max_tokens=1))
    try:
        async for event in events:
            if isinstance(event, Usage):
                return Counted(event.prompt_tokens, events.replica)
    finally:
        await events.aclose()
    raise InternalError("the backend's answer ended without usage")
