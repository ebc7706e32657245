"""The tiny family models: both builders load, the family's marker tokens are one token each in
both engines with the real special flags, and the real templates render tools and tool-call
histories the same way through transformers and llama-cpp-python."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.model_families import FAMILIES, TOOL_FAMILIES, Family
from tests.tiny_gguf import gguf_token_id, write_tiny_gguf
from tests.tiny_hf import hf_token_id, write_tiny_hf_model
from tests.tool_call_samples import SAMPLES

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
CALL_ID = "a1B2c3D4e"  # Mistral's templates insist on 9 alphanumerics


def tool_call(city: str, call_id: str = CALL_ID) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": city}},
    }


def tool_history(*calls: dict[str, Any]) -> list[dict[str, Any]]:
    """A tool round trip: the assistant's calls (arguments as dicts) and one result per call."""
    results = [{"role": "tool", "tool_call_id": c["id"], "content": '{"temp": 21}'} for c in calls]
    return [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Zürich?"},
        {"role": "assistant", "content": "", "tool_calls": list(calls)},
        *results,
    ]


PLAIN = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("families")
    return {
        name: (
            write_tiny_hf_model(root / name, family=name),
            write_tiny_gguf(root / f"{name}.gguf", family=name),
        )
        for name in FAMILIES
    }


