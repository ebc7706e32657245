"""The gateway's own OpenAPI document: valid for clients and fuzzers (unique operation ids, every
request body the routes validate declared, self-contained)."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
from pydantic import BaseModel

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.ollama_types import OllamaChatRequest
from gateway.openapi_bodies import json_body
from gateway.tutorial import TutorialRequest
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


@pytest.mark.parametrize(
    ("path", "title"),
    [
        ("/", "TutorialRequest"),
        ("/api/chat", "OllamaChatRequest"),
        ("/api/generate", "OllamaGenerateRequest"),
        ("/api/embed", "OllamaEmbedRequest"),
        ("/api/embeddings", "OllamaEmbeddingsRequest"),
        ("/api/show", "OllamaShowRequest"),
    ],
)
def test_routes_that_read_their_body_by_hand_declare_it(path: str, title: str) -> None:
    body = _operations(_document())[("post", path)]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert body["required"] is True
    assert schema["title"] == title


def test_the_document_has_no_dangling_references() -> None:
    doc = _document()
    text = json.dumps(doc)
    assert "#/$defs/" not in text
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"], ref


def test_json_body_inlines_nested_models() -> None:
    schema = json_body(OllamaChatRequest)["requestBody"]["content"]["application/json"]["schema"]
    messages = schema["properties"]["messages"]
    assert "$ref" not in json.dumps(schema)
    assert "role" in json.dumps(messages)
    assert json_body(TutorialRequest)["requestBody"]["required"] is True


class _Tree(BaseModel):
    children: list[_Tree] = []


def test_json_body_refuses_a_recursive_model() -> None:
    with pytest.raises(ValueError, match="recursive"):
        json_body(_Tree)
