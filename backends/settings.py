"""The keys every model entry of config.yaml has, whatever its backend kind.

Each family adds its own keys in its ``settings`` module (``backends.llama_cpp.settings`` ...);
``backends.registry`` maps a kind to its settings class. Unknown keys are rejected, so a typo
stops startup with the key's name. Pydantic only: importing this never imports an engine.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# What a model serves: text generation or embeddings (vLLM's names).
Task = Literal["generate", "embed"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


def check_model_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid model name (letters, digits and . _ : / @ + -)")
    return value


class ModelSettings(BaseModel):
    """Keys every model entry has, whatever its backend."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    aliases: list[str] = Field(default_factory=list)
    task: Task = Field(
        default="generate",
        description="generate (chat, completions, responses) or embed (embeddings): the "
        "endpoints this model serves",
    )
    preload: bool = Field(
        default=True,
        description="load at server start (true) or on the first request (false)",
    )
    fallbacks: list[str] = Field(
        default_factory=list,
        description="models that serve instead when this one is unavailable or overloaded "
        "before the first byte reached the client",
    )
    max_tokens_cap: int | None = Field(
        default=None,
        ge=1,
        description="the most tokens one request may generate here (max_tokens above it: "
        "clamped or refused, see max_tokens_policy; unset max_tokens: the cap)",
    )
    max_tokens_policy: Literal["clamp", "reject"] = Field(
        default="clamp", description="clamp: lower max_tokens to the cap; reject: a 400"
    )
    request_timeout: float | None = Field(
        default=None,
        gt=0,
        description="seconds a request to this model may run (504 after); "
        "default: server.request_timeout",
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_model_name(value)

    @field_validator("aliases")
    @classmethod
    def _valid_aliases(cls, values: list[str]) -> list[str]:
        for value in values:
            check_model_name(value)
        return values

    def weight_sources(self) -> list[tuple[str, str]]:
        """``(key, source)`` of every local weight source this entry names, checked at config
        load (``backends.weight_sources.describe_missing``); none for upstreams."""
        return []

    def public_names(self) -> list[str]:
        """Every name a client may send for this entry (and what it derives, e.g. adapters)."""
        return [self.name, *self.aliases]


class AdapterSettings(BaseModel):
    """A LoRA adapter served as its own public model over its entry's base model (``adapters:``
    of a transformers or llama.cpp entry)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: str
    source: str = Field(description="where the adapter's weights are (as the entry's source)")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_model_name(value)


def adapter_weight_sources(adapters: Sequence[AdapterSettings]) -> list[tuple[str, str]]:
    """``(key, source)`` of each adapter, for ``ModelSettings.weight_sources``."""
    return [(f"adapters[{i}] ({a.name}): source", a.source) for i, a in enumerate(adapters)]


ToolParserName = Literal["auto", "none", "hermes", "llama3_json", "mistral"]
ReasoningParserName = Literal["auto", "none", "think", "mistral"]


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: float | str) -> float:
    """Seconds from a number of seconds or a Go-style duration string (``"90s"``, ``"5m"``,
    ``"1h30m"``, ``"-1m"``), as Ollama's ``keep_alive`` and config durations are written.
    Raises ``ValueError`` naming what was wrong."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":  # the one number Go's durations take without a unit
        return 0.0
    parts = _DURATION_PART.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise ValueError(
            f"{value!r} is not a duration: write seconds (300) or a number with units "
            "(90s, 5m, 1h30m)"
        )
    return sign * sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


class InProcessSettings(ModelSettings):
    """Keys of a model served in-process (llama.cpp, transformers): how its output is read.
    ``auto`` picks the parser from the model's chat template (docs/tools.md)."""

    # Keys only text generation reads: set on an entry with `task: embed`, they stop startup.
    generate_only: ClassVar[frozenset[str]] = frozenset({"tool_parser", "reasoning_parser"})

    tool_parser: ToolParserName = Field(
        default="auto",
        description="tool-call format: auto (from the chat template), none (no tool calling), "
        "hermes (<tool_call>{...}</tool_call>: Qwen, Hermes), llama3_json, mistral ([TOOL_CALLS])",
    )
    reasoning_parser: ReasoningParserName = Field(
        default="auto",
        description="thinking format: auto (from the chat template), none, think "
        "(<think>...</think>: Qwen3, DeepSeek-R1), mistral ([THINK]...[/THINK])",
    )
    idle_unload_after: float | None = Field(
        default=None,
        description="unload the model after this long without requests (seconds, or 30s, "
        "5m, 1h); it loads again on the next request. Unset: kept loaded",
    )

    @field_validator("idle_unload_after", mode="before")
    @classmethod
    def _duration(cls, value: float | str | None) -> float | None:
        if value is None:
            return None
        seconds = parse_duration(value)
        if seconds <= 0:
            raise ValueError(f"{value!r}: must be longer than 0 (leave it unset to keep loaded)")
        return seconds

    @model_validator(mode="after")
    def _no_generation_keys_on_embed(self) -> InProcessSettings:
        wrong = sorted(self.generate_only & self.model_fields_set) if self.task == "embed" else []
        if wrong:
            raise ValueError(
                f"{', '.join(wrong)}: read only for text generation, but model "
                f"'{self.name}' has task: embed (remove them, or the task)"
            )
        return self
