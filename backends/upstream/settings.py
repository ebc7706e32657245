"""Settings of the upstream backends: Ollama and any OpenAI-compatible server (pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from backends.settings import ModelSettings


class UpstreamTimeouts(BaseModel):
    """Deadlines for one upstream request, in seconds; each expiry is a 504 (or an error frame
    once streaming has begun)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    connect: float = Field(default=5.0, gt=0, description="TCP connect")
    first_byte: float = Field(
        default=120.0, gt=0, description="request sent -> first chunk (covers queueing/prefill)"
    )
    idle: float = Field(default=60.0, gt=0, description="longest gap between two chunks")
    total: float = Field(default=900.0, gt=0, description="the whole request")


class UpstreamSettings(ModelSettings):
    """Keys shared by the backends that relay to another server."""

    base_url: list[str] = Field(min_length=1, description="one URL, or several replicas")
    upstream_model: str | None = Field(
        default=None, description="the model name the upstream knows; default: `name`"
    )
    api_key: str | None = None
    timeouts: UpstreamTimeouts = Field(default_factory=UpstreamTimeouts)
    max_in_flight: int = Field(
        default=256, ge=1, description="concurrent requests to this model; more: 429"
    )
    max_connections: int = Field(default=100, ge=1, description="pooled connections per replica")
    health_check_interval: float = Field(
        default=10.0, ge=0, description="seconds between active health checks; 0 = off"
    )
    failure_threshold: int = Field(
        default=3, ge=1, description="consecutive failures that put a replica in cool-down"
    )
    cooldown: float = Field(default=30.0, ge=0, description="seconds a failing replica rests")

    @field_validator("base_url", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _http_urls(cls, values: list[str]) -> list[str]:
        for url in values:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return [url.rstrip("/") for url in values]

    @property
    def remote_model(self) -> str:
        return self.upstream_model or self.name


class OllamaSettings(UpstreamSettings):
    """An upstream Ollama server, spoken to over its native /api/chat."""

    backend: Literal["ollama"]
    keep_alive: str | int | None = Field(
        default=None, description="how long Ollama keeps the model loaded (e.g. 5m, -1)"
    )
    num_ctx: int | None = Field(default=None, ge=16, description="Ollama's context window")


class OpenAICompatSettings(UpstreamSettings):
    """Any OpenAI-compatible upstream: vLLM, llama-server, TGI, LM Studio, another llmgate."""

    backend: Literal["openai"]
