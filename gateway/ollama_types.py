"""Ollama's wire types for the ``/api/*`` surface (Ollama's ``api/types.go``, docs/api.md):
requests tolerate unknown fields (Ollama ignores them too); only the surface uses them.

Field names are Ollama's, verbatim. ``tool_choice`` (top level, or inside ``options`` where the
``ollama`` clients can put it) is llmgate's one extension: Ollama has no way to force a call.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ThinkValue = bool | Literal["high", "medium", "low"]
ToolChoiceValue = str | dict[str, Any]


class _Wire(BaseModel):
    """A JSON ``null`` is as if the field were absent (Go's ``encoding/json`` leaves the field
    at its default): ``"stream": null`` streams, ``"content": null`` is empty."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class OllamaOptions(_Wire):
    """The runtime options llmgate honours; every other Ollama option (``num_thread``,
    ``num_gpu``, ``mirostat``, ...) is accepted and ignored."""

    num_predict: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: list[str] | str | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    num_ctx: int | None = None
    tool_choice: ToolChoiceValue | None = None  # llmgate's extension


class OllamaToolCallFunction(_Wire):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)  # an object, not JSON text


class OllamaToolCall(_Wire):
    id: str | None = None
    function: OllamaToolCallFunction


class OllamaMessage(_Wire):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None  # base64
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = None  # a tool result: the tool that gave it
    tool_call_id: str | None = None


class OllamaToolFunction(_Wire):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class OllamaTool(_Wire):
    type: str = "function"
    function: OllamaToolFunction


class OllamaGenerationFields(_Wire):
    """What ``/api/chat`` and ``/api/generate`` share; ``stream`` is on by default, as in
    Ollama. ``keep_alive`` sets the model's idle timeout (``gateway.lifecycle``)."""

    model: str = Field(min_length=1)
    stream: bool = True
    format: str | dict[str, Any] | None = None  # "json" or a JSON schema
    options: OllamaOptions | None = None
    keep_alive: float | str | None = None
    think: ThinkValue | None = None
    truncate: bool | None = None  # absent or true: a prompt over the window is cut to fit


class OllamaChatRequest(OllamaGenerationFields):
    messages: list[OllamaMessage] = Field(default_factory=list)  # empty: load the model
    tools: list[OllamaTool] | None = None
    tool_choice: ToolChoiceValue | None = None  # llmgate's extension


class OllamaGenerateRequest(OllamaGenerationFields):
    prompt: str = ""  # empty: load the model
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = None


class OllamaEmbedRequest(_Wire):
    model: str = Field(min_length=1)
    input: str | list[str] = ""  # empty: load the model
    truncate: bool | None = None
    dimensions: int | None = Field(default=None, ge=1)
    options: OllamaOptions | None = None
    keep_alive: float | str | None = None


class OllamaEmbeddingsRequest(_Wire):
    """The older ``/api/embeddings``: one ``prompt``, one ``embedding``."""

    model: str = Field(min_length=1)
    prompt: str = ""
    options: OllamaOptions | None = None
    keep_alive: float | str | None = None


class OllamaShowRequest(_Wire):
    model: str | None = None
    name: str | None = None  # the older spelling
    verbose: bool = False

    @property
    def model_name(self) -> str:
        return self.model or self.name or ""
