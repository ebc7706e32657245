"""A tool call forced through a JSON format, for an upstream that can constrain its answer to a
JSON schema but cannot force a call (Ollama: ``format`` yes, ``tool_choice`` no).

``forced_call_schema`` is the schema of the answer that ``tool_choice`` "required" or a named
function asks for: ``{"name": <a tool's name>, "arguments": <its parameters>}`` (an ``anyOf``
over the tools for "required"). ``ForcedCallReader`` turns that answer, as it streams, into
the call's events.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from backends.errors import InvalidRequestError, UnsupportedParameterError, UpstreamError
from backends.events import Event, TextDelta, ToolCallDelta, new_call_id
from backends.requests import GenerationRequest, Tool

_DEFS_PREFIXES = ("#/$defs/", "#/definitions/")


def forces_call(request: GenerationRequest) -> bool:
    """``tool_choice`` is "required" or names a function (and there are tools to call)."""
    choice = request.tool_choice
    return bool(request.tools) and choice is not None and choice.mode in ("required", "function")


def forced_call_schema(request: GenerationRequest, upstream: str) -> dict[str, Any] | None:
    """The JSON schema that forces the call ``request.tool_choice`` asks for, or None when no
    call is forced. Raises ``InvalidRequestError`` (param ``tool_choice``) for a forced call
    without tools or naming a function not in ``tools``, and ``UnsupportedParameterError``
    (param ``response_format``) when the answer is constrained as well: ``upstream`` can
    constrain the answer one way only."""
    choice = request.tool_choice
    if choice is None or choice.mode not in ("required", "function"):
        return None
    if not request.tools:
        what = "'required'" if choice.mode == "required" else f"function '{choice.name}'"
        raise InvalidRequestError(
            f"tool_choice {what} needs 'tools' to call; add them or drop tool_choice",
            param="tool_choice",
        )
    tools = list(request.tools)
    if choice.mode == "function":
        tools = [tool for tool in tools if tool.name == choice.name]
        if not tools:
            names = ", ".join(f"'{t.name}'" for t in request.tools)
            raise InvalidRequestError(
                f"tool_choice names function '{choice.name}', which is not in 'tools' ({names})",
                param="tool_choice",
            )
    if request.constraint is not None:
        raise UnsupportedParameterError(
            f"{upstream} cannot force a tool call (tool_choice) and constrain the answer "
            "(response_format) at once; drop one of them",
            param="response_format",
        )
    defs: dict[str, Any] = {}
    branches = [_call_schema(tool, defs) for tool in tools]
    schema: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    if defs:
        schema["$defs"] = defs
    return schema


def _call_schema(tool: Tool, defs: dict[str, Any]) -> dict[str, Any]:
    parameters = _hoisted(tool.parameters, defs) if tool.parameters else {"type": "object"}
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _hoisted(parameters: Mapping[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``parameters`` without its ``$defs``/``definitions``, which move to the root ``defs``
    (a ``$ref`` is resolved from the root of the whole schema), renamed where two tools use
    one name for different definitions."""
    own = {**(parameters.get("definitions") or {}), **(parameters.get("$defs") or {})}
    renames: dict[str, str] = {}
    for key, value in own.items():
        name, n = key, 1
        while name in defs and defs[name] != value:
            name, n = f"{key}_{n}", n + 1
        renames[key] = name
        defs[name] = value  # a placeholder until its refs are rewritten below
    for key, name in renames.items():
        defs[name] = _rewrite_refs(own[key], renames)
    rest = {k: v for k, v in parameters.items() if k not in ("$defs", "definitions")}
    rewritten: dict[str, Any] = _rewrite_refs(rest, renames)
    return rewritten


def _rewrite_refs(node: Any, renames: Mapping[str, str]) -> Any:
    if isinstance(node, list):
        return [_rewrite_refs(item, renames) for item in node]
    if not isinstance(node, Mapping):
        return node
    out = {key: _rewrite_refs(value, renames) for key, value in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str):
        for prefix in _DEFS_PREFIXES:
            if ref.startswith(prefix) and ref[len(prefix) :] in renames:
                out["$ref"] = "#/$defs/" + renames[ref[len(prefix) :]]
    return out


# The answer's start when it keeps the schema's key order (llama.cpp's grammar, which Ollama
# uses, writes required properties in the order given): the name, then the arguments' start.
_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*')


class ForcedCallReader:
    """Reads the JSON text of one forced call (``{"name": ..., "arguments": {...}}``) as it
    streams, into ``ToolCallDelta``\\ s of choice ``index``, call ``call``: the id and name as
    soon as the name is complete, then the arguments' text as it arrives — held back from the
    last ``}`` on, which may be the one closing the whole answer. An answer in another key
    order is read whole at ``end``."""

    def __init__(self, upstream: str, index: int = 0, call: int = 0) -> None:
        self._upstream = upstream
        self._index = index
        self._call = call
        self._text = ""
        self._arguments_at: int | None = None  # where the arguments start in _text
        self._sent = 0  # how much of _text went out as arguments
        self.complete = False  # set by ``end``: the answer was one whole call

    @property
    def started(self) -> bool:
        """The call's first delta (id and name) went out."""
        return self._arguments_at is not None

    def feed(self, text: str) -> list[Event]:
        self._text += text
        out: list[Event] = []
        if self._arguments_at is None:
            head = _HEAD.match(self._text)
            if head is None:
                return out
            out.append(self._first(json.loads(head.group(1))))
            self._arguments_at = self._sent = head.end()
        last_brace = self._text.rfind("}", self._arguments_at)
        until = last_brace if last_brace >= 0 else len(self._text)
        if until > self._sent:
            out.append(self._arguments(self._text[self._sent : until]))
            self._sent = until
        return out

    def end(self, truncated: bool) -> list[Event]:
        """The rest of the call once the answer is over; ``truncated``: the token limit cut it
        (what was read goes out as it is, text if the name never came). Raises
        ``UpstreamError`` when a complete answer is not a call."""
        call = self._call_in_text()
        self.complete = call is not None
        if call is None and not truncated:
            raise UpstreamError(
                f"{self._upstream} answered a forced tool call with text that is not one: "
                f"{self._text[:200]!r}"
            )
        if self._arguments_at is None:
            if call is None:
                return [TextDelta(self._index, self._text)] if self._text.strip() else []
            name, arguments = call
            return [self._first(name), self._arguments(json.dumps(arguments, ensure_ascii=False))]
        rest = self._text[self._sent :].rstrip()
        if call is not None:
            rest = rest[:-1]  # the brace that closes the answer
        return [self._arguments(rest)] if rest else []

    def _call_in_text(self) -> tuple[str, Any] | None:
        try:
            value = json.loads(self._text)
        except ValueError:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            return None
        return value["name"], value.get("arguments", {})

    def _first(self, name: str) -> ToolCallDelta:
        return ToolCallDelta(self._index, self._call, new_call_id(), name, "")

    def _arguments(self, text: str) -> ToolCallDelta:
        return ToolCallDelta(self._index, self._call, arguments=text)
