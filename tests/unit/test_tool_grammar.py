"""The grammars llmgate builds for constrained decoding, checked against a real vocabulary
(the tiny byte-level BPE of tests/tiny_hf.py) with llguidance: what they accept, what they
refuse, and what a model that picks tokens at random inside the mask ends up writing."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest

from backends.errors import InvalidRequestError
from backends.events import TextDelta, ToolCallDelta
from backends.local.call_schema import closed_schema
from backends.local.grammar import build_grammar, compile_grammar
from backends.local.output import ChoiceOutput, OutputSpec
from backends.local.reasoning import FORMATS as REASONING
from backends.local.tool_formats import FORMATS as TOOLS
from backends.requests import GenerationRequest, OutputConstraint, Tool, ToolChoice
from tests.tiny_hf import tiny_tokenizer

WEATHER = Tool(
    "get_weather",
    "Weather in a city",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 8},
            "unit": {"enum": ["C", "F"]},
        },
        "required": ["city", "unit"],
    },
)
TIME = Tool(
    "get_time",
    None,
    {"type": "object", "properties": {"utc": {"type": "boolean"}}, "required": ["utc"]},
)
EOS = 2  # <|im_end|>


@pytest.fixture(scope="module")
def vocab():
    from llguidance.hf import from_tokenizer

    tokenizer = tiny_tokenizer()
    return tokenizer, from_tokenizer(tokenizer, eos_token=EOS)


def compiled(vocab, request, spec, specials=None):
    _, lltok = vocab
    source = build_grammar(request, spec, specials or {"<|im_end|>": EOS})
    assert source is not None
    return compile_grammar(source, lltok, lltok.vocab_size)


def accepts(vocab, grammar, text: str) -> bool:
    tokenizer, _ = vocab
    constraint = grammar.constraint()
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        if not constraint.allowed()[token]:
            return False
        constraint.accept(token)
    return bool(constraint.allowed()[EOS])


def random_walk(vocab, grammar, seed: int, limit: int = 400) -> str | None:
    """Pick uniformly among the allowed tokens (a model with no idea) until EOS."""
    tokenizer, _ = vocab
    rng = random.Random(seed)
    constraint = grammar.constraint()
    ids: list[int] = []
    for _ in range(limit):
        allowed = [int(t) for t in constraint.allowed().nonzero()[0]]
        token = EOS if EOS in allowed and rng.random() < 0.5 else rng.choice(allowed)
        constraint.accept(token)
        if token == EOS:
            return tokenizer.decode(ids)
        ids.append(token)
    return None


def request(**fields) -> GenerationRequest:
    return GenerationRequest(model="m", **fields)


HERMES_CALL = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "C"}}\n</tool_call>'
)


def test_required_accepts_a_call_and_refuses_text(vocab):
    g = compiled(
        vocab,
        request(tools=(WEATHER, TIME), tool_choice=ToolChoice("required")),
        OutputSpec(tools=TOOLS["hermes"]),
    )
    assert accepts(vocab, g, HERMES_CALL)
    assert not accepts(vocab, g, "I will not call anything.")
    assert not accepts(vocab, g, HERMES_CALL.replace('"C"', '"K"'))  # not in the enum


def test_a_named_function_refuses_the_others(vocab):
    spec = OutputSpec(tools=TOOLS["hermes"])
    g = compiled(
        vocab, request(tools=(WEATHER, TIME), tool_choice=ToolChoice("function", "get_time")), spec
    )
    assert not accepts(vocab, g, HERMES_CALL)
    assert accepts(
        vocab, g, '<tool_call>\n{"name": "get_time", "arguments": {"utc": true}}\n</tool_call>'
    )


def test_parallel_false_allows_one_call(vocab):
    spec = OutputSpec(tools=TOOLS["hermes"])
    one = request(tools=(WEATHER,), tool_choice=ToolChoice("required"), parallel_tool_calls=False)
    assert not accepts(vocab, compiled(vocab, one, spec), HERMES_CALL + "\n" + HERMES_CALL)
    many = request(tools=(WEATHER,), tool_choice=ToolChoice("required"))
    assert accepts(vocab, compiled(vocab, many, spec), HERMES_CALL + "\n" + HERMES_CALL)


PERSON = Tool(  # what pydantic writes for a model with a nested one: $defs and $refs to them
    "add_person",
    None,
    {
        "$defs": {
            "Address": {
                "type": "object",
                "properties": {"city": {"enum": ["Oslo", "Lima"]}},
                "required": ["city"],
            }
        },
        "type": "object",
        "properties": {
            "home": {"$ref": "#/$defs/Address"},
            "friends": {"type": "array", "items": {"$ref": "#"}, "maxItems": 1},
        },
        "required": ["home"],
    },
)


@pytest.mark.parametrize("fmt", ["hermes", "llama3_json", "mistral"])
@pytest.mark.parametrize("seed", range(3))
def test_a_tool_schema_with_defs_and_refs_is_enforced_as_written(vocab, fmt, seed):
    spec = OutputSpec(tools=TOOLS[fmt])
    g = compiled(vocab, request(tools=(PERSON, WEATHER), tool_choice=ToolChoice("required")), spec)
    text = random_walk(vocab, g, seed, limit=2000)
    assert text is not None, "the walk never ended"
    output = ChoiceOutput(0, (), 10_000, False, spec=spec)
    events = output.token(text) + output.token(None)
    calls: dict[int, dict] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            calls.setdefault(event.call, {"name": "", "arguments": ""})
            calls[event.call]["name"] += event.name or ""
            calls[event.call]["arguments"] += event.arguments
    assert calls, text
    for call in calls.values():
        tool = PERSON if call["name"] == "add_person" else WEATHER
        jsonschema.validate(json.loads(call["arguments"]), tool.parameters)


def test_a_tool_without_parameters_takes_an_empty_object(vocab):
    now = Tool("now", None, None)
    g = compiled(
        vocab,
        request(tools=(now,), tool_choice=ToolChoice("required")),
        OutputSpec(tools=TOOLS["hermes"]),
    )
    assert accepts(vocab, g, '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>')
    assert not accepts(
        vocab, g, '<tool_call>\n{"name": "now", "arguments": {"a": 1}}\n</tool_call>'
    )


def test_auto_lets_text_through_and_constrains_from_the_trigger_on(vocab):
    g = compiled(vocab, request(tools=(WEATHER,)), OutputSpec(tools=TOOLS["hermes"]))
    assert accepts(vocab, g, "Just an answer, no call.")
    assert accepts(vocab, g, "Checking. " + HERMES_CALL)
    assert not accepts(vocab, g, "Checking. <tool_call>\n{not json}\n</tool_call>")


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("llama3_json", '{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "F"}}'),
        (
            "mistral",
            '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "F"}}]',
        ),
    ],
)
def test_each_family_format_is_enforced(vocab, fmt, text):
    g = compiled(
        vocab,
        request(tools=(WEATHER,), tool_choice=ToolChoice("required")),
        OutputSpec(tools=TOOLS[fmt]),
    )
    assert accepts(vocab, g, text)
    assert not accepts(vocab, g, "plain text")


@pytest.mark.parametrize("fmt", ["hermes", "llama3_json", "mistral"])
@pytest.mark.parametrize("seed", range(6))
def test_a_model_choosing_at_random_still_makes_a_valid_call(vocab, fmt, seed):
    """The guarantee behind tool_choice=required: whatever the model prefers, the call it
    writes parses and its arguments validate against the function's schema."""
    spec = OutputSpec(tools=TOOLS[fmt])
    g = compiled(vocab, request(tools=(WEATHER, TIME), tool_choice=ToolChoice("required")), spec)
    text = random_walk(vocab, g, seed)
    assert text is not None
    output = ChoiceOutput(0, (), 10_000, False, spec=spec)
    events = output.token(text) + output.token(None)
    calls: dict[int, list] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            calls.setdefault(e.call, []).append(e)
    assert calls and not any(isinstance(e, TextDelta) and e.text.strip() for e in events), text
    schemas = {WEATHER.name: WEATHER.parameters, TIME.name: TIME.parameters}
    for deltas in calls.values():
        name = deltas[0].name
        jsonschema.validate(json.loads("".join(d.arguments for d in deltas)), schemas[name])


SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "integer"},
        "sure": {"type": "boolean"},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
    },
    "required": ["answer", "sure"],
}


@pytest.mark.parametrize("seed", range(6))
def test_json_schema_output_validates_even_at_random(vocab, seed):
    g = compiled(vocab, request(constraint=OutputConstraint("json_schema", SCHEMA)), OutputSpec())
    text = random_walk(vocab, g, seed)
    assert text is not None
    jsonschema.validate(json.loads(text), SCHEMA)


@pytest.mark.parametrize("seed", range(4))
def test_thinking_first_then_the_schema(vocab, seed):
    spec = OutputSpec(reasoning=REASONING["think"], reasoning_open=True)
    g = compiled(vocab, request(constraint=OutputConstraint("json_schema", SCHEMA)), spec)
    assert accepts(vocab, g, 'I think 42.</think>\n\n{"answer": 42, "sure": true}')
    assert not accepts(vocab, g, "I think 42.</think>\n\nforty-two")
    text = random_walk(vocab, g, seed, limit=2000)
    if text is not None and "</think>" in text:
        jsonschema.validate(json.loads(text.split("</think>", 1)[1]), SCHEMA)


def test_json_object_and_a_gbnf_grammar(vocab):
    g = compiled(vocab, request(constraint=OutputConstraint("json_object")), OutputSpec())
    assert accepts(vocab, g, '{"a": [1, 2]}') and not accepts(vocab, g, "[1]")
    gbnf = OutputConstraint("grammar", grammar='root ::= "yes" | "no"')
    g = compiled(vocab, request(constraint=gbnf), OutputSpec())
    assert accepts(vocab, g, "no") and not accepts(vocab, g, "maybe")


