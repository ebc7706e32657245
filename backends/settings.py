"""The keys every model entry of config.yaml has, whatever its backend kind.

Each family adds its own keys in its ``settings`` module (``backends.llama_cpp.settings`` ...);
``backends.registry`` maps a kind to its settings class. Unknown keys are rejected, so a typo
stops startup with the key's name. Pydantic only: importing this never imports an engine.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


def check_model_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid model name (letters, digits and . _ : / @ + -)")
    return value


class ModelSettings(BaseModel):
    """Keys every model entry has, whatever its backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    aliases: list[str] = Field(default_factory=list)
    preload: bool = Field(
        default=True,
        description="load at server start (true) or on the first request (false)",
    )
    fallbacks: list[str] = Field(
        default_factory=list,
        description="models that serve instead when this one is unavailable or overloaded "
        "before the first byte reached the client",
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
