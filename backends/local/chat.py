"""The chat prompt of an in-process model, written once for both engines (docs/tools.md).

At load, ``probe_features`` learns from the model's chat template what its output looks like:
whether the template renders tools (a probe tool's name shows up in the rendered prompt),
which tool-call format and which thinking tags it uses — unless ``config.yaml`` says
(``tool_parser``, ``reasoning_parser``). Per request, ``render_prompt`` renders the messages
with the tools (natively, or described in the system prompt when the template cannot), and
says how to read the output (``OutputSpec``). An engine supplies only its renderer and
tokenizer (``ChatEngine``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from backends.errors import InvalidRequestError, UnsupportedParameterError
from backends.local.call_schema import parameters_of
from backends.local.output import OutputSpec
from backends.local.reasoning import FORMATS as REASONING_FORMATS
from backends.local.reasoning import ReasoningFormat, detect_reasoning
from backends.local.tool_formats import FORMATS as TOOL_FORMATS
from backends.local.tool_formats import (
    Hermes,
    ToolFormat,
    detect_format,
    prompted_instructions,
)
from backends.requests import GenerationRequest, Message
from backends.settings import InProcessSettings

_PROBE_TOOL = "llmgate_probe_function"


class ChatEngine(Protocol):
    """What the prompt needs from an engine; may be called from any worker thread."""

    @property
    def chat_template(self) -> str | None: ...

    def render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, **options: Any
    ) -> tuple[str, bool]:
        """The rendered prompt, and whether a BOS token must still be added."""
        ...

    def tokenize(self, text: str, add_bos: bool) -> list[int]: ...


@dataclass(frozen=True)
class ChatFeatures:
    """What a model's template supports. ``tools``: "native" (the template renders tools),
    "prompted" (llmgate's fallback), None (tool calling off)."""

    tools: Literal["native", "prompted"] | None = None
    tool_format: ToolFormat | None = None
    reasoning: ReasoningFormat | None = None
    markers: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Prompt:
    tokens: list[int]
    spec: OutputSpec


def probe_features(engine: ChatEngine, settings: InProcessSettings) -> ChatFeatures:
    template = engine.chat_template
    native = _renders_tools(engine)
    tool_format: ToolFormat | None
    tools: Literal["native", "prompted"] | None
    if settings.tool_parser == "none":
        tool_format, tools = None, None
    elif settings.tool_parser != "auto":
        tool_format = TOOL_FORMATS[settings.tool_parser]
        tools = "native" if native else "prompted"
        if tools == "prompted" and not isinstance(tool_format, Hermes):
            tool_format = TOOL_FORMATS["hermes"]  # the fallback prompt asks for Hermes calls
    else:
        detected = detect_format(template) if native else None
        tool_format = detected or TOOL_FORMATS["hermes"]
        tools = "native" if detected is not None else "prompted"
    if settings.reasoning_parser == "none":
        reasoning = None
    elif settings.reasoning_parser == "auto":
        reasoning = detect_reasoning(template)
    else:
        reasoning = REASONING_FORMATS[settings.reasoning_parser]
    markers = set(tool_format.markers if tool_format else ())
    if isinstance(tool_format, Hermes):
        markers.add(tool_format.end)
    markers.update(reasoning.markers if reasoning else ())
    return ChatFeatures(tools, tool_format, reasoning, frozenset(markers))


def _renders_tools(engine: ChatEngine) -> bool:
    probe = [{"type": "function", "function": {"name": _PROBE_TOOL, "parameters": {}}}]
    try:
        text, _ = engine.render_chat([{"role": "user", "content": "hi"}], probe)
    except Exception:
        return False
    return _PROBE_TOOL in text


def render_prompt(request: GenerationRequest, features: ChatFeatures, engine: ChatEngine) -> Prompt:
    """Tokens of ``request``'s prompt and how to read its output; 400s for tools the model
    cannot take and for a template that rejects the messages."""
    if isinstance(request.prompt, tuple):  # the model's own token ids, read as given
        return Prompt(list(request.prompt), OutputSpec())
    if request.prompt is not None:
        tokens = engine.tokenize(request.prompt, add_bos=True)
        if not tokens:  # an empty prompt for a model that adds no beginning-of-sequence token
            raise InvalidRequestError(
                "the prompt is empty and this model adds no beginning-of-sequence token: "
                "there is nothing to continue",
                param="prompt",
            )
        return Prompt(tokens, OutputSpec())
    _check_tools(request, features)
    fmt = features.tool_format if request.wants_tools else None
    prompted = features.tools == "prompted"  # past calls are text even when none are offered
    messages = _messages(request, features.tool_format, prompted)
    tools = None
    if fmt is not None and not prompted:
        tools = [_tool_dict(t) for t in request.tools]
    if fmt is not None and prompted:
        messages = _with_instructions(messages, prompted_instructions(request.tools))
    options: dict[str, Any] = {}
    if request.reasoning is not None:  # Qwen3's switch, and DeepSeek-V3.1's
        options = {"enable_thinking": request.reasoning, "thinking": request.reasoning}
    if request.continue_final:
        messages = _marked_final(request, messages)
    try:
        text, add_bos = engine.render_chat(messages, tools, **options)
    except Exception as exc:  # jinja errors, raise_exception() in templates
        raise InvalidRequestError(
            f"the chat template of model '{request.model}' rejected these messages: {exc}",
            param="messages",
        ) from exc
    if request.continue_final:
        text = _cut_at_mark(request, text)
    reasoning = features.reasoning
    spec = OutputSpec(
        reasoning=reasoning,
        reasoning_open=reasoning is not None and reasoning.opened_by(text),
        tools=fmt,
    )
    return Prompt(engine.tokenize(text, add_bos), spec)


# Put after the final assistant message's text to find where it ends in the rendered prompt:
# whatever the template writes after it (end of turn, a new generation prompt) is cut off.
_CONTINUE_MARK = "LLMGATE_CONTINUE_FROM_HERE"


def _marked_final(
    request: GenerationRequest, messages: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``messages`` with the mark after the final assistant message's text (prefill)."""
    last = len(request.messages) - 1
    final = request.messages[-1] if request.messages else None
    if final is None or final.role != "assistant":
        raise InvalidRequestError(
            "continuing the final message needs a final assistant message", param="messages"
        )
    if final.tool_calls:
        raise InvalidRequestError(
            "the final assistant message is continued as text: it cannot hold tool calls",
            param=f"messages[{last}]",
        )
    marked = dict(messages[-1])
    marked["content"] = f"{marked['content']}{_CONTINUE_MARK}"
    return [*messages[:-1], marked]


def _cut_at_mark(request: GenerationRequest, text: str) -> str:
    """The rendered prompt up to the end of the final assistant message's text."""
    at = text.rfind(_CONTINUE_MARK)
    if at < 0:
        raise InvalidRequestError(
            f"the chat template of model '{request.model}' does not render a final assistant "
            "message, so it cannot be continued",
            param="messages",
        )
    return text[:at]


def _check_tools(request: GenerationRequest, features: ChatFeatures) -> None:
    choice = request.tool_choice
    if choice is not None and choice.mode in ("required", "function") and not request.tools:
        raise InvalidRequestError(f"tool_choice '{choice.mode}' needs 'tools'", param="tool_choice")
    if (
        choice is not None
        and choice.mode == "function"
        and choice.name not in {t.name for t in request.tools}
    ):
        raise InvalidRequestError(
            f"tool_choice names function '{choice.name}', which is not in 'tools'",
            param="tool_choice",
        )
    if request.wants_tools and features.tools is None:
        raise UnsupportedParameterError(
            f"model '{request.model}' has tool calling turned off (tool_parser: none in its "
            "config entry); remove 'tools' or set tool_choice to 'none'",
            param="tools",
        )
    names = [t.name for t in request.tools]
    if len(set(names)) != len(names):
        raise InvalidRequestError("two tools have the same name", param="tools")
    for tool in request.tools:
        if not tool.name.strip():
            raise InvalidRequestError("a tool needs a name", param="tools")
        kind = (tool.parameters or {}).get("type", "object")
        if kind != "object":  # a call's arguments are a JSON object
            raise InvalidRequestError(
                f"tool '{tool.name}': its parameters must be a JSON schema of type \"object\", "
                f"not {json.dumps(kind)}",
                param="tools",
            )


def _tool_dict(tool: Any) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = parameters_of(tool)
    return {"type": "function", "function": function}


def _arguments(text: str) -> Any:
    """Templates expect a past call's arguments as a mapping (they ``tojson`` it)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


def _messages(
    request: GenerationRequest, fmt: ToolFormat | None, prompted: bool
) -> list[dict[str, Any]]:
    """The history as the plain dicts Jinja chat templates take."""
    history_id = fmt.history_id if fmt is not None else (lambda call_id: call_id)
    plain: list[dict[str, Any]] = []
    for index, message in enumerate(request.messages):
        text = message.text()
        if text is None:
            other = next(p.type for p in message.content if p.type != "text")
            raise UnsupportedParameterError(
                f"content parts of type '{other}' are not supported by this model (text only)",
                param=f"messages[{index}].content",
            )
        if prompted:
            plain.append(_prompted_message(message, text))
            continue
        item: dict[str, Any] = {"role": message.role, "content": text}
        if message.name:
            item["name"] = message.name
        if message.tool_calls:
            item["tool_calls"] = [
                {
                    "id": history_id(call.id),
                    "type": "function",
                    "function": {"name": call.name, "arguments": _arguments(call.arguments)},
                }
                for call in message.tool_calls
            ]
        if message.tool_call_id:
            item["tool_call_id"] = history_id(message.tool_call_id)
        if message.reasoning:
            item["reasoning_content"] = message.reasoning
        plain.append(item)
    return plain


def _prompted_message(message: Message, text: str) -> dict[str, Any]:
    """A message for a template that knows nothing of tools: calls and results as text."""
    if message.role == "tool":
        return {"role": "user", "content": f"<tool_response>\n{text}\n</tool_response>"}
    if message.tool_calls:
        calls = "\n".join(
            "<tool_call>\n"
            + json.dumps({"name": c.name, "arguments": _arguments(c.arguments)}, ensure_ascii=False)
            + "\n</tool_call>"
            for c in message.tool_calls
        )
        return {"role": "assistant", "content": f"{text}\n{calls}" if text else calls}
    return {"role": message.role, "content": text}


def _with_instructions(messages: list[dict[str, Any]], instructions: str) -> list[dict[str, Any]]:
    if messages and messages[0]["role"] == "system":
        first = dict(messages[0])
        first["content"] = (
            f"{first['content']}\n\n{instructions}" if first["content"] else instructions
        )
        return [first, *messages[1:]]
    return [{"role": "system", "content": instructions}, *messages]


def special_ids(tokens: Mapping[str, int], wanted: frozenset[str]) -> frozenset[int]:
    """Ids of the special tokens among ``wanted`` texts (markers an engine must not hide)."""
    return frozenset(tokens[text] for text in wanted if text in tokens)