@pytest.mark.parametrize(
    ("schema", "feature"),
    [
        ({"type": "object", "propertyNames": {"pattern": "^a"}}, "propertyNames"),
        ({"type": "string", "format": "ipv9"}, "ipv9"),
        ({"$ref": "#/$defs/missing"}, "missing"),
    ],
)
def test_a_schema_feature_that_cannot_be_enforced_is_a_400_naming_it(vocab, schema, feature):
    with pytest.raises(InvalidRequestError) as caught:
        compiled(vocab, request(constraint=OutputConstraint("json_schema", schema)), OutputSpec())
    assert caught.value.param == "response_format" and feature in caught.value.message
    tool = Tool("f", None, schema)
    with pytest.raises(InvalidRequestError) as caught:
        compiled(
            vocab,
            request(tools=(tool,), tool_choice=ToolChoice("required")),
            OutputSpec(tools=TOOLS["hermes"]),
        )
    assert caught.value.param == "tools"


def test_a_bad_gbnf_grammar_is_a_400():
    with pytest.raises(InvalidRequestError) as caught:
        build_grammar(
            request(constraint=OutputConstraint("grammar", grammar="root ::= (")), OutputSpec(), {}
        )
    assert caught.value.param == "response_format"


def test_no_constraint_no_grammar():
    assert build_grammar(request(), OutputSpec(tools=TOOLS["hermes"]), {}) is None
    assert (
        build_grammar(
            request(tools=(WEATHER,), tool_choice=ToolChoice("none")),
            OutputSpec(tools=TOOLS["hermes"]),
            {},
        )
        is None
    )


def test_objects_are_closed_unless_the_schema_opens_them():
    schema = {
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {}}}},
        "$defs": {"x": {"properties": {"c": {}}, "additionalProperties": True}},
        "anyOf": [{"properties": {"d": {}}}],
    }
    closed = closed_schema(schema)
    assert closed["additionalProperties"] is False
    assert closed["properties"]["a"]["additionalProperties"] is False
    assert closed["$defs"]["x"]["additionalProperties"] is True
    assert closed["anyOf"][0]["additionalProperties"] is False
    assert "additionalProperties" not in schema  # the request's schema is left alone
