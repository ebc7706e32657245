"""The JSON schema a tool call is constrained to: one call object ``{"name": ..., "arguments":
{...}}`` of any offered tool (``call_schema``), each tool's ``parameters`` closed to keys it
does not list (``closed_schema``) and moved under the call with its ``$defs`` and ``$ref``s
pointed at the call schema's root. ``backends.local.tool_formats`` puts it into each family's
grammar rules; ``backends.local.grammar`` closes ``response_format`` schemas the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from backends.requests import Tool

# A function without ``parameters`` takes none (OpenAI: "omitting parameters defines a
# function with an empty parameter list").
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def parameters_of(tool: Tool) -> dict[str, Any]:
    """The tool's arguments' schema: an object's (a schema without a ``type`` is taken as one;
    another type was refused with the request, ``backends.local.chat``)."""
    return {"type": "object", **(tool.parameters or NO_PARAMETERS)}


def call_schema(tools: Sequence[Tool], arguments_key: str = "arguments") -> dict[str, Any]:
    """The JSON schema of one call object ``{"name": ..., <arguments_key>: {...}}`` of any of
    ``tools`` (compact separators, no free whitespace: a weak model cannot loop on blanks).
    Each tool's schema is nested in it, so its ``$defs`` and the ``$ref``s to them (or to its
    root, ``#``) move to the call schema's root, renamed per tool."""
    definitions: dict[str, Any] = {}
    options = []
    for number, tool in enumerate(tools):
        arguments = _rooted(closed_schema(parameters_of(tool)), f"tool{number}", definitions)
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, arguments_key: arguments},
                "required": ["name", arguments_key],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    if definitions:
        schema = {**schema, "$defs": definitions}
    return {**schema, "x-guidance": JSON_STYLE}


def _rooted(schema: dict[str, Any], name: str, definitions: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (a tool's own document) ready to nest: its definitions added to
    ``definitions`` as ``<name>.<def>`` and itself as ``<name>``, its refs pointed there."""
    own = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    if not own and not _has_ref(schema):
        return schema

    def moved(ref: str) -> str:
        if ref == "#":
            return f"#/$defs/{name}"
        for prefix in ("#/$defs/", "#/definitions/"):
            if ref.startswith(prefix):
                return f"#/$defs/{name}.{ref.removeprefix(prefix)}"
        return ref

    body = _with_refs({k: v for k, v in schema.items() if k not in ("$defs", "definitions")}, moved)
    for key, value in own.items():
        definitions[f"{name}.{key}"] = _with_refs(value, moved)
    definitions[name] = body
    return body


def _has_ref(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "$ref" in value or any(_has_ref(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_ref(v) for v in value)
    return False


def _with_refs(value: Any, moved: Callable[[str], str]) -> Any:
    """``value`` with every ``$ref`` string passed through ``moved``."""
    if isinstance(value, Mapping):
        return {
            k: moved(v) if k == "$ref" and isinstance(v, str) else _with_refs(v, moved)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_with_refs(v, moved) for v in value]
    return value


JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMAS = ("items", "not", "if", "then", "else", "additionalProperties", "contains")


def closed_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with objects that list ``properties`` closed to others unless the schema
    says otherwise (``additionalProperties`` absent means false, as llama.cpp's server and
    OpenAI's strict mode read it): every output still validates against the schema as given,
    and a model cannot ramble on with invented keys until it runs out of tokens."""
    out: dict[str, Any] = dict(schema)
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), Mapping):
            out[key] = {
                k: closed_schema(v) if isinstance(v, Mapping) else v for k, v in out[key].items()
            }
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [closed_schema(v) if isinstance(v, Mapping) else v for v in out[key]]
    for key in _SUBSCHEMAS:
        if isinstance(out.get(key), Mapping):
            out[key] = closed_schema(out[key])
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out
