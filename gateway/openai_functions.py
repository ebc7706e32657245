"""The OpenAI chat surface's deprecated function-calling API (``functions``,
``function_call``), read once on top of tools: the functions become tools allowing one call
(``functions_as_tools``), a history's assistant ``function_call`` and ``role: "function"``
results become tool calls (ids made up) and their results, each answering the last call of
its function before it (``legacy_history``), and the answer goes back in the deprecated
shape (``gateway.openai_chat`` with ``functions``; ``wire_reason``).
"""

from __future__ import annotations

from typing import Any

from backends import events as ev
from backends.errors import InvalidRequestError
from backends.openai_types import (
    ChatCompletionRequest,
    ChatMessage,
    FinishReason,
    ToolDefinition,
)
from backends.openai_types import ToolCall as WireToolCall


def functions_as_tools(request: ChatCompletionRequest) -> ChatCompletionRequest:
    """``request`` with its ``functions`` as tools allowing one call."""
    functions = request.functions or []
    tools = [ToolDefinition(type="function", function=f) for f in functions]
    choice = request.function_call
    tool_choice: str | dict[str, Any] | None = choice if isinstance(choice, str) else None
    if not isinstance(choice, str) and choice is not None:
        if choice.name not in {f.name for f in functions}:
            raise InvalidRequestError(
                f"function_call names '{choice.name}', which is not in 'functions'",
                param="function_call",
            )
        tool_choice = {"type": "function", "function": {"name": choice.name}}
    update = {
        "tools": tools,
        "tool_choice": tool_choice,
        "parallel_tool_calls": False,
        "functions": None,
        "function_call": None,
    }
    return request.model_copy(update=update)


def legacy_history(messages: list[ChatMessage]) -> list[ChatMessage]:
    """The deprecated API's turns as tool calls (ids made up) and tool results."""
    out: list[ChatMessage] = []
    calls: list[tuple[str, str]] = []  # (function, id), in order
    for message in messages:
        call = message.function_call
        if call is not None:
            made_up = f"call_{len(calls)}"
            calls.append((call.name, made_up))
            wire = WireToolCall(id=made_up, type="function", function=call)
            message = message.model_copy(
                update={"function_call": None, "tool_calls": [*(message.tool_calls or []), wire]}
            )
        elif message.role == "function":
            answered = next((i for name, i in reversed(calls) if name == message.name), None)
            message = message.model_copy(
                update={"role": "tool", "tool_call_id": answered or f"call_{message.name}"}
            )
        out.append(message)
    return out


def wire_reason(reason: ev.FinishReason | None, functions: bool) -> FinishReason | None:
    """OpenAI's finish reason: a call is ``function_call`` for a ``functions`` request."""
    return "function_call" if functions and reason == "tool_calls" else reason
