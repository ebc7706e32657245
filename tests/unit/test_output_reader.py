"""How an in-process choice's text becomes events: reasoning split, tool calls, stop strings,
finish reasons — fed in every chunking, so a marker split across tokens is still found."""

from __future__ import annotations

import json

import pytest

from backends.events import Finished, ReasoningDelta, TextDelta, TokenLogprob, ToolCallDelta
from backends.local.output import ChoiceOutput, OutputSpec
from backends.local.reasoning import FORMATS as REASONING
from backends.local.tool_formats import FORMATS as TOOLS

THINK = REASONING["think"]


def run(text: str, spec: OutputSpec, chunk: int = 1, stops=(), budget=10_000, eos=True):
    """Feed ``text`` in pieces of ``chunk`` characters; fold the events."""
    output = ChoiceOutput(0, tuple(stops), budget, False, spec=spec)
    events = []
    for start in range(0, len(text), chunk):
        events += output.token(text[start : start + chunk])
        if output.reason is not None:
            break
    if output.reason is None and eos:
        events += output.token(None)
    content = "".join(e.text for e in events if isinstance(e, TextDelta))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    calls: dict[int, dict] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            call = calls.setdefault(e.call, {"id": None, "name": None, "arguments": ""})
            if e.id is not None:
                assert call["id"] is None, "only a call's first delta carries its id"
                call["id"], call["name"] = e.id, e.name
            call["arguments"] += e.arguments
    finished = [e for e in events if isinstance(e, Finished)]
    return content, reasoning, list(calls.values()), finished[-1].reason if finished else None


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_thinking_then_answer(chunk):
    spec = OutputSpec(reasoning=THINK)
    text = "<think>\nLet me see.\n</think>\n\nParis."
    assert run(text, spec, chunk)[:2] == ("Paris.", "\nLet me see.\n")


@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_a_prompt_that_opened_the_thinking(chunk):
    spec = OutputSpec(reasoning=THINK, reasoning_open=True)
    assert run("hmm, 2+2</think>4", spec, chunk)[:2] == ("4", "hmm, 2+2")


def test_thinking_cut_short_stays_reasoning_and_no_answer_is_invented():
    spec = OutputSpec(reasoning=THINK, reasoning_open=True)
    content, reasoning, _, reason = run("still thinking <th", spec, budget=5, chunk=4)
    assert (content, reason) == ("", "length")
    assert reasoning.startswith("still thinking")


def test_no_thinking_at_all_is_all_answer_and_a_lookalike_is_not_eaten():
    spec = OutputSpec(reasoning=THINK)
    assert run("<thin ice>", spec, 1)[:2] == ("<thin ice>", "")
    assert run("  Plain.", spec, 1)[:2] == ("  Plain.", "")


def test_empty_thinking_block_of_a_non_thinking_turn():
    spec = OutputSpec(reasoning=THINK)
    assert run("<think>\n\n</think>\n\nHi", spec, 3)[:2] == ("Hi", "\n\n")


