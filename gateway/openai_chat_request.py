"""The OpenAI chat surface's request side: a ``ChatCompletionRequest`` into the core's
``GenerationRequest`` (messages, tools and tool choice, the deprecated ``functions``, reasoning
switches, output constraints, sampling). The answer side is ``gateway.openai_chat``."""

from __future__ import annotations

from typing import Any

from backends.errors import InternalError, InvalidRequestError
from backends.openai_types import ChatCompletionRequest, ChatMessage
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
from gateway.openai_functions import functions_as_tools, legacy_history


def to_generation_request(request: ChatCompletionRequest) -> GenerationRequest:
    """The core request for an OpenAI chat request (its vendor extras kept in ``extras``).
    The deprecated ``functions`` / ``function_call`` are tools and a tool choice allowing one
    call; their history (an assistant's ``function_call``, a ``function`` message) is calls
    and results, each result answering the last call of its function before it."""
    if request.legacy_functions:
        request = functions_as_tools(request)
    history = legacy_history(request.messages)
    return GenerationRequest(
        model=request.model,
        messages=tuple(_message(i, m) for i, m in enumerate(history)),
        max_tokens=request.max_new_tokens,
        sampling=Sampling(
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            min_p=request.min_p,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            logit_bias={int(k): v for k, v in (request.logit_bias or {}).items()},
            seed=request.seed,
        ),
        stop=tuple(request.stop_sequences),
        n=request.n or 1,
        logprobs=bool(request.logprobs),
        top_logprobs=request.top_logprobs or 0,
        tools=tuple(
            Tool(t.function.name, t.function.description, t.function.parameters, t.function.strict)
            for t in request.tools or []
        ),
        tool_choice=_tool_choice(request.tool_choice),
        parallel_tool_calls=request.parallel_tool_calls,
        constraint=_constraint(request),
        reasoning=_reasoning(request),
        user=request.user,
        # vLLM's prefill switch: the final assistant message is continued, not answered
        continue_final=(request.model_extra or {}).get("continue_final_message") is True,
        extras=dict(request.model_extra or {}),
    )


def _message(index: int, message: ChatMessage) -> Message:
    parts: list[ContentPart] = []
    for part in message.text_parts():
        text = getattr(part, "text", None)
        if part.type == "text" and not isinstance(text, str):
            raise InvalidRequestError(
                "a content part of type 'text' needs a string 'text'",
                param=f"messages[{index}].content",
            )
        if isinstance(text, str):
            parts.append(TextPart(text))
        else:
            parts.append(OtherPart(part.type, dict(part.model_extra or {})))
    role = message.role
    if role == "function":  # _legacy_history made these tool results
        raise InternalError("a 'function' message was not read as a tool result")
    return Message(
        role="system" if role == "developer" else role,
        content=tuple(parts),
        name=message.name,
        tool_calls=tuple(
            ToolCall(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []
        ),
        tool_call_id=message.tool_call_id,
        reasoning=message.reasoning_content or message.reasoning,
    )


def _reasoning(request: ChatCompletionRequest) -> bool | None:
    """Whether to think first: ``reasoning_effort`` (OpenAI; "none" turns it off) or vLLM's
    ``chat_template_kwargs: {"enable_thinking": ...}`` (Qwen3's switch); None: the model's
    default."""
    if request.reasoning_effort is not None:
        return request.reasoning_effort != "none"
    kwargs = (request.model_extra or {}).get("chat_template_kwargs")
    if isinstance(kwargs, dict):
        for key in ("enable_thinking", "thinking"):
            if isinstance(kwargs.get(key), bool):
                return bool(kwargs[key])
    return None


def _tool_choice(choice: str | dict[str, Any] | None) -> ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        return ToolChoice(choice)  # type: ignore[arg-type]
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str) or not name:
        raise InvalidRequestError(
            "tool_choice must be 'none', 'auto', 'required' or "
            '{"type": "function", "function": {"name": ...}}',
            param="tool_choice",
        )
    return ToolChoice("function", name)


def _constraint(request: ChatCompletionRequest) -> OutputConstraint | None:
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object" or fmt.json_schema is None or not fmt.json_schema.schema_:
        return OutputConstraint("json_object")
    return OutputConstraint("json_schema", fmt.json_schema.schema_, name=fmt.json_schema.name)
