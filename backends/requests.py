"""What a backend is asked to do, in no surface's terms (docs/architecture.md, "The core").

Every surface (OpenAI chat, and the coming completions, Ollama and Anthropic routes) translates
its wire request into one ``GenerationRequest``; every backend serves one. ``None`` means "not
set by the client": the engine applies its own default. Frozen dataclasses, stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str
    type: Literal["text"] = "text"


@dataclass(frozen=True, slots=True)
class OtherPart:
    """A non-text part (an image, audio, a file), kept so that an engine can refuse it by name."""

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)


ContentPart = TextPart | OtherPart


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the assistant made: ``arguments`` is JSON text, as the model wrote it."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: tuple[ContentPart, ...] = ()
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # a tool message: the call it answers
    reasoning: str | None = None  # an assistant message's thinking, for templates that replay it

    def text(self) -> str | None:
        """The content as one string, or None when a part is not text."""
        if any(not isinstance(part, TextPart) for part in self.content):
            return None
        return "".join(part.text for part in self.content if isinstance(part, TextPart))


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call; ``parameters`` is its JSON schema."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None
    strict: bool | None = None


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``auto``: the model decides; ``none``: no call; ``required``: at least one call;
    ``function``: a call of ``name``."""

    mode: Literal["auto", "none", "required", "function"]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class OutputConstraint:
    """Output the engine must constrain decoding to: any JSON object, JSON valid against
    ``schema``, or a GBNF ``grammar``."""

    kind: Literal["json_object", "json_schema", "grammar"]
    schema: Mapping[str, Any] | None = None
    grammar: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling knobs as the client set them (None: the engine's default)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # 0 or -1: off
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None  # multiplicative (llama.cpp / Ollama style)
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation: a chat (``messages``, rendered with the model's chat template) or a raw
    ``prompt`` that bypasses the template. ``n`` choices; ``extras`` are vendor fields a
    surface received and an OpenAI-compatible upstream may want (in-process engines ignore
    them)."""

    model: str
    messages: tuple[Message, ...] = ()
    # a text, or the model's own token ids (OpenAI completions' token-id prompts), read as given
    prompt: str | tuple[int, ...] | None = None
    max_tokens: int | None = None
    # max_tokens is only an upper bound (Ollama's num_predict): an in-process engine fits it to
    # the room the prompt leaves in the window instead of refusing the request
    max_tokens_fits_window: bool = False
    # over the window, the prompt is cut to fit (Ollama's ``truncate``, its default) instead of
    # refused: the oldest messages go first (system messages and the last turn stay), then the
    # middle of what is left (backends.local.fit)
    truncate_prompt: bool = False
    # the context window the client asked for (Ollama's ``options.num_ctx``): an Ollama
    # upstream whose model entry sets none gets it; an in-process engine keeps its own window
    num_ctx: int | None = None
    # the last message is the start of the assistant's answer: the model continues it and the
    # answer holds only the continuation (Anthropic's and Ollama's prefill, vLLM's
    # ``continue_final_message``)
    continue_final: bool = False
    sampling: Sampling = field(default_factory=Sampling)
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    constraint: OutputConstraint | None = None
    reasoning: bool | None = None  # think before answering (models that can); None: default
    user: str | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_raw(self) -> bool:
        return self.prompt is not None

    @property
    def wants_tools(self) -> bool:
        """Tools are offered and the model may (or must) call one."""
        mode = self.tool_choice.mode if self.tool_choice is not None else "auto"
        return bool(self.tools) and mode != "none"
