"""How model families write tool calls: one ``ToolFormat`` per family, for both in-process
engines (docs/tools.md).

A format knows its markers (texts that must reach the output even when they are special
tokens), how a call starts (``trigger``), how to read finished calls out of the text, and the
grammar rules that constrain a call (``backends.local.grammar`` assembles them). Formats:

- ``hermes``: ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, repeated for
  parallel calls (Qwen2.5/3, Hermes, and llmgate's prompted fallback);
- ``llama3_json``: the whole answer is ``{"name": ..., "parameters": {...}}`` (calls separated
  by ``;``), optionally after ``<|python_tag|>`` (Llama 3.1-3.3);
- ``mistral``: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`` (v3 tokenizers) or
  ``[TOOL_CALLS]name[ARGS]{...}`` (v11+).

Reading never raises: a call that does not parse is reported as malformed and its text is
kept as content by the caller.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backends.events import new_call_id
from backends.local.call_schema import call_schema, parameters_of
from backends.local.reasoning import partial_suffix
from backends.requests import Tool

_DECODER = json.JSONDecoder()
_ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class ParsedCall:
    name: str
    arguments: str  # JSON text of an object


@dataclass(frozen=True, slots=True)
class CallScan:
    """What a look at the text after a call's trigger found: ``calls`` complete so far,
    ``consumed`` characters of the text they took; ``malformed`` when the text can no longer
    be a call."""

    calls: tuple[ParsedCall, ...] = ()
    consumed: int = 0
    malformed: bool = False


Literal_ = Callable[[str], str]  # a grammar literal for a text: a special token or a string


class ToolFormat:
    """A family's tool-call format. ``scan(text, final)`` reads the text from the trigger on;
    ``final`` is true once the output has ended."""

    name: str = ""
    trigger: str = ""
    markers: tuple[str, ...] = ()
    at_start_only: bool = False  # a call can only open the answer (not follow text)

    def detect(self, template: str) -> bool:
        raise NotImplementedError

    def scan(self, text: str, final: bool) -> CallScan:
        raise NotImplementedError

    def call_id(self) -> str:
        return new_call_id()

    def history_id(self, call_id: str) -> str:
        """The id a past call goes back into the template with."""
        return call_id

    separator = '"\\n"'  # between parallel calls, as a Lark literal

    def calls_rule(self, tools: Sequence[Tool], parallel: bool, lit: Literal_) -> str:
        """Lark rules: ``body`` (a call after its trigger), ``call`` (trigger and body) and
        ``calls`` (one call of any of ``tools``; with ``parallel``, one or more)."""
        return "\n".join(
            (
                f"calls: call{self.more(parallel)}",
                f"call: {lit(self.trigger)} body",
                f"body: {self.body_rule(tools, parallel, lit)}",
            )
        )

    def more(self, parallel: bool) -> str:
        """What may follow a first call: more calls, if ``parallel``."""
        return f" ({self.separator} call)*" if parallel else ""

    def body_rule(self, tools: Sequence[Tool], parallel: bool, lit: Literal_) -> str:
        raise NotImplementedError

    def text_rule(self) -> str:
        """The Lark terminal ``TEXT``: free text that may precede calls (auto mode)."""
        return "TEXT: /(.|\\n)*/"


def _json_rule(schema: Mapping[str, Any]) -> str:
    return "%json " + json.dumps(schema)


def _call_from(
    obj: Any, arguments_keys: tuple[str, ...] = ("arguments", "parameters")
) -> ParsedCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    for key in arguments_keys:
        if key in obj:
            args = obj[key]
            break
    else:
        args = {}
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ParsedCall(obj["name"], json.dumps(args, ensure_ascii=False))


def _skip_ws(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


class Hermes(ToolFormat):
    name = "hermes"
    trigger = "<tool_call>"
    end = "</tool_call>"
    markers = ("<tool_call>", "</tool_call>")

    def detect(self, template: str) -> bool:
        return self.trigger in template

    def scan(self, text: str, final: bool) -> CallScan:
        calls: list[ParsedCall] = []
        at = 0
        while True:
            start = _skip_ws(text, at)
            if start == len(text):
                return CallScan(tuple(calls), at)
            if not text.startswith(self.trigger, start):
                if self.trigger.startswith(text[start:]) and not final:
                    return CallScan(tuple(calls), at)  # the next trigger, still arriving
                return CallScan(tuple(calls), at, malformed=True)
            body = start + len(self.trigger)
            close, call = self._closed_call(text, body)
            if close < 0:
                if not final:
                    return CallScan(tuple(calls), at)
                # lenient: a complete call whose closing tag never came (output ended), or
                # came only in part (the token budget ran out inside it)
                rest = text[body:]
                call = self._call(rest[: len(rest) - partial_suffix(rest, self.end)])
                if call is None:
                    return CallScan(tuple(calls), at, malformed=True)
                return CallScan((*calls, call), len(text))
            if call is None:
                return CallScan(tuple(calls), at, malformed=True)
            calls.append(call)
            at = close + len(self.end)

    def _closed_call(self, text: str, body: int) -> tuple[int, ParsedCall | None]:
        """Where the call whose JSON starts at ``body`` closes, and the call: at the first
        closing tag after a whole JSON value (an argument string may hold the tag itself).
        -1 while no closing tag follows a whole value; a call of None: the value between the
        trigger and the last closing tag so far is not a call (malformed)."""
        close = text.find(self.end, body)
        last = -1
        while close >= 0:
            call = self._call(text[body:close])
            if call is not None:
                return close, call
            last = close
            close = text.find(self.end, close + 1)
        if last >= 0 and self._whole_json_before(text, body, last):
            return last, None  # a whole value, but not a call
        return -1, None

    @staticmethod
    def _whole_json_before(text: str, body: int, close: int) -> bool:
        try:
            json.loads(text[body:close])
        except ValueError:
            return False
        return True

    @staticmethod
    def _call(body: str) -> ParsedCall | None:
        try:
            return _call_from(json.loads(body))
        except ValueError:
            return None

    def body_rule(self, tools: Sequence[Tool], parallel: bool, lit: Literal_) -> str:
        return f'"\\n" {_json_rule(call_schema(tools))} "\\n" {lit(self.end)}'


class Llama3Json(ToolFormat):
    name = "llama3_json"
    trigger = "{"
    python_tag = "<|python_tag|>"
    markers = ("<|python_tag|>",)
    at_start_only = True

    def detect(self, template: str) -> bool:
        return self.python_tag in template or '"parameters": dictionary of argument' in template

    def scan(self, text: str, final: bool) -> CallScan:
        if not final:
            return CallScan()
        body = text.strip()
        if body.startswith(self.python_tag):
            body = body[len(self.python_tag) :].lstrip()
        calls: list[ParsedCall] = []
        at = 0
        while at < len(body):
            try:
                obj, end = _DECODER.raw_decode(body, at)
            except ValueError:
                return CallScan(malformed=True)
            call = _call_from(obj, ("parameters", "arguments"))
            if call is None:
                return CallScan(malformed=True)
            calls.append(call)
            at = _skip_ws(body, end)
            if at < len(body) and body[at] == ";":
                at = _skip_ws(body, at + 1)
        if not calls:
            return CallScan(malformed=True)
        return CallScan(tuple(calls), len(text))

    separator = '"; "'

    def calls_rule(self, tools: Sequence[Tool], parallel: bool, lit: Literal_) -> str:
        return "\n".join(
            (
                f"calls: call{self.more(parallel)}",
                "call: body",
                f"body: {self.body_rule(tools, parallel, lit)}",
            )
        )

    def body_rule(self, tools: Sequence[Tool], parallel: bool, lit: Literal_) -> str:
        return _json_rule(call_schema(tools, "parameters"))

    def text_rule(self) -> str:
        return "TEXT: /([^{<](.|\\n)*)?/"  # an answer that is not a call does not open with {


class Mistral(ToolFormat):
    name = "mistral"
    trigger = "[TOOL_CALLS]"
    args_tag = "[ARGS]"
    markers = ("[TOOL_CALLS]", "[ARGS]")
    _NAME = re.compile(r"\s*([A-Za-z0-9_.-]+)\s*$")

    def detect(self, template: str) -> bool:
        return self.trigger in template

    def call_id(self) -> str:
        """Mistral templates insist on ids of 9 letters and digits."""
        return "".join(secrets.choice(_ALNUM) for _ in range(9))

    def history_id(self, call_id: str) -> str:
        if len(call_id) == 9 and call_id.isalnum():
            return call_id
        return hashlib.sha256(call_id.encode()).hexdigest()[:9]

    def scan(self, text: str, final: bool) -> CallScan:
        if not final:
            return CallScan()
        calls: list[ParsedCall] = []
        for segment in text.split(self.trigger)[1:]:
            found = self._segment(segment)
            if found is None:
                return CallScan(malformed=True)
            calls.extend(found)
        if not calls or text.split(self.trigger)[0].strip():
            return CallScan(malformed=True)
        return CallScan(tuple(calls), len(text))

    def _segment(self, segment: str) -> list[ParsedCall] | None:
        if self.args_tag in segment:  # v11+: name[ARGS]{...}
            name, _, args = segment.partition(self.args_tag)
            match = self._NAME.match(name)
            if match is None:
                return None
            try:
                obj, end = _DECODER.raw_decode(args.strip())
            except ValueError:
                return None
            if args.strip()[end:].strip():
                return None
            call = _call_from({"name": match.group(1), "arguments": obj})
            return [call] if call is not None else None
        try:
            obj, end = _DECODER.raw_decode(segment.strip())
        except ValueError:
            return None
        if segment.strip()[end:].strip():
            return None
        items = obj if isinstance(obj, list) else [obj]
        calls = [_call_from(item) for item in items]
        if not calls or any(c is None for c in calls):
            return None
        return [c for c in calls if c is not None]

    def more(self, parallel: bool) -> str:
        return ""  # parallel calls are items of the one array

    def body_rule(self, tools: Sequence[Tool], parallel: bool, lit: Literal_) -> str:
        items = call_schema(tools)
        style = items.pop("x-guidance")
        definitions = items.pop("$defs", None)  # refs point at the document's root
        array: dict[str, Any] = {"type": "array", "items": items, "minItems": 1}
        if not parallel:
            array["maxItems"] = 1
        if definitions is not None:
            array["$defs"] = definitions
        return _json_rule({**array, "x-guidance": style})


FORMATS: dict[str, ToolFormat] = {f.name: f for f in (Hermes(), Llama3Json(), Mistral())}


def detect_format(template: str | None) -> ToolFormat | None:
    """The format a chat template's own tool instructions ask for, if one is known."""
    if not template:
        return None
    for fmt in FORMATS.values():
        if fmt.detect(template):
            return fmt
    return None


PROMPTED_INSTRUCTIONS = """# Tools

You can call functions to help answer. The functions, as JSON schemas, are:
<tools>
{tools}
</tools>

To call a function, answer with one JSON object per call, each inside <tool_call></tool_call> tags:
<tool_call>
{{"name": "<function name>", "arguments": {{<arguments as a JSON object>}}}}
</tool_call>"""


def prompted_instructions(tools: Sequence[Tool]) -> str:
    """llmgate's fallback for a template without tool support: the tools described in the
    system prompt, calls in the Hermes format (and constrained to it by the grammar)."""
    lines = [
        json.dumps(
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": parameters_of(t),
                },
            },
            ensure_ascii=False,
        )
        for t in tools
    ]
    return PROMPTED_INSTRUCTIONS.format(tools="\n".join(lines))
