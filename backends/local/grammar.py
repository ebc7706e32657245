"""Constrained decoding for both in-process engines, through llguidance (docs/tools.md).

``build_grammar`` turns what a request asks for — a JSON schema or object, a GBNF grammar, a
forced or optional tool call in the model's own format, each possibly after the model's
thinking — into one llguidance grammar; ``compile_grammar`` checks it against the model's
vocabulary (a schema feature llguidance cannot enforce is a 400 naming it). Per choice, a
``TokenConstraint`` gives the allowed next tokens as a boolean mask and follows the sampled
ones; the engine applies the mask with its own primitive (a numpy array for llama.cpp, a
tensor row for transformers). The constraint lets the model end (its end-of-generation token)
only where the grammar is complete.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from backends.errors import InvalidRequestError
from backends.local.call_schema import JSON_STYLE, closed_schema
from backends.local.output import OutputSpec
from backends.local.tool_formats import ToolFormat
from backends.requests import GenerationRequest, OutputConstraint, Tool


class GrammarVocabulary:
    """An engine's vocabulary as llguidance reads it, built by ``build`` once, on the first
    constrained request (0.2-1 s), from whichever worker thread asks first."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._tokenizer: Any = None

    def get(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = self._build()
            return self._tokenizer


@dataclass(frozen=True)
class GrammarSource:
    """An llguidance grammar (its JSON form) and the request field it enforces."""

    grammar: str
    param: str


@dataclass(frozen=True)
class CompiledGrammar:
    """A grammar checked against one model's vocabulary; ``constraint()`` starts a choice."""

    matcher: Any  # llguidance.LLMatcher in its initial state, copied per choice
    vocab_size: int

    def constraint(self) -> TokenConstraint:
        return TokenConstraint(self.matcher.deep_copy(), self.vocab_size)


class TokenConstraint:
    """One choice's position in the grammar."""

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        self._matcher = matcher
        self._vocab = vocab_size

    def allowed(self) -> Any:
        """A boolean mask over the vocabulary (a numpy array): the tokens that may come next."""
        import numpy as np

        bits = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        return np.unpackbits(bits, bitorder="little")[: self._vocab].astype(bool)

    def accept(self, token: int) -> bool:
        """Follow a sampled token; False if the grammar did not allow it."""
        return bool(self._matcher.consume_token(token))


def build_grammar(
    request: GenerationRequest,
    spec: OutputSpec,
    specials: Mapping[str, int],
) -> GrammarSource | None:
    """The grammar ``request`` needs on a model whose output is read as ``spec`` (None: free
    text). ``specials`` maps the model's special tokens' texts to their ids, so a marker that
    is one special token is matched as that token."""

    def lit(text: str) -> str:
        token = specials.get(text)
        return f"<[{token}]>" if token is not None else json.dumps(text)

    grammars: list[dict[str, Any]] = []
    rules: list[str] = []
    constraint = request.constraint
    tools = _offered_tools(request) if spec.tools is not None else None
    param = "response_format"
    constrained = ""
    if constraint is not None:
        constrained = _constraint_rule(constraint, grammars)
    if tools:
        assert spec.tools is not None
        param = "tools"
        choice = request.tool_choice
        # a named function is called once (as vLLM's named tool choice), else as many as allowed
        named = choice is not None and choice.mode == "function"
        parallel = request.parallel_tool_calls is not False and not named
        rules.append(spec.tools.calls_rule(tools, parallel, lit))
        forced = choice is not None and choice.mode != "auto"
        if forced:
            rules.append("answer: calls")
        elif constrained:
            rules.append(f"answer: {constrained} | calls")
        else:
            rules += _auto_rules(spec.tools, parallel, specials)
    elif constrained:
        rules.append(f"answer: {constrained}")
    else:
        return None
    if spec.reasoning is not None and (spec.reasoning_open or request.reasoning is not False):
        fmt = spec.reasoning
        rules.append("WS: /[ \\t\\r\\n]{0,8}/")
        think = _think_rule(fmt.close, lit, specials)
        if spec.reasoning_open:
            rules.insert(0, "start: think WS answer")
        else:
            rules.insert(0, f"start: ({lit(fmt.open)} think WS)? answer")
        rules.append(think)
    else:
        rules.insert(0, "start: answer")
    lark = "%llguidance {}\n" + "\n".join(rules) + "\n"
    if grammars:
        return GrammarSource(json.dumps({"grammars": [{"lark_grammar": lark}, *grammars]}), param)
    return GrammarSource(json.dumps({"grammars": [{"lark_grammar": lark}]}), param)


def _offered_tools(request: GenerationRequest) -> tuple[Tool, ...] | None:
    if not request.wants_tools:
        return None
    choice = request.tool_choice
    if choice is not None and choice.mode == "function":
        return tuple(t for t in request.tools if t.name == choice.name)
    return request.tools


def _constraint_rule(constraint: OutputConstraint, grammars: list[dict[str, Any]]) -> str:
    if constraint.kind == "grammar":
        from llguidance.gbnf_to_lark import any_to_lark

        try:
            lark = any_to_lark(constraint.grammar or "")
        except Exception as exc:
            raise InvalidRequestError(
                f"the grammar could not be read: {exc}", param="response_format"
            ) from exc
        grammars.append({"name": "user_grammar", "lark_grammar": lark})
        return "@user_grammar"
    schema: dict[str, Any] = {"type": "object"}
    if constraint.kind == "json_schema" and constraint.schema:
        schema = closed_schema(constraint.schema)
    return "%json " + json.dumps({**schema, "x-guidance": JSON_STYLE})


def _auto_rules(fmt: ToolFormat, parallel: bool, specials: Mapping[str, int]) -> list[str]:
    """Free text, or calls: from the trigger on, the call is constrained (a lazy trigger when
    it is plain text, so free text can still say anything before it)."""
    if fmt.at_start_only:
        return [fmt.text_rule(), "answer: TEXT | calls"]
    if fmt.trigger in specials:  # free text cannot contain a special token: no ambiguity
        return [fmt.text_rule(), "answer: TEXT | TEXT calls"]
    return [
        fmt.text_rule(),
        f"answer: TEXT | lead body{fmt.more(parallel)}",
        f"lead[lazy]: /(.|\\n)*/ {json.dumps(fmt.trigger)}",
    ]


def _think_rule(close: str, lit: Any, specials: Mapping[str, int]) -> str:
    if close in specials:
        return f"think: /(.|\\n)*/ {lit(close)}"
    return f"think[suffix={json.dumps(close)}]: /(.|\\n)*/"


def _reason(message: str) -> str:
    """llguidance's message without its place in the grammar llmgate wrote and the listing of
    that grammar (the client never saw it): ``failed to compile JSON schema: ...``."""
    first = message.split("\n", 1)[0]
    return re.sub(r"^at \d+\(\d+\): ", "", first)


def compile_grammar(source: GrammarSource, tokenizer: Any, vocab_size: int) -> CompiledGrammar:
    """Check ``source`` against the model's llguidance tokenizer; ``InvalidRequestError``
    (naming the field) for what cannot be enforced."""
    import llguidance

    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        source.grammar, tokenizer
    )
    if failed:
        reasons = "; ".join(_reason(m) for m in messages)
        raise InvalidRequestError(
            f"'{source.param}' cannot be enforced: {reasons}", param=source.param
        )
    matcher = llguidance.LLMatcher(tokenizer, source.grammar, log_level=0)
    if matcher.is_error():
        raise InvalidRequestError(
            f"'{source.param}' cannot be enforced: {matcher.get_error()}", param=source.param
        )
    return CompiledGrammar(matcher, vocab_size)
