"""Engines and upstreams behind one protocol (``backends.protocol.Backend``), usable as a
library without the server. Map of the package: docs/architecture.md."""

from backends.protocol import Backend, EventStream, Health
from backends.registry import BackendSettings, backend_kinds, create_backend
from backends.requests import GenerationRequest

__all__ = [
    "Backend",
    "BackendSettings",
    "EventStream",
    "GenerationRequest",
    "Health",
    "backend_kinds",
    "create_backend",
]
