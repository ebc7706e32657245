"""OpenAI Responses API wire types (``POST /v1/responses``, stateless).

Requests tolerate unknown fields but validate every known one; an input item or content part
of a type llmgate does not know is parsed (``OtherItem``, ``InputPart``) so that the
translator can refuse it by name. The response is exact: the shape of the openai SDK's
``Response`` model (its stream events are in ``backends.responses_events``). This module is a
leaf: pydantic, the standard library and ``backends.function_checks`` only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
)

from backends.function_checks import check_function_name, check_parameters

# ---------------------------------------------------------------------------------------------
# Requests


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class InputPart(_Request):
    """A content part: ``input_text`` / ``output_text`` (``text``), ``refusal``
    (``refusal``), or a non-text part (``input_image``, ``input_file``, ...) kept whole."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    refusal: str | None = None


def _text_parts(value: Any) -> Any:
    """A string is one text part (so that a bad part's error names the part, not the string
    alternative)."""
    return [{"type": "input_text", "text": value}] if isinstance(value, str) else value


Content = Annotated[list[InputPart], BeforeValidator(_text_parts)]


class MessageItem(_Request):
    """A message, with or without ``"type": "message"`` (the SDK's easy input message)."""

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: Content


class FunctionCallItem(_Request):
    """A call the model made earlier (an output item sent back)."""

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class FunctionCallOutputItem(_Request):
    """The result of a function call, for the model to read."""

    type: Literal["function_call_output"]
    call_id: str
    output: Content


class ReasoningTextPart(_Request):
    type: str
    text: str


class ReasoningItem(_Request):
    """Thinking the model did earlier (an output item sent back); ``encrypted_content`` is
    never produced by llmgate and is ignored."""

    type: Literal["reasoning"]
    summary: list[ReasoningTextPart] = Field(default_factory=list)
    content: list[ReasoningTextPart] | None = None


class OtherItem(_Request):
    """An item of a type llmgate does not serve (``item_reference``, built-in tool calls)."""

    model_config = ConfigDict(extra="allow")
    type: str


# Tags are capitalized so that an error's location reads ``input[0].role``, not
# ``input[0].message.role`` (gateway.errors.param_from_loc skips capitalized names).
_ITEM_TAGS = {
    "message": "Message",
    "function_call": "FunctionCall",
    "function_call_output": "FunctionCallOutput",
    "reasoning": "Reasoning",
}


def _item_type(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "")
    return _ITEM_TAGS.get(kind, "Other") if isinstance(kind, str) else "Other"


def _user_message(value: Any) -> Any:
    """A string input is one user message, as OpenAI defines it."""
    return (
        [{"type": "message", "role": "user", "content": value}] if isinstance(value, str) else value
    )


InputItem = Annotated[
    Annotated[MessageItem, Tag("Message")]
    | Annotated[FunctionCallItem, Tag("FunctionCall")]
    | Annotated[FunctionCallOutputItem, Tag("FunctionCallOutput")]
    | Annotated[ReasoningItem, Tag("Reasoning")]
    | Annotated[OtherItem, Tag("Other")],
    Discriminator(_item_type),
]


class ToolParam(_Request):
    """A tool: ``function`` tools are flat (``name`` beside ``type``); other types (built-in
    tools) are parsed so that they can be refused by name."""

    model_config = ConfigDict(extra="allow")
    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    _parameters = field_validator("parameters")(check_parameters)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str | None) -> str | None:
        return name if name is None else check_function_name(name)


class TextFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(_Request):
    format: TextFormat | None = None


class ReasoningConfig(_Request):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class ResponsesRequest(_Request):
    """``POST /v1/responses``. Fields that need stored state (``previous_response_id``,
    ``store: true``, ``conversation``, ``background``, stored ``prompt``s) are parsed so that
    the translator can refuse them with a 400 that names them."""

    model: str = Field(min_length=1)
    input: Annotated[list[InputItem], BeforeValidator(_user_message)]
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stream: bool | None = False
    tools: list[ToolParam] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    include: list[str] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    # stateful features, refused
    store: bool | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    background: bool | None = None
    prompt: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------------
# Responses


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputText(_Wire):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class ReasoningText(_Wire):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class OutputMessage(_Wire):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: ItemStatus
    content: list[OutputText]


class OutputReasoning(_Wire):
    """Thinking as ``content`` (``reasoning_text``); llmgate writes no ``summary``."""

    id: str
    type: Literal["reasoning"] = "reasoning"
    summary: list[dict[str, Any]] = Field(default_factory=list)
    content: list[ReasoningText]
    status: ItemStatus


class OutputFunctionCall(_Wire):
    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


OutputItem = OutputMessage | OutputReasoning | OutputFunctionCall


class InputTokensDetails(_Wire):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(_Wire):
    reasoning_tokens: int = 0


class ResponseUsage(_Wire):
    """``reasoning_tokens`` is 0: backends count output tokens, not thinking apart."""

    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int

    @classmethod
    def of(cls, input_tokens: int, output_tokens: int, cached: int | None = None) -> ResponseUsage:
        return cls(
            input_tokens=input_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=cached or 0),
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        )


class ResponseError(_Wire):
    code: str
    message: str


class IncompleteDetails(_Wire):
    reason: Literal["max_output_tokens", "content_filter"]


class FunctionTool(_Wire):
    type: Literal["function"] = "function"
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextConfigEcho(_Wire):
    format: dict[str, Any] = Field(default_factory=lambda: {"type": "text"})


class ReasoningEcho(_Wire):
    effort: str | None = None
    summary: str | None = None


ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed"]


class ResponseObject(_Wire):
    """One response (``object: "response"``); the request's settings are echoed. Never
    stored: ``store`` is always false and ``previous_response_id`` always null."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus
    completed_at: int | None = None  # set when the status becomes ``completed``
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: None = None
    reasoning: ReasoningEcho = Field(default_factory=ReasoningEcho)
    store: Literal[False] = False
    background: Literal[False] = False
    temperature: float | None = None
    top_p: float | None = None
    text: TextConfigEcho = Field(default_factory=TextConfigEcho)
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[FunctionTool] = Field(default_factory=list)
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
