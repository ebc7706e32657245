"""config.yaml: typed, strictly validated, with ``${ENV}`` references.

``load_config(path)`` returns a ``GatewayConfig`` or raises ``ConfigError`` whose message is
one line naming the file, the model entry and the key (unknown keys, wrong types, duplicate
names or aliases, missing model files, unset environment variables). Tests and library users
build ``GatewayConfig`` directly in Python.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from backends.registry import BackendSettings, backend_kinds, settings_class
from backends.settings import InProcessSettings
from backends.weight_sources import describe_missing

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class ConfigError(Exception):
    """A configuration problem; the message is one line naming the key."""


class ApiKey(BaseModel):
    """An API key, optionally limited to some models (public names or aliases); ``admin``
    keys may use the admin routes (``/admin/*``).

    ``key`` is the key itself or its digest ``sha256:<64 hex>`` (``llmgate hash-key``).
    ``name`` (else the first 8 hex digits of the key's sha256) is the ``key_id`` that records,
    metrics and logs show, never the key. ``rpm`` (requests), ``tpm`` (prompt + completion
    tokens) per minute and ``max_parallel`` (requests at once) limit it
    (``gateway.rate_limits``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    key: str = Field(min_length=1)
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    models: list[str] | None = None
    admin: bool = False
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    max_parallel: int | None = Field(default=None, ge=1)

    @field_validator("key")
    @classmethod
    def _digest_form(cls, key: str) -> str:
        if key.lower().startswith("sha256:"):
            digest = key[7:].lower()
            if not _SHA256_HEX.match(digest):
                raise ValueError("a hashed key is 'sha256:' and 64 hex digits")
            return f"sha256:{digest}"
        return key

    @property
    def hashed(self) -> bool:
        return self.key.startswith("sha256:")

    @property
    def key_id(self) -> str:
        """A stable, non-secret name for this key."""
        if self.name:
            return self.name
        digest = self.key[7:] if self.hashed else hashlib.sha256(self.key.encode()).hexdigest()
        return digest[:8]


class ModelLimits(BaseModel):
    """Requests and tokens (prompt + completion) per minute a model serves, all keys together."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)


LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
LOG_LEVELS: tuple[str, ...] = ("critical", "error", "warning", "info", "debug", "trace")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s]+")


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: list[str | ApiKey] = Field(default_factory=list)
    log_level: LogLevel = "info"
    # Model lifecycle (gateway/lifecycle.py): how many in-process models may be loaded at once
    # (idle ones are unloaded, least recently used first, to make room); seconds a SIGTERM
    # lets requests in flight finish before streams are ended and the process exits.
    max_loaded_models: int | None = Field(default=None, ge=1)
    drain_seconds: float = Field(default=30.0, ge=0)
    # Observability (gateway/metrics.py, gateway/request_log.py): GET /metrics (no key needed);
    # one line per request on logger llmgate.requests, as text or JSON (every log line is JSON
    # then); log_prompts adds the request's prompt (off: prompts are never logged).
    metrics: bool = True
    log_format: Literal["text", "json"] = "text"
    log_prompts: bool = False
    # Request limits (gateway/limits.py): a larger body is a 413, more messages a 400, a
    # request still running after request_timeout seconds is stopped and answered 504.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_messages: int | None = Field(default=2048, ge=1)
    request_timeout: float | None = Field(default=None, gt=0)
    # Rate limits (gateway/rate_limits.py): per model, by public name; the counters live in
    # Redis when redis_url is set (one budget for every replica); rate_limit_failure: what to
    # do while Redis is unreachable (open: admit without limits; closed: 503).
    model_limits: dict[str, ModelLimits] = Field(default_factory=dict)
    redis_url: str | None = None
    rate_limit_failure: Literal["open", "closed"] = "open"
    # Browsers (gateway/cors.py): the origins whose pages may call the API from JavaScript.
    # Unset: pages served from this machine (localhost, 127.0.0.1, [::1]; any port), as
    # Ollama allows by default; ["*"]: any page; []: none but the gateway's own.
    cors_origins: list[str] | None = None

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(_REDIS_SCHEMES):
            raise ValueError("a redis URL starts with redis://, rediss:// or unix://")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str] | None) -> list[str] | None:
        for origin in value or []:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: scheme://host[:port] with no path, or '*'"
                )
        return value

    def api_key_entries(self) -> list[ApiKey]:
        return [k if isinstance(k, ApiKey) else ApiKey(key=k) for k in self.api_keys]


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    server: ServerSettings = Field(default_factory=ServerSettings)
    models: list[BackendSettings] = Field(min_length=1)
    base_dir: Path | None = Field(
        default=None, description="relative model paths resolve against this (the file's dir)"
    )

    @model_validator(mode="after")
    def _unique_names(self) -> GatewayConfig:
        seen: dict[str, str] = {}
        for index, model in enumerate(self.models):
            for name in model.public_names():
                if name in seen:
                    raise ValueError(
                        f"models[{index}] ({model.name}): name or alias '{name}' is already "
                        f"used by {seen[name]}"
                    )
                seen[name] = f"models[{index}] ({model.name})"
        tasks = {name: m.task for m in self.models for name in m.public_names()}
        for index, model in enumerate(self.models):
            for fallback in model.fallbacks:
                if fallback not in seen:
                    raise ValueError(
                        f"models[{index}] ({model.name}): fallbacks: model '{fallback}' is not "
                        "configured"
                    )
                if fallback in (model.name, *model.aliases):
                    raise ValueError(
                        f"models[{index}] ({model.name}): fallbacks: a model cannot fall back "
                        "to itself"
                    )
                if tasks[fallback] != model.task:
                    raise ValueError(
                        f"models[{index}] ({model.name}): fallbacks: model '{fallback}' has task "
                        f"'{tasks[fallback]}', not '{model.task}'"
                    )
        key_ids: set[str] = set()
        for key in self.server.api_key_entries():
            for name in key.models or []:
                if name not in seen:
                    raise ValueError(f"server.api_keys: model '{name}' is not configured")
            if key.key_id in key_ids:
                raise ValueError(
                    f"server.api_keys: two keys are named '{key.key_id}' (the same key twice, "
                    "or the same name): give each a distinct 'name'"
                )
            key_ids.add(key.key_id)
        for name in self.server.model_limits:
            if name not in seen:
                raise ValueError(f"server.model_limits: model '{name}' is not configured")
        return self

    @model_validator(mode="after")
    def _preloads_fit(self) -> GatewayConfig:
        limit = self.server.max_loaded_models
        preloaded = [m.name for m in self.models if m.preload and isinstance(m, InProcessSettings)]
        if limit is not None and len(preloaded) > limit:
            raise ValueError(
                f"server.max_loaded_models is {limit} but {len(preloaded)} in-process models "
                f"have preload: true ({', '.join(preloaded)}); raise the limit or set "
                "preload: false on some"
            )
        return self


def load_config(path: str | Path) -> GatewayConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    except RecursionError as exc:
        raise ConfigError(f"{path}: not valid YAML: nested too deep") from exc
    return parse_config(raw, source=str(path), base_dir=path.resolve().parent)


def parse_config(
    raw: Any, *, source: str = "config", base_dir: Path | None = None
) -> GatewayConfig:
    """Validate an already-parsed YAML/JSON document; see ``load_config``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with 'server' and 'models'")
    try:
        raw = _substitute_env(raw, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    unknown = sorted(set(raw) - {"server", "models"}, key=str)
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key '{unknown[0]}'")
    entries = raw.get("models")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: 'models' must be a non-empty list of model entries")
    models = [_parse_model(i, entry, source) for i, entry in enumerate(entries)]
    try:
        server = ServerSettings.model_validate(raw.get("server") or {})
    except ValidationError as exc:
        raise ConfigError(f"{source}: server: {_first_error(exc)}") from None
    try:
        config = GatewayConfig(server=server, models=models, base_dir=base_dir)
    except ValidationError as exc:
        raise ConfigError(
            f"{source}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}"
        ) from None
    for index, model in enumerate(config.models):
        for key, weights in model.weight_sources():
            problem = describe_missing(weights, base_dir)
            if problem:
                raise ConfigError(f"{source}: models[{index}] ({model.name}): {key}: {problem}")
    return config


def _parse_model(index: int, entry: Any, source: str) -> BackendSettings:
    where = f"{source}: models[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(entry).__name__}")
    name = entry.get("name")
    if isinstance(name, str):
        where += f" ({name})"
    kind = entry.get("backend")
    settings_cls = settings_class(kind) if isinstance(kind, str) else None
    if settings_cls is None:
        raise ConfigError(
            f"{where}: backend: {kind!r} is not a backend; expected one of "
            f"{', '.join(backend_kinds())}"
        )
    try:
        settings: BackendSettings = settings_cls.model_validate(entry)  # type: ignore[assignment]
        return settings
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    # an api_keys entry given as a mapping also fails the union's `str` member: report the other
    errors = [e for e in errors if e["loc"][-1:] != ("str",)] or errors
    # a misspelt key also makes the right one "missing": name the misspelling
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [p for p in error["loc"] if p != "ApiKey"]
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    given = error.get("input")
    shown = f" (got {given!r})" if not isinstance(given, dict | list) else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{key}: {message}{shown}" if key else f"{message}{shown}"


def _substitute_env(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        return {
            k: _substitute_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            if found is None:
                if default is None:
                    raise ConfigError(
                        f"{where}: environment variable {name} is not set "
                        f"(referenced as ${{{name}}})"
                    )
                return default
            return found

        substituted = _ENV_REF.sub(replace, value)
        if "${" in _ENV_REF.sub("", value):
            raise ConfigError(
                f"{where}: '{value}' is not a valid environment reference: write ${{NAME}} or "
                "${NAME:-default} (letters, digits, _)"
            )
        return substituted
    return value


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key written twice in one mapping is an error (PyYAML keeps
    the last one silently)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        assert isinstance(node, yaml.MappingNode)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
