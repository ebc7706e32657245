"""The gateway's own OpenAPI document: valid for clients and fuzzers (unique operation ids)."""

from __future__ import annotations

import warnings
from typing import Any

from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.unit.conftest import fake_entry


def _document() -> dict[str, Any]:
    app = create_app(GatewayConfig(models=[fake_entry("alpha")]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FastAPI warns about duplicate operation ids
        return app.openapi()


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m, path): op for path, ops in doc["paths"].items() for m, op in ops.items()}


def test_every_operation_id_is_unique_without_warnings() -> None:
    ids = [op["operationId"] for op in _operations(_document()).values()]
    assert len(ids) == len(set(ids))
