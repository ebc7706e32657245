"""Ollama wire requests -> the core's requests (``gateway.ollama_surface``): tables built from
Ollama's documented examples (docs/api.md)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from backends.errors import InvalidRequestError, UnsupportedParameterError
from backends.llama_cpp.settings import LlamaCppSettings
from backends.requests import (
    Message,
    OtherPart,
    OutputConstraint,
    Sampling,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from gateway.ollama_surface import (
    chat_request,
    check_num_ctx,
    embedding_request,
    generate_request,
    model_name,
)
from gateway.ollama_types import OllamaChatRequest, OllamaEmbedRequest, OllamaGenerateRequest
from gateway.routing import ModelRouter
from tests.fakes import FakeBackend

USER = [{"role": "user", "content": "why is the sky blue?"}]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def chat(**fields: Any):
    return chat_request(OllamaChatRequest.model_validate({"model": "m", **fields}), "m")


def generate(**fields: Any):
    return generate_request(OllamaGenerateRequest.model_validate({"model": "m", **fields}), "m")


@pytest.mark.parametrize(
    ("options", "max_tokens", "sampling", "stop"),
    [
        ({}, None, Sampling(), ()),
        (
            {"num_predict": 100, "temperature": 0.2, "top_p": 0.9, "top_k": 20, "min_p": 0.05},
            100,
            Sampling(temperature=0.2, top_p=0.9, top_k=20, min_p=0.05),
            (),
        ),
        ({"num_predict": -1}, None, Sampling(), ()),  # Ollama: no limit
        ({"num_predict": 0}, None, Sampling(), ()),
        ({"seed": 42, "stop": ["\n", "user:"]}, None, Sampling(seed=42), ("\n", "user:")),
        ({"stop": "END"}, None, Sampling(), ("END",)),
        ({"repeat_penalty": 1.2}, None, Sampling(repetition_penalty=1.2), ()),
        ({"repeat_penalty": 1.0}, None, Sampling(), ()),  # 1 is no penalty
        (
            {"presence_penalty": 0.5, "frequency_penalty": 0.25},
            None,
            Sampling(presence_penalty=0.5, frequency_penalty=0.25),
            (),
        ),
        # runner options Ollama clients send and llmgate ignores
        ({"num_thread": 8, "num_gpu": 1, "mirostat": 0, "num_keep": 5}, None, Sampling(), ()),
    ],
)
def test_options_map_to_the_core(options, max_tokens, sampling, stop):
    request = chat(messages=USER, options=options)
    assert (request.max_tokens, request.sampling, request.stop) == (max_tokens, sampling, stop)


@pytest.mark.parametrize(
    ("fmt", "constraint"),
    [
        (None, None),
        ("", None),
        ("json", OutputConstraint("json_object")),
        (
            {"type": "object", "properties": {"age": {"type": "integer"}}},
            OutputConstraint(
                "json_schema", {"type": "object", "properties": {"age": {"type": "integer"}}}
            ),
        ),
    ],
)
def test_format_is_a_json_constraint(fmt, constraint):
    assert chat(messages=USER, format=fmt).constraint == constraint
    assert generate(prompt="hi", format=fmt).constraint == constraint


def test_an_unknown_format_is_a_400():
    with pytest.raises(InvalidRequestError) as caught:
        chat(messages=USER, format="yaml")
    assert caught.value.param == "format"


@pytest.mark.parametrize(
    ("think", "reasoning"), [(None, None), (True, True), (False, False), ("high", True)]
)
def test_think_switches_reasoning(think, reasoning):
    assert chat(messages=USER, think=think).reasoning is reasoning
    assert generate(prompt="hi", think=think).reasoning is reasoning


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather for a location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


def test_tools_and_a_tool_round_trip_with_object_arguments():
    messages = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_current_weather", "arguments": {"location": "Paris"}}}
            ],
        },
        {"role": "tool", "content": "22 degrees", "tool_name": "get_current_weather"},
    ]
    request = chat(messages=messages, tools=[WEATHER])
    assert request.tools == (
        Tool(
            "get_current_weather",
            "Get the current weather for a location",
            WEATHER["function"]["parameters"],
        ),
    )
    call = request.messages[1].tool_calls[0]
    assert call.name == "get_current_weather" and json.loads(call.arguments) == {
        "location": "Paris"
    }
    # the tool result answers that call, by name
    assert request.messages[2].tool_call_id == call.id
    assert request.messages[2].name == "get_current_weather"
    assert request.tool_choice is None


@pytest.mark.parametrize(
    ("fields", "choice"),
    [
        ({"tool_choice": "required"}, ToolChoice("required")),
        ({"options": {"tool_choice": "none"}}, ToolChoice("none")),
        (
            {"tool_choice": {"type": "function", "function": {"name": "get_current_weather"}}},
            ToolChoice("function", "get_current_weather"),
        ),
    ],
)
def test_tool_choice_is_llmgates_extension(fields, choice):
    assert chat(messages=USER, tools=[WEATHER], **fields).tool_choice == choice


def test_a_bad_tool_choice_is_a_400():
    with pytest.raises(InvalidRequestError) as caught:
        chat(messages=USER, tools=[WEATHER], tool_choice="always")
    assert caught.value.param == "tool_choice"


def test_thinking_of_an_assistant_turn_is_replayed():
    messages = [*USER, {"role": "assistant", "content": "blue", "thinking": "hmm"}]
    assert chat(messages=messages).messages[1] == Message(
        "assistant", (TextPart("blue"),), reasoning="hmm"
    )


def test_images_become_image_parts_that_text_only_engines_refuse_by_name():
    request = chat(messages=[{"role": "user", "content": "what is this?", "images": [PNG]}])
    text, image = request.messages[0].content
    assert text == TextPart("what is this?")
    assert isinstance(image, OtherPart) and image.type == "image_url"
    assert image.data["image_url"]["url"] == f"data:image/png;base64,{PNG}"


def test_generate_is_system_then_prompt_through_the_chat_template():
    request = generate(prompt="Why?", system="Be brief.")
    assert request.prompt is None
    assert request.messages == (
        Message("system", (TextPart("Be brief."),)),
        Message("user", (TextPart("Why?"),)),
    )


def test_generate_raw_is_the_prompt_as_written():
    request = generate(prompt="[INST] why? [/INST]", raw=True)
    assert request.is_raw and request.prompt == "[INST] why? [/INST]" and not request.messages


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"template": "{{ .Prompt }}"}, "template"),
        ({"suffix": "return result"}, "suffix"),
        ({"context": [1, 2, 3]}, "context"),
        ({"raw": True, "system": "sys"}, "system"),
        ({"raw": True, "images": [PNG]}, "images"),
    ],
)
def test_generate_refuses_what_llmgate_cannot_do_by_name(fields, param):
    with pytest.raises(UnsupportedParameterError) as caught:
        generate(prompt="hi", **fields)
    assert caught.value.param == param and caught.value.status == 400


def test_generate_accepts_empty_template_suffix_and_context():
    assert generate(prompt="hi", template="", suffix="", context=[]).messages


def test_num_ctx_above_the_window_is_a_400_and_below_is_fine():
    check_num_ctx(2048, 2048, "m")
    check_num_ctx(512, 2048, "m")
    check_num_ctx(8192, None, "m")  # window not known
    with pytest.raises(InvalidRequestError) as caught:
        check_num_ctx(8192, 2048, "m")
    assert caught.value.param == "options.num_ctx" and "2048" in caught.value.message


def test_embed_inputs():
    request = embedding_request(OllamaEmbedRequest(model="e", input=["a", "b"], dimensions=3), "e")
    assert (request.inputs, request.dimensions) == (("a", "b"), 3)
    assert embedding_request(OllamaEmbedRequest(model="e", input="x"), "e").inputs == ("x",)
    assert embedding_request(OllamaEmbedRequest(model="e", input=""), "e").inputs == ()
    with pytest.raises(InvalidRequestError) as caught:
        embedding_request(OllamaEmbedRequest(model="e", input=["a", ""]), "e")
    assert caught.value.param == "input[1]"
    # truncate: Ollama's default (absent or null) cuts an over-long input; false refuses it
    assert embedding_request(OllamaEmbedRequest(model="e", input="x"), "e").truncate is True
    assert embedding_request(OllamaEmbedRequest(model="e", input="x", truncate=None), "e").truncate
    refused = OllamaEmbedRequest(model="e", input="x", truncate=False)
    assert embedding_request(refused, "e").truncate is False


def _router(*names: str) -> ModelRouter:
    entries = [
        (LlamaCppSettings(name=n, backend="llama_cpp", source="x.gguf"), FakeBackend(n))
        for n in names
    ]
    return ModelRouter(entries)


@pytest.mark.parametrize(
    ("sent", "resolved"),
    [
        ("smollm2", "smollm2"),
        ("smollm2:latest", "smollm2"),
        ("qwen:latest", "qwen:latest"),  # llmgate's own name has the tag
        ("llama3:8b", "llama3:8b"),
        ("unknown:latest", "unknown"),  # then a 404 naming it
    ],
)
def test_name_latest_resolves_to_name(sent, resolved):
    assert model_name(_router("smollm2", "qwen:latest", "llama3:8b"), sent) == resolved


def test_a_tool_call_id_sent_by_a_newer_client_is_kept():
    messages = [
        *USER,
        {
            "role": "assistant",
            "tool_calls": [{"id": "abc", "function": {"name": "f", "arguments": {}}}],
        },
        {"role": "tool", "content": "ok", "tool_call_id": "abc"},
    ]
    request = chat(messages=messages)
    assert request.messages[1].tool_calls == (ToolCall("abc", "f", "{}"),)
    assert request.messages[2].tool_call_id == "abc"


def test_a_final_assistant_message_is_continued_as_ollama_does():
    prefill = [*USER, {"role": "assistant", "content": "Because"}]
    assert chat(messages=prefill).continue_final
    assert not chat(messages=USER).continue_final
    calling = {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}
    assert not chat(messages=[*USER, calling]).continue_final  # a call awaiting its result


@pytest.mark.parametrize(("truncate", "cut"), [(None, True), (True, True), (False, False)])
def test_an_over_long_prompt_is_cut_unless_truncate_is_false(truncate, cut):
    fields = {} if truncate is None else {"truncate": truncate}
    assert chat(messages=USER, **fields).truncate_prompt is cut
    assert generate(prompt="hi", **fields).truncate_prompt is cut
