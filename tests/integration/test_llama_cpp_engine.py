"""The llama.cpp engine's request fields, over HTTP, on real weights."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import NO_EOS
from tests.tiny_gguf import TINY_VOCAB_SIZE

pytestmark = pytest.mark.integration

GO = [{"role": "user", "content": "go"}]


def chat(http, **fields):
    return http.post("/v1/chat/completions", json={"messages": GO, **fields})


def test_temperature_zero_is_deterministic(http):
    a = chat(http, model="smollm2", temperature=0, max_tokens=24).json()
    b = chat(http, model="smollm2", temperature=0, max_tokens=24).json()
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]


def test_same_seed_same_text_different_seed_differs(http):
    body = {
        "model": "smollm2",
        "temperature": 1.0,
        "max_tokens": 24,
        "messages": [{"role": "user", "content": "Tell me a story."}],
    }
    texts = [
        http.post("/v1/chat/completions", json={**body, "seed": s}).json()["choices"][0]["message"][
            "content"
        ]
        for s in (7, 7, 8)
    ]
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]


def test_stop_string_is_honoured_and_not_leaked(http):
    reply = http.post(
        "/v1/chat/completions",
        json={
            "model": "smollm2",
            "temperature": 0,
            "max_tokens": 80,
            "stop": ["5"],
            "messages": [{"role": "user", "content": "Count from 1 to 10, one number per line."}],
        },
    ).json()
    content = reply["choices"][0]["message"]["content"]
    assert "4" in content and "5" not in content
    assert reply["choices"][0]["finish_reason"] == "stop"


def test_length_finish_and_exact_usage(http):
    reply = chat(http, model="tiny", max_tokens=17, logit_bias=NO_EOS).json()
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 17
    assert reply["usage"]["total_tokens"] == reply["usage"]["prompt_tokens"] + 17


def test_logit_bias_forcing_eos_ends_at_once(http):
    reply = chat(http, model="tiny", max_tokens=17, logit_bias={"2": 100}).json()
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"]["completion_tokens"] == 0


def test_logit_bias_outside_vocab_is_400(http):
    reply = chat(http, model="tiny", logit_bias={str(TINY_VOCAB_SIZE + 5): 1})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "logit_bias"


def test_logprobs_and_top_logprobs(http):
    reply = chat(
        http, model="smollm2", max_tokens=5, temperature=0, logprobs=True, top_logprobs=3
    ).json()
    content = reply["choices"][0]["logprobs"]["content"]
    assert len(content) == reply["usage"]["completion_tokens"] == 5
    for entry in content:
        assert entry["logprob"] <= 0
        assert len(entry["top_logprobs"]) == 3
        # greedy: the chosen token is the most likely one
        assert entry["token"] == entry["top_logprobs"][0]["token"]
    assert "".join(e["token"] for e in content) == reply["choices"][0]["message"]["content"]


def test_json_object_response_format_gives_json(http):
    reply = http.post(
        "/v1/chat/completions",
        json={
            "model": "smollm2",
            "temperature": 0,
            "max_tokens": 64,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "p",
                    "schema": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                        "required": ["name", "age"],
                    },
                },
            },
            "messages": [{"role": "user", "content": "Describe a person as JSON."}],
        },
    ).json()
    data = json.loads(reply["choices"][0]["message"]["content"])
    assert isinstance(data["name"], str) and isinstance(data["age"], int)


def test_penalties_and_sampling_knobs_are_accepted(http):
    reply = chat(
        http,
        model="tiny",
        max_tokens=8,
        logit_bias=NO_EOS,
        temperature=0.7,
        top_p=0.9,
        top_k=20,
        min_p=0.1,
        presence_penalty=1.0,
        frequency_penalty=0.5,
        user="u1",
    )
    assert reply.status_code == 200
    assert reply.json()["usage"]["completion_tokens"] == 8


def test_context_length_exceeded_names_both_numbers(http):
    reply = chat(http, model="tiny", max_tokens=4000)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "2048" in error["message"] and "4000" in error["message"]
    long_prompt = [{"role": "user", "content": "word " * 3000}]
    reply = http.post("/v1/chat/completions", json={"model": "tiny", "messages": long_prompt})
    assert reply.json()["error"]["code"] == "context_length_exceeded"


def test_a_schema_feature_that_cannot_be_enforced_is_refused_by_name(http):
    parameters = {"type": "object", "propertyNames": {"pattern": "^a"}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": parameters}}]
    reply = chat(http, model="tiny", tools=tools, tool_choice="required")
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error == {
        "message": error["message"],
        "type": "invalid_request_error",
        "param": "tools",
        "code": "invalid_request",
    }
    assert "propertyNames" in error["message"]


def test_lazy_model_loads_on_first_request(http, server):
    assert http.get("/v1/models/tiny-lazy").json()["loaded"] is False
    assert chat(http, model="tiny-lazy", max_tokens=2).status_code == 200
    assert http.get("/v1/models/tiny-lazy").json()["loaded"] is True


def test_unicode_text_survives_streaming(http):
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "smollm2",
            "temperature": 0,
            "max_tokens": 40,
            "stream": True,
            "messages": [{"role": "user", "content": "Write the word café and an emoji 🎉."}],
        },
    ) as reply:
        frames = [line[6:] for line in reply.iter_lines() if line.startswith("data: ")]
    text = "".join(
        json.loads(f)["choices"][0]["delta"].get("content") or ""
        for f in frames[:-1]
        if json.loads(f)["choices"]
    )
    assert "\ufffd" not in text
