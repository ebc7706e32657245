"""Anthropic Messages API wire types (``POST /v1/messages``, ``/v1/messages/count_tokens``).

Requests tolerate unknown fields (Anthropic adds fields often; ``cache_control`` on any block,
``service_tier``, ``container``...): what a field means for llmgate is decided by the
translator (``gateway.anthropic_messages``), which refuses by name what it cannot honour.
Content blocks are one permissive model keyed by ``type`` so that an unknown or unsupported
block type reaches the translator and gets a 400 naming it, rather than a validation error.
Responses and stream events are exact: the fields Anthropic's SDK reads, nothing else.
This module is a leaf (pydantic only).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# -- requests ------------------------------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentBlockParam(_Lenient):
    """One content block as sent: ``text``; ``image`` / ``document`` (``source``);
    ``tool_use`` (``id``, ``name``, ``input``); ``tool_result`` (``tool_use_id``, ``content``,
    ``is_error``); ``thinking`` (``thinking``, ``signature``); ``redacted_thinking``
    (``data``); other types are kept for the translator to refuse."""

    type: str
    text: str | None = None
    source: dict[str, Any] | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[ContentBlockParam] | None = None
    is_error: bool | None = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class MessageParam(_Lenient):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlockParam]


class ToolParam(_Lenient):
    """A client tool (``type`` absent or ``custom``); Anthropic's server tools carry another
    ``type`` (``web_search_20250305``, ``bash_20250124``, ``computer_20250124``...)."""

    type: str | None = None
    name: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoiceParam(_Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingParam(_Lenient):
    """``enabled`` (with ``budget_tokens``), ``disabled`` or ``adaptive``."""

    type: str
    budget_tokens: int | None = None


class MetadataParam(_Lenient):
    user_id: str | None = None


class OutputFormatParam(_Lenient):
    type: str
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class OutputConfigParam(_Lenient):
    format: OutputFormatParam | None = None


class CountTokensRequest(_Lenient):
    """The body of ``POST /v1/messages/count_tokens``: a messages request less ``max_tokens``
    (sent anyway, it is ignored)."""

    model: str
    messages: list[MessageParam]
    system: str | list[ContentBlockParam] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: ThinkingParam | None = None
    output_config: OutputConfigParam | None = None


class MessagesRequest(CountTokensRequest):
    """The body of ``POST /v1/messages``. ``max_tokens`` is required, as Anthropic requires
    it; ``temperature`` is 0..1 as in Anthropic's API."""

    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    metadata: MetadataParam | None = None
    stream: bool = False


# -- responses -----------------------------------------------------------------------------

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]


class TextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ThinkingBlock(BaseModel):
    """``signature`` is always empty: Anthropic signs Claude's thinking, llmgate's models
    have nothing to sign (a thinking block sent back is replayed whatever its signature)."""

    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


ContentBlock = TextBlock | ThinkingBlock | ToolUseBlock


class MessageUsage(BaseModel):
    """As Anthropic counts: ``input_tokens`` are the prompt tokens *not* read from the cache,
    ``cache_read_input_tokens`` those that were (their sum is the whole prompt)."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class MessageObject(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ContentBlock] = Field(default_factory=list)
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: MessageUsage


class TokenCount(BaseModel):
    """The answer of ``POST /v1/messages/count_tokens``."""

    input_tokens: int


# -- stream events -------------------------------------------------------------------------


class MessageStartEvent(BaseModel):
    type: Literal["message_start"] = "message_start"
    message: MessageObject


class ContentBlockStartEvent(BaseModel):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: ContentBlock


class TextDelta(BaseModel):
    type: Literal["text_delta"] = "text_delta"
    text: str


class ThinkingDelta(BaseModel):
    type: Literal["thinking_delta"] = "thinking_delta"
    thinking: str


class SignatureDelta(BaseModel):
    type: Literal["signature_delta"] = "signature_delta"
    signature: str


class InputJSONDelta(BaseModel):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class ContentBlockDeltaEvent(BaseModel):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: TextDelta | ThinkingDelta | SignatureDelta | InputJSONDelta


class ContentBlockStopEvent(BaseModel):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class MessageDelta(BaseModel):
    stop_reason: StopReason | None
    stop_sequence: str | None = None


class MessageDeltaUsage(BaseModel):
    """Cumulative counts, as Anthropic sends them (its SDK overwrites ``message_start``'s)."""

    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int = 0


class MessageDeltaEvent(BaseModel):
    type: Literal["message_delta"] = "message_delta"
    delta: MessageDelta
    usage: MessageDeltaUsage


class MessageStopEvent(BaseModel):
    type: Literal["message_stop"] = "message_stop"


class PingEvent(BaseModel):
    """Anthropic sends one after the first block starts; clients skip it."""

    type: Literal["ping"] = "ping"


MessageStreamEvent = (
    MessageStartEvent
    | PingEvent
    | ContentBlockStartEvent
    | ContentBlockDeltaEvent
    | ContentBlockStopEvent
    | MessageDeltaEvent
    | MessageStopEvent
)
