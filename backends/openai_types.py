"""OpenAI wire types for chat completions (the OpenAI surfaces and the relay); the other
endpoints' types build on these (``completion_types``, ``model_types``, ...).

Requests tolerate unknown fields (clients send vendor extras) but validate every known one;
responses are exact: ``None`` fields that OpenAI omits are omitted here too (the two bases are
in ``backends.wire_base``). This module is a leaf: pydantic, the standard library and small
``backends`` leaves (``events``, ``wire_base``, the checks) only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from backends import events
from backends.check_errors import CrossFieldError
from backends.function_checks import check_function_name, check_parameters
from backends.wire_base import WireRequest, WireResponse

# ---------------------------------------------------------------------------------------------
# Requests


class TextContentPart(WireRequest):
    type: Literal["text"]
    text: str


class OtherContentPart(WireRequest):
    """A non-text part (image_url, input_audio, file...): parsed so an engine can refuse it
    by name instead of the request failing schema validation."""

    model_config = ConfigDict(extra="allow")
    type: str


ContentPart = TextContentPart | OtherContentPart


class FunctionCall(WireRequest):
    name: str
    arguments: str


class ToolCall(WireRequest):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(WireRequest):
    """A turn. ``function_call`` (an assistant's) and the ``function`` role (its result, named
    by ``name``) are the deprecated function-calling API's history, read as a tool call and
    its result."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCall | None = None
    # an assistant turn's thinking, sent back by clients of either convention (vLLM/DeepSeek)
    reasoning_content: str | None = None
    reasoning: str | None = None

    @model_validator(mode="after")
    def _content_required(self) -> ChatMessage:
        calls = self.tool_calls or self.function_call is not None
        if self.content is None and not (self.role == "assistant" and calls):
            raise ValueError(f"a '{self.role}' message needs 'content'")
        if self.role == "tool" and not self.tool_call_id:  # as OpenAI: which call it answers
            raise ValueError("a 'tool' message needs 'tool_call_id'")
        if self.role == "function" and not self.name:  # as OpenAI: which function answered
            raise ValueError("a 'function' message needs 'name'")
        return self

    def text_parts(self) -> list[TextContentPart | OtherContentPart]:
        if self.content is None:
            return []
        if isinstance(self.content, str):
            return [TextContentPart(type="text", text=self.content)]
        return list(self.content)


class StreamOptions(WireRequest):
    include_usage: bool = False


class FunctionDefinition(WireRequest):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    _name = field_validator("name")(check_function_name)
    _parameters = field_validator("parameters")(check_parameters)


class FunctionName(WireRequest):
    """``function_call: {"name": ...}``: call this function."""

    name: str = Field(min_length=1)


class ToolDefinition(WireRequest):
    type: Literal["function"]
    function: FunctionDefinition


class JsonSchemaFormat(WireRequest):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(WireRequest):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type 'json_schema' needs 'json_schema'")
        return self


class OpenAIRequest(WireRequest):
    """A request to one of the OpenAI endpoints a relay passes through (chat, completions,
    embeddings): it names its ``model`` and keeps unknown fields for the upstream."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)


class TextRequest(OpenAIRequest):
    """What the chat and completions requests share: streaming, sampling, stop strings, token
    biases, ``n`` and ``user``."""

    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=-1)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    seed: int | None = None
    stop: str | Annotated[list[str], Field(max_length=16)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    n: Annotated[int, Field(ge=1, le=16)] | None = 1
    user: str | None = None

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.lstrip("-").isdigit() or int(key) < 0:
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
        return value

    @property
    def stop_sequences(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return [s for s in stops if s]

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(TextRequest):
    """``POST /v1/chat/completions``. Every field here is either honoured by the engine or
    rejected by it with ``UnsupportedParameterError``. Unknown fields are kept (``model_extra``)
    so that an OpenAI-compatible upstream receives vendor extras; in-process engines ignore
    them."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    # the deprecated function-calling API: answered with `function_call`, not `tool_calls`
    functions: Annotated[list[FunctionDefinition], Field(min_length=1)] | None = None
    function_call: Literal["none", "auto"] | FunctionName | None = None

    @model_validator(mode="after")
    def _logprobs_pair(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise CrossFieldError("top_logprobs", "top_logprobs requires logprobs to be true")
        if self.functions is not None and self.tools is not None:
            raise ValueError("send 'tools' or the deprecated 'functions', not both")
        if self.function_call is not None and self.functions is None:
            raise ValueError("'function_call' needs 'functions'")
        return self

    @property
    def legacy_functions(self) -> bool:
        """Whether the request uses the deprecated ``functions`` (and so gets its answer)."""
        return self.functions is not None

    @property
    def max_new_tokens(self) -> int | None:
        """``max_completion_tokens`` wins over the older ``max_tokens``."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens


# ---------------------------------------------------------------------------------------------
# Responses


class TopLogprob(WireResponse):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(WireResponse):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(WireResponse):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class PromptTokensDetails(WireResponse):
    cached_tokens: int


class Usage(WireResponse):
    """``prompt_tokens_details`` only when the backend counts cached prompt tokens."""

    _omit_if_none = frozenset({"prompt_tokens_details"})

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int, cached: int | None = None) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            prompt_tokens_details=None
            if cached is None
            else PromptTokensDetails(cached_tokens=cached),
        )

    @classmethod
    def of_event(cls, usage: events.Usage) -> Usage:
        return cls.of(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)


class ToolCallFunction(WireResponse):
    name: str
    arguments: str


class MessageToolCall(WireResponse):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class AssistantMessage(WireResponse):
    """``reasoning`` and ``reasoning_content`` carry the same thinking, apart from the answer:
    vLLM and Ollama's /v1 moved to the first, DeepSeek and older clients read the second.
    ``function_call``: the call, for a request that used the deprecated ``functions``."""

    _omit_if_none = frozenset({"tool_calls", "function_call", "reasoning_content", "reasoning"})
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    function_call: ToolCallFunction | None = None


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class Choice(WireResponse):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(WireResponse):
    _omit_if_none = frozenset({"system_fingerprint"})
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[Choice]
    usage: Usage


class ToolCallFunctionDelta(WireResponse):
    _omit_if_none = frozenset({"name", "arguments"})
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(WireResponse):
    _omit_if_none = frozenset({"id", "type", "function"})
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ToolCallFunctionDelta | None = None


class Delta(WireResponse):
    """``reasoning`` and ``reasoning_content``: the same thinking, as in ``AssistantMessage``."""

    _omit_if_none = frozenset(
        {"role", "content", "reasoning_content", "reasoning", "tool_calls", "function_call"}
    )
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    function_call: ToolCallFunctionDelta | None = None


class ChunkChoice(WireResponse):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(WireResponse):
    """With ``stream_options.include_usage`` (``usage_in_every_chunk``), every chunk has a
    ``usage`` field, null but in the last one, as OpenAI's reference says; else none has."""

    _omit_if_none = frozenset({"system_fingerprint", "usage"})
    _usage_in_every_chunk: bool = PrivateAttr(default=False)
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChunkChoice]
    usage: Usage | None = None

    def usage_in_every_chunk(self) -> ChatCompletionChunk:
        """Mark this chunk as one of a stream that reports usage: a null ``usage`` is sent."""
        self._usage_in_every_chunk = True
        return self

    def _omitted_if_none(self) -> frozenset[str]:
        if self._usage_in_every_chunk:
            return self._omit_if_none - {"usage"}
        return self._omit_if_none
