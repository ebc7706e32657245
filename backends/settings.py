"""Typed settings of one model entry, per backend kind (the ``models:`` items of config.yaml).

Unknown keys are rejected, so a typo stops startup with the key's name. The gateway's config
loader builds these; library users may construct them directly. Pydantic only: importing this
module never imports an engine.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


class ModelSettings(BaseModel):
    """Keys every model entry has, whatever its backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    aliases: list[str] = Field(default_factory=list)
    preload: bool = Field(
        default=True,
        description="load at server start (true) or on the first request (false)",
    )
    max_queue: int = Field(default=32, ge=0, description="requests allowed to wait; more: 429")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid model name (letters, digits and . _ : / @ + -)"
            )
        return value

    @field_validator("aliases")
    @classmethod
    def _valid_aliases(cls, values: list[str]) -> list[str]:
        for value in values:
            cls._valid_name(value)
        return values


class LlamaCppSettings(ModelSettings):
    """A GGUF served in-process by llama-cpp-python."""

    backend: Literal["llama_cpp"]
    source: str = Field(
        description="a .gguf path, package:<pkg>/<file>.gguf, or hf:<org>/<repo>/<file>.gguf"
    )
    n_ctx: int = Field(default=2048, ge=16)
    n_gpu_layers: int = Field(default=0, ge=-1, description="-1 = all layers on the GPU")
    n_threads: int | None = Field(default=None, ge=1, description="default: llama.cpp's choice")
    n_batch: int = Field(default=512, ge=1)
    flash_attn: bool = False
    chat_format: str | None = Field(
        default=None, description="a llama-cpp-python chat format name; default: the GGUF's"
    )
    chat_template: str | None = Field(
        default=None, description="a Jinja chat template overriding the GGUF's own"
    )
    seed: int | None = Field(default=None, description="default seed for requests without one")


BackendSettings = LlamaCppSettings