HERMES = OutputSpec(tools=TOOLS["hermes"])
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_hermes_call_is_two_deltas_and_finish_reason_tool_calls(chunk):
    content, _, calls, reason = run(CALL, HERMES, chunk)
    assert content == ""
    assert reason == "tool_calls"
    assert [c["name"] for c in calls] == ["get_weather"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert calls[0]["id"].startswith("call_")


def test_text_before_a_call_streams_as_content_and_parallel_calls_get_their_own_index():
    text = "Let me check.\n" + CALL + "\n" + CALL.replace("Paris", "Oslo")
    content, _, calls, reason = run(text, HERMES, 3)
    assert content == "Let me check.\n"
    assert [json.loads(c["arguments"])["city"] for c in calls] == ["Paris", "Oslo"]
    assert len({c["id"] for c in calls}) == 2 and reason == "tool_calls"


@pytest.mark.parametrize("chunk", [1, 7])
def test_a_call_cut_by_max_tokens_is_dropped_never_sent_as_markup(chunk):
    text = "Checking.\n" + CALL[:40]
    budget = -(-len(text) // chunk)
    content, _, calls, reason = run(text, HERMES, chunk, budget=budget)
    assert (content, calls, reason) == ("Checking.\n", [], "length")


@pytest.mark.parametrize("text", ["<", "<tool", "<tool_call", "Checking <tool_"])
def test_the_start_of_a_trigger_cut_by_max_tokens_is_not_content(text):
    content, _, calls, reason = run(text, HERMES, 1, budget=len(text))
    assert (content, calls, reason) == (text.partition("<")[0], [], "length")


@pytest.mark.parametrize("chunk", [1, 5])
def test_a_call_cut_by_a_stop_string_is_dropped_never_sent_as_markup(chunk):
    content, _, calls, reason = run('<tool_call>\n{"name": 1}', HERMES, chunk, stops=["{"])
    assert (content, calls, reason) == ("", [], "stop")
    # a stop string after a whole call: the call stands
    content, _, calls, reason = run(CALL + "\nDone. END", HERMES, chunk, stops=["END"])
    assert [c["name"] for c in calls] == ["get_weather"] and reason == "tool_calls"


@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_a_closing_tag_inside_an_argument_string_does_not_end_the_call(chunk):
    snippet = "<b>x</tool_call></b>"
    text = f'<tool_call>\n{{"name": "render", "arguments": {{"html": "{snippet}"}}}}\n</tool_call>'
    content, _, calls, reason = run(text, HERMES, chunk)
    assert (content, reason) == ("", "tool_calls")
    assert [json.loads(c["arguments"]) for c in calls] == [{"html": snippet}]


def test_a_trigger_lookalike_the_model_ends_on_is_text():
    content, _, calls, reason = run("a <tool", HERMES, 1)  # ended by the model, not cut
    assert (content, calls, reason) == ("a <tool", [], "stop")


@pytest.mark.parametrize("cut", ["\n", "\n</", "\n</tool_", "\n</tool_call"])
def test_a_call_cut_inside_its_closing_tag_is_still_the_call(cut):
    text = CALL.removesuffix("\n</tool_call>") + cut
    content, _, calls, reason = run(text, HERMES, 1, budget=len(text))
    assert (content, reason) == ("", "length")
    assert [json.loads(c["arguments"]) for c in calls] == [{"city": "Paris"}]


@pytest.mark.parametrize("chunk", [1, 7])
def test_a_further_call_cut_by_max_tokens_is_dropped_not_sent_as_content(chunk):
    # a forced tool call with a modest max_tokens: one whole call, the next one cut short
    text = CALL + "\n" + CALL[:30]
    budget = -(-len(text) // chunk)
    content, _, calls, reason = run(text, HERMES, chunk, budget=budget)
    assert (content, [c["name"] for c in calls], reason) == ("", ["get_weather"], "length")


def test_calls_that_end_by_themselves_keep_the_text_after_them():
    content, _, calls, reason = run(CALL + "\nDone.", HERMES, 4)
    assert len(calls) == 1 and content == "\nDone." and reason == "tool_calls"


def test_a_call_that_is_not_json_comes_back_as_text():
    text = "<tool_call>\n{name: get_weather}\n</tool_call>"
    assert run(text, HERMES, 2)[:3] == (text, "", [])


def test_text_after_a_call_is_kept():
    content, _, calls, _ = run(CALL + "\nDone.", HERMES, 4)
    assert len(calls) == 1 and content == "\nDone."


def test_a_missing_closing_tag_at_the_end_still_reads_the_complete_call():
    content, _, calls, reason = run(CALL.removesuffix("\n</tool_call>"), HERMES, 5)
    assert (content, reason) == ("", "tool_calls") and calls[0]["name"] == "get_weather"


def test_reasoning_then_a_call():
    spec = OutputSpec(reasoning=THINK, tools=TOOLS["hermes"])
    _, reasoning, calls, reason = run("<think>need weather</think>\n\n" + CALL, spec, 2)
    assert reasoning == "need weather" and calls and reason == "tool_calls"


LLAMA = OutputSpec(tools=TOOLS["llama3_json"])


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
        '  {"name": "get_weather", "arguments": {"city": "Paris"}}',
    ],
)
def test_llama3_json_calls(text):
    content, _, calls, reason = run(text, LLAMA, 3)
    assert (content, reason) == ("", "tool_calls")
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}


