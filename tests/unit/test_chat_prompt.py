"""The chat prompt of an in-process model (backends/local/chat.py) with the families' real
templates, rendered by jinja2 as llama-cpp-python renders them: what the probe learns, how tools
and past calls reach the template, the prompted fallback, and the 400s."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from backends.errors import InvalidRequestError, UnsupportedParameterError
from backends.llama_cpp.settings import LlamaCppSettings
from backends.local.chat import probe_features, render_prompt
from backends.requests import GenerationRequest, Message, TextPart, Tool, ToolCall, ToolChoice
from tests.model_families import FAMILIES


class TemplateEngine:
    """A ``ChatEngine`` over a family's template; its "tokens" are the prompt's characters."""

    def __init__(self, family: str) -> None:
        spec = FAMILIES[family]
        self.chat_template = spec.chat_template
        self.rendered = ""
        self._formatter = Jinja2ChatFormatter(
            spec.chat_template, eos_token=spec.eos, bos_token=spec.bos or ""
        )

    def render_chat(self, messages, tools, **options: Any) -> tuple[str, bool]:
        self.rendered = self._formatter(messages=messages, tools=tools, **options).prompt
        return self.rendered, False

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        return [ord(c) for c in text]


def settings(**keys: Any) -> LlamaCppSettings:
    return LlamaCppSettings(name="m", backend="llama_cpp", source="x.gguf", **keys)


WEATHER = Tool("get_weather", "Weather", {"type": "object", "properties": {"city": {}}})


def user(text: str) -> Message:
    return Message("user", (TextPart(text),))


HISTORY = (
    user("Weather in Paris?"),
    Message(
        "assistant", (), tool_calls=(ToolCall("call_xyz", "get_weather", '{"city": "Paris"}'),)
    ),
    Message("tool", (TextPart('{"c": 21}'),), tool_call_id="call_xyz"),
)


@pytest.mark.parametrize(
    ("family", "tools", "parser", "reasoning"),
    [
        ("qwen2.5", "native", "hermes", None),
        ("qwen3", "native", "hermes", "think"),
        ("llama3.1", "native", "llama3_json", None),
        ("mistral", "native", "mistral", None),
        ("chatml", "prompted", "hermes", None),
        ("deepseek-r1", "prompted", "hermes", "think"),
    ],
)
def test_the_probe_reads_the_template(family, tools, parser, reasoning):
    features = probe_features(TemplateEngine(family), settings())
    assert features.tools == tools
    assert features.tool_format is not None and features.tool_format.name == parser
    assert (features.reasoning.name if features.reasoning else None) == reasoning


def test_config_overrides_the_probe():
    engine = TemplateEngine("qwen2.5")
    assert probe_features(engine, settings(tool_parser="none")).tools is None
    assert probe_features(engine, settings(reasoning_parser="think")).reasoning is not None
    forced = probe_features(engine, settings(tool_parser="mistral"))
    assert forced.tool_format is not None and forced.tool_format.name == "mistral"


def test_native_tools_and_history_reach_the_template():
    engine = TemplateEngine("qwen2.5")
    features = probe_features(engine, settings())
    request = GenerationRequest(model="m", messages=HISTORY, tools=(WEATHER,))
    prompt = render_prompt(request, features, engine)
    assert '"name": "get_weather"' in engine.rendered  # the tool definition
    assert '{"city": "Paris"}' in engine.rendered  # the past call's arguments, once encoded
    assert "<tool_response>" in engine.rendered and prompt.spec.tools is not None


def test_mistral_gets_nine_character_ids_for_a_call_and_its_result():
    engine = TemplateEngine("mistral")
    features = probe_features(engine, settings())
    render_prompt(
        GenerationRequest(model="m", messages=HISTORY, tools=(WEATHER,)), features, engine
    )
    assert "call_xyz" not in engine.rendered
    ids = {part.split('"')[0] for part in engine.rendered.split('call_id": "')[1:]}
    ids |= {part.split('"')[0] for part in engine.rendered.split('"id": "')[1:]}
    assert ids and all(len(i) == 9 and i.isalnum() for i in ids)
    assert len(ids) == 1  # the call and its result still match


def test_the_prompted_fallback_describes_tools_and_writes_past_calls_as_text():
    engine = TemplateEngine("chatml")
    features = probe_features(engine, settings())
    system = Message("system", (TextPart("Be brief."),))
    request = GenerationRequest(model="m", messages=(system, *HISTORY), tools=(WEATHER,))
    render_prompt(request, features, engine)
    rendered = engine.rendered
    assert rendered.count("<|im_start|>system") == 1  # the instructions extend the system turn
    assert "Be brief.\n\n# Tools" in rendered and '"name": "get_weather"' in rendered
    call = json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})
    assert f"<tool_call>\n{call}\n</tool_call>" in rendered
    assert '<|im_start|>user\n<tool_response>\n{"c": 21}\n</tool_response>' in rendered
    # with tool_choice none, the history stays text and no instructions are added
    engine2 = TemplateEngine("chatml")
    none = GenerationRequest(
        model="m", messages=HISTORY, tools=(WEATHER,), tool_choice=ToolChoice("none")
    )
    prompt = render_prompt(none, features, engine2)
    assert "# Tools" not in engine2.rendered and "<tool_call>" in engine2.rendered
    assert prompt.spec.tools is None


def test_reasoning_switch_and_a_prompt_that_opens_the_thinking():
    engine = TemplateEngine("qwen3")
    features = probe_features(engine, settings())
    off = render_prompt(
        GenerationRequest(model="m", messages=(user("hi"),), reasoning=False), features, engine
    )
    assert engine.rendered.rstrip().endswith("</think>") and not off.spec.reasoning_open
    engine = TemplateEngine("deepseek-r1")
    features = probe_features(engine, settings())
    on = render_prompt(GenerationRequest(model="m", messages=(user("hi"),)), features, engine)
    assert on.spec.reasoning_open


@pytest.mark.parametrize(
    ("request_", "error", "param"),
    [
        (
            GenerationRequest(model="m", messages=(user("x"),), tool_choice=ToolChoice("required")),
            InvalidRequestError,
            "tool_choice",
        ),
        (
            GenerationRequest(
                model="m",
                messages=(user("x"),),
                tools=(WEATHER,),
                tool_choice=ToolChoice("function", "nope"),
            ),
            InvalidRequestError,
            "tool_choice",
        ),
        (
            GenerationRequest(model="m", messages=(user("x"),), tools=(WEATHER, WEATHER)),
            InvalidRequestError,
            "tools",
        ),
    ],
)
def test_tool_mistakes_are_400s_naming_the_field(request_, error, param):
    engine = TemplateEngine("qwen2.5")
    with pytest.raises(error) as caught:
        render_prompt(request_, probe_features(engine, settings()), engine)
    assert caught.value.param == param


def test_tools_on_a_model_with_tool_calling_off():
    engine = TemplateEngine("qwen2.5")
    features = probe_features(engine, settings(tool_parser="none"))
    with pytest.raises(UnsupportedParameterError):
        render_prompt(
            GenerationRequest(model="m", messages=(user("x"),), tools=(WEATHER,)), features, engine
        )


def test_a_template_that_rejects_the_messages_is_a_400():
    engine = TemplateEngine("llama3.1")  # refuses two calls in one assistant turn
    features = probe_features(engine, settings())
    two = Message("assistant", (), tool_calls=(ToolCall("a", "f", "{}"), ToolCall("b", "f", "{}")))
    with pytest.raises(InvalidRequestError) as caught:
        render_prompt(GenerationRequest(model="m", messages=(user("x"), two)), features, engine)
    assert caught.value.param == "messages"


@pytest.mark.parametrize("family", ["qwen2.5", "qwen3", "llama3.1", "mistral", "chatml"])
def test_a_continued_final_message_ends_the_prompt(family):
    """Prefill: the prompt ends with the final assistant message's text, exactly as sent
    (trailing space too), with no end of turn and no new generation prompt after it."""
    engine = TemplateEngine(family)
    messages = (user("Capital of France?"), Message("assistant", (TextPart("It is "),)))
    request = GenerationRequest(model="m", messages=messages, continue_final=True)
    prompt = render_prompt(request, probe_features(engine, settings()), engine)
    text = "".join(map(chr, prompt.tokens))
    assert text.endswith("It is "), text[-80:]
    assert "LLMGATE" not in text and "Capital of France?" in text
    fresh = render_prompt(
        replace(request, continue_final=False), probe_features(engine, settings()), engine
    )
    assert not "".join(map(chr, fresh.tokens)).endswith("It is ")


def test_continuing_needs_a_final_assistant_message_with_text_only():
    engine = TemplateEngine("qwen2.5")
    features = probe_features(engine, settings())
    with pytest.raises(InvalidRequestError) as info:
        render_prompt(
            GenerationRequest(model="m", messages=(user("hi"),), continue_final=True),
            features,
            engine,
        )
    assert info.value.param == "messages"
    calling = Message("assistant", (), tool_calls=(ToolCall("c1", "f", "{}"),))
    with pytest.raises(InvalidRequestError) as info:
        render_prompt(
            GenerationRequest(model="m", messages=(user("hi"), calling), continue_final=True),
            features,
            engine,
        )
    assert info.value.param == "messages[1]"


def test_a_template_that_drops_the_final_message_cannot_continue_it():
    engine = TemplateEngine("chatml")
    engine._formatter = Jinja2ChatFormatter(
        "{% for m in messages %}{% if m.role == 'user' %}U: {{ m.content }}\n{% endif %}"
        "{% endfor %}A:",
        eos_token="",
        bos_token="",
    )
    request = GenerationRequest(
        model="m",
        messages=(user("hi"), Message("assistant", (TextPart("Hel"),))),
        continue_final=True,
    )
    with pytest.raises(InvalidRequestError, match="cannot be continued"):
        render_prompt(request, probe_features(engine, settings()), engine)
