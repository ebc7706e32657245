"""OpenAPI documentation for request bodies that routes read by hand.

The tutorials' ``POST /`` and Ollama's ``/api/*`` read their body as JSON whatever its
``Content-Type`` (their clients send form types), so FastAPI cannot parse it for them and
``/openapi.json`` would show no body at all. ``json_body(Model)`` is the route decorator's
``openapi_extra``: the model's JSON schema, self-contained (its ``$defs`` inlined, since the
document's components only hold models FastAPI parses itself), so clients, ``/docs`` and the
fuzz tests see the body the route really validates.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_DEFS = "#/$defs/"


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the required ``application/json`` body.

    Raises ``ValueError`` for a recursive model (its schema cannot be inlined)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    inlined = _inline(schema, defs, ())
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inlined}}}}


def _inline(node: Any, defs: dict[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_DEFS):
        name = ref.removeprefix(_DEFS)
        if name in seen:
            raise ValueError(f"cannot inline the recursive schema {name!r}")
        rest = {key: value for key, value in node.items() if key != "$ref"}
        return {**_inline(defs[name], defs, (*seen, name)), **_inline(rest, defs, seen)}
    return {key: _inline(value, defs, seen) for key, value in node.items()}