def test_llama3_plain_answers_and_json_that_is_not_a_call_are_content():
    assert run("The weather is fine.", LLAMA, 2)[:3] == ("The weather is fine.", "", [])
    assert run('{"temperature": 20}', LLAMA, 2)[:3] == ('{"temperature": 20}', "", [])


MISTRAL = OutputSpec(tools=TOOLS["mistral"])


@pytest.mark.parametrize(
    "text",
    [
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]',
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1b2c3d4e"}]',
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}',
    ],
)
def test_mistral_calls_and_their_nine_character_ids(text):
    content, _, calls, reason = run(text, MISTRAL, 4)
    assert (content, reason) == ("", "tool_calls")
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert len(calls[0]["id"]) == 9 and calls[0]["id"].isalnum()


def test_mistral_truncated_array_is_content():
    text = '[TOOL_CALLS][{"name": "get_weather", "argu'
    assert run(text, MISTRAL, 4)[:3] == (text, "", [])


def test_stop_strings_apply_before_the_split():
    spec = OutputSpec(reasoning=THINK)
    content, reasoning, _, reason = run("<think>a END b</think>c", spec, 2, stops=["END"])
    assert (content, reasoning, reason) == ("", "a ", "stop")


def test_logprobs_ride_on_text_not_on_reasoning():
    output = ChoiceOutput(0, (), 100, True, spec=OutputSpec(reasoning=THINK))
    lp = TokenLogprob("x", -0.1, b"x")
    events = output.token("<think>", lp) + output.token("hm</think>", lp) + output.token("ok", lp)
    texts = [e for e in events if isinstance(e, TextDelta)]
    assert texts[0].text == "ok" and texts[0].logprobs is not None and len(texts[0].logprobs) == 3


@pytest.mark.parametrize(
    ("tokens", "stop", "content", "logged"),
    [
        (["1", ".", " 1", "\n", "2"], "\n", "1. 1", ["1", ".", " 1"]),  # the stop is a token
        (["x E", "N", "D", "!"], "END", "x ", ["x E"]),  # starts inside a token, ends in another
        (["a", "bEN", "D"], "END", "ab", ["a", "bEN"]),
    ],
)
def test_the_tokens_of_a_stop_string_have_no_logprobs(tokens, stop, content, logged):
    """The logprobs are the answer's tokens: those that start inside the stop string went with
    it (one that starts before it, and so shows in the text, stays)."""
    output = ChoiceOutput(0, (stop,), 100, True)
    events = []
    for token in tokens:
        events += output.token(token, TokenLogprob(token, -0.5, token.encode()))
        if output.reason is not None:
            break
    texts = [e for e in events if isinstance(e, TextDelta)]
    assert "".join(e.text for e in texts) == content
    assert [lp.token for e in texts for lp in e.logprobs or ()] == logged


def test_a_choice_cut_inside_a_character_ends_before_it():
    # the llama.cpp engine's decoder: bytes in, text out, U+FFFD for what is left at the end
    import codecs

    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    output = ChoiceOutput(0, (), 2, False, flush_text=lambda: utf8.decode(b"", final=True))
    emoji = "😀".encode()
    events = output.token(utf8.decode(b"ok " + emoji[:1]))
    events += output.token(utf8.decode(emoji[1:3]))  # the budget ends with one byte to go
    assert output.reason == "length"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "ok "


def test_what_a_detokenizer_holds_back_is_kept_up_to_the_cut_character():
    # the transformers engine's detokenizer holds back "x" + an incomplete character
    output = ChoiceOutput(0, (), 1, False, flush_text=lambda: "x\ufffd")
    events = output.token("")
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["x"]
    assert output.reason == "length"


def test_an_answer_that_really_holds_a_replacement_character_keeps_it():
    output = ChoiceOutput(0, (), 10, False)
    events = output.token("a \ufffd b") + output.token(None)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "a \ufffd b"