@pytest.fixture(scope="module")
def tokenizers(models: dict[str, tuple[Path, Path]]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    return {name: AutoTokenizer.from_pretrained(hf) for name, (hf, _) in models.items()}


@pytest.fixture(scope="module")
def llamas(models: dict[str, tuple[Path, Path]]) -> Iterator[dict[str, Any]]:
    import llama_cpp

    loaded = {
        name: llama_cpp.Llama(str(gguf), n_ctx=1024, n_threads=1, verbose=False)
        for name, (_, gguf) in models.items()
    }
    yield loaded
    for llm in loaded.values():
        llm.close()


def render_hf(tokenizer: Any, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    return tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, **kwargs
    )


def render_llama(llm: Any, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    """As the llama.cpp backend renders: the GGUF's template and its bos/eos token texts."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def text(token_id: int) -> str:
        return "" if token_id < 0 else str(llm._model.token_get_text(token_id))

    formatter = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=text(llm.token_eos()),
        bos_token=text(llm.token_bos()),
    )
    return formatter(messages=messages, **kwargs).prompt


def end_of_generation(llm: Any, family: Family) -> set[str]:
    """The family tokens llama.cpp ends generation on."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    return {t for t in family.texts if llama_cpp.llama_vocab_is_eog(vocab, family.token_id(t))}


def assert_markers_single(family: Family, text: str, ids: list[int]) -> None:
    """Every marker in ``text`` came out as its one token, as often as it occurs."""
    for marker in family.markers:
        if marker in text:
            expected = text.count(marker)
            assert ids.count(family.token_id(marker)) == expected, marker


def conversation(name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if name in TOOL_FAMILIES:
        return tool_history(tool_call("Zürich")), {"tools": TOOLS}
    return PLAIN, {}


@pytest.mark.parametrize("name", FAMILIES)
def test_gguf_loads_and_reads_the_rendered_prompt_markers_as_single_tokens(name, llamas):
    family, llm = FAMILIES[name], llamas[name]
    messages, kwargs = conversation(name)
    prompt = render_llama(llm, messages, **kwargs)
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    assert_markers_single(family, prompt, ids)
    assert llm.token_eos() == family.token_id(family.eos)
    assert set(family.eog) <= end_of_generation(llm, family)
    if name != "chatml":  # the default GGUF keeps its own (equivalent) ChatML text
        assert llm.metadata["tokenizer.chat_template"] == family.chat_template


@pytest.mark.parametrize("name", FAMILIES)
def test_hf_model_loads_generates_and_reads_the_markers_as_single_tokens(name, models, tokenizers):
    from transformers import AutoModelForCausalLM

    family, tokenizer = FAMILIES[name], tokenizers[name]
    messages, kwargs = conversation(name)
    prompt = render_hf(tokenizer, messages, **kwargs)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert_markers_single(family, prompt, ids)

    model = AutoModelForCausalLM.from_pretrained(models[name][0])
    out = model.generate(
        **tokenizer(prompt, return_tensors="pt"), max_new_tokens=2, do_sample=False
    )
    assert out.shape[1] == len(ids) + 2 + int(family.add_bos)
    eog = model.generation_config.eos_token_id
    assert (eog if isinstance(eog, list) else [eog]) == [family.token_id(t) for t in family.eog]


@pytest.mark.parametrize("name", FAMILIES)
def test_special_flags_match_the_real_tokenizer_in_both_engines(name, tokenizers, llamas):
    """Control tokens vanish from plain decoding; added plain tokens (Qwen's <tool_call>,
    <think>) stay, as with the real models."""
    family, tokenizer, llm = FAMILIES[name], tokenizers[name], llamas[name]
    for token in family.tokens:
        token_id = family.token_id(token.text)
        kept = token.text if not token.special else ""
        assert tokenizer.decode([token_id], skip_special_tokens=True) == kept
        assert llm.detokenize([token_id]).decode() == kept
        assert llm.detokenize([token_id], special=True).decode() == token.text


@pytest.mark.parametrize("name", FAMILIES)
def test_token_id_helpers_agree_with_both_engines(name, tokenizers, llamas):
    family, tokenizer, llm = FAMILIES[name], tokenizers[name], llamas[name]
    for text in family.texts:
        assert hf_token_id(text, family=name) == tokenizer.convert_tokens_to_ids(text)
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        assert ids == [gguf_token_id(text, family=name)] == [hf_token_id(text, family=name)]


@pytest.mark.parametrize("name", [n for n, f in FAMILIES.items() if f.add_bos])
def test_bos_is_added_where_the_real_tokenizer_adds_it(name, tokenizers):
    family, tokenizer = FAMILIES[name], tokenizers[name]
    assert tokenizer("hi")["input_ids"][0] == family.token_id(family.bos)
    assert tokenizer("hi", add_special_tokens=False)["input_ids"][0] != family.token_id(family.bos)


@pytest.mark.parametrize("name", TOOL_FAMILIES)
def test_templates_render_tools_and_a_tool_call_history_alike_in_both_renderers(
    name, tokenizers, llamas
):
    messages = tool_history(tool_call("Zürich"))
    hf = render_hf(tokenizers[name], messages, tools=TOOLS)
    llama = render_llama(llamas[name], messages, tools=TOOLS)
    assert hf == llama
    assert "The weather in a city" in hf  # the tool is described
    call = {
        "qwen2.5": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n',
        "qwen3": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n',
        "llama3.1": '{"name": "get_weather", "parameters": {"city": "Zürich"}}<|eot_id|>',
        "mistral": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Zürich"}, '
        f'"id": "{CALL_ID}"}}]',
    }[name]
    assert call in hf
    assert '{"temp": 21}' in hf or json.dumps('{"temp": 21}') in hf


@pytest.mark.parametrize("name", ["qwen2.5", "qwen3", "mistral"])
def test_parallel_calls_render_in_both_renderers(name, tokenizers, llamas):
    messages = tool_history(tool_call("Zürich"), tool_call("Paris", "b2C3d4E5f"))
    hf = render_hf(tokenizers[name], messages, tools=TOOLS)
    assert hf == render_llama(llamas[name], messages, tools=TOOLS)
    assert '"Paris"' in hf and '"Zürich"' in hf


def test_llama31_template_refuses_parallel_calls_in_both_renderers(tokenizers, llamas):
    messages = tool_history(tool_call("Zürich"), tool_call("Paris", "b2C3d4E5f"))
    with pytest.raises(Exception, match="only supports single tool-calls"):
        render_hf(tokenizers["llama3.1"], messages, tools=TOOLS)
    with pytest.raises(ValueError, match="only supports single tool-calls"):
        render_llama(llamas["llama3.1"], messages, tools=TOOLS)


def test_mistral_template_refuses_call_ids_that_are_not_nine_characters(tokenizers, llamas):
    messages = tool_history(tool_call("Zürich", "call_1"))
    with pytest.raises(Exception, match="length 9"):
        render_hf(tokenizers["mistral"], messages, tools=TOOLS)
    with pytest.raises(ValueError, match="length 9"):
        render_llama(llamas["mistral"], messages, tools=TOOLS)


def test_transformers_drops_none_valued_keys_and_llama_cpp_python_does_not(tokenizers, llamas):
    """A trap for backends: llama3.1's template tests ``'tool_calls' in message``, so a plain
    assistant turn with ``"tool_calls": None`` renders with transformers (which drops keys whose
    value is None) and raises with llama-cpp-python (which passes them on)."""
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello", "tool_calls": None},
        {"role": "user", "content": "Again"},
    ]
    assert render_hf(tokenizers["llama3.1"], messages).endswith(
        "Again<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    with pytest.raises(TypeError):
        render_llama(llamas["llama3.1"], messages)


@pytest.mark.parametrize("arguments", ['{"city": "Zürich"}', {"city": "Zürich"}])
def test_qwen3_renders_arguments_given_as_a_string_or_a_dict_alike(arguments, tokenizers):
    call = {**tool_call("x"), "function": {"name": "get_weather", "arguments": arguments}}
    hf = render_hf(tokenizers["qwen3"], tool_history(call), tools=TOOLS)
    assert '"arguments": {"city": "Zürich"}}' in hf


def test_qwen3_thinking_switch_and_past_reasoning_render_in_both_renderers(tokenizers, llamas):
    messages = [
        {"role": "user", "content": "Weather in Zürich?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "The user wants the weather.",
            "tool_calls": [tool_call("Zürich")],
        },
        {"role": "tool", "tool_call_id": CALL_ID, "content": '{"temp": 21}'},
    ]
    for kwargs in ({}, {"enable_thinking": False}):
        hf = render_hf(tokenizers["qwen3"], messages, tools=TOOLS, **kwargs)
        assert hf == render_llama(llamas["qwen3"], messages, tools=TOOLS, **kwargs)
        assert "<think>\nThe user wants the weather.\n</think>\n\n<tool_call>" in hf
    assert hf.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_deepseek_r1_generation_prompt_opens_the_thinking_in_both_renderers(tokenizers, llamas):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>\nGreet back.\n</think>\n\nHello!"},
        {"role": "user", "content": "How are you?"},
    ]
    hf = render_hf(tokenizers["deepseek-r1"], messages)
    assert hf == render_llama(llamas["deepseek-r1"], messages)
    assert hf.endswith("<｜User｜>How are you?<｜Assistant｜><think>\n")
    assert "Greet back." not in hf  # past reasoning is dropped
    assert hf.startswith("<｜begin▁of▁sentence｜><｜User｜>Hi")


def test_samples_have_unique_names_and_known_families():
    assert len({s.name for s in SAMPLES}) == len(SAMPLES)
    for sample in SAMPLES:
        assert sample.family in FAMILIES, sample.name
        assert sample.format in ("hermes", "llama3_json", "mistral", "think"), sample.name
        if sample.reasoning is not None or sample.format == "think":
            assert FAMILIES[sample.family].reasoning_format == "think", sample.name


def test_malformed_samples_expect_the_raw_text_back_and_no_call():
    malformed = [s for s in SAMPLES if s.malformed]
    assert malformed
    for sample in malformed:
        assert sample.content == sample.raw and not sample.calls, sample.name


@pytest.mark.parametrize("fmt", ["hermes", "llama3_json", "mistral"])
def test_each_tool_format_has_the_cases_parsers_need(fmt):
    kinds = {s.kind for s in SAMPLES if s.format == fmt}
    needed = {"single", "parallel", "text_before", "no_call", "truncated", "invalid_json"}
    assert needed | {"text_after"} <= kinds
    assert kinds & {"nested_json", "quotes_braces", "unicode"}


def test_think_samples_cover_the_shapes_of_thinking():
    kinds = {s.kind for s in SAMPLES if s.format == "think"}
    assert {
        "reasoning_then_answer",
        "reasoning_only",
        "starts_inside_thinking",
        "empty_thinking",
    } <= kinds
    assert all(
        "<think>" not in s.raw for s in SAMPLES if s.format == "think" and s.opened_by_prompt
    )


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_sample_markers_are_single_tokens_of_their_family(sample, tokenizers):
    family = FAMILIES[sample.family]
    ids = tokenizers[sample.family](sample.raw, add_special_tokens=False)["input_ids"]
    assert_markers_single(family, sample.raw, ids)
    for name, arguments in sample.calls:
        assert name and isinstance(arguments, dict)
