"""Cutting a prompt to fit the window (backends/local/fit.py): what stays, what goes, and
that nothing is cut unless the request allows it. The renderer is a stand-in whose tokens are
one per character of each message, so lengths are easy to reason about."""

from __future__ import annotations

from dataclasses import replace

import pytest

from backends.local.chat import Prompt
from backends.local.fit import KEEP_HEAD, answer_room, fit_prompt
from backends.local.output import OutputSpec
from backends.requests import GenerationRequest, Message, TextPart


def msg(role: str, text: str) -> Message:
    return Message(role, (TextPart(text),))  # type: ignore[arg-type]


class Renders:
    """Renders a request as its messages' ``role:text|`` and counts the renders."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: GenerationRequest) -> Prompt:
        self.calls += 1
        if request.prompt is not None:
            text = request.prompt
        else:
            text = "".join(f"{m.role[0]}:{m.text()}|" for m in request.messages)
        return Prompt([ord(c) for c in text], OutputSpec())


def text_of(prompt: Prompt) -> str:
    return "".join(map(chr, prompt.tokens))


def chat(turns: int, **fields) -> GenerationRequest:
    messages = [msg("system", "S")]
    for i in range(turns):
        messages += [msg("user", f"q{i}" + "x" * 20), msg("assistant", f"a{i}" + "y" * 20)]
    messages.append(msg("user", "last"))
    return GenerationRequest(model="m", messages=tuple(messages), max_tokens=10, **fields)


def test_nothing_is_cut_unless_the_request_allows_it():
    request = chat(10)  # ~500 characters
    whole = Renders()(request)
    assert text_of(fit_prompt(request, Renders(), 100)) == text_of(whole)


def test_a_prompt_that_fits_is_left_alone():
    request = chat(2, truncate_prompt=True)
    assert text_of(fit_prompt(request, Renders(), 1000)) == text_of(Renders()(request))


def test_the_oldest_turns_go_first_system_and_last_turn_stay():
    request = chat(10, truncate_prompt=True)
    renders = Renders()
    prompt = fit_prompt(request, renders, 150)
    text = text_of(prompt)
    assert len(prompt.tokens) <= 150 - 10  # room for max_tokens
    assert text.startswith("s:S|u:q") and text.endswith("u:last|")
    # as many of the newest turns as fit: one more turn would not
    kept = text.count("u:q")
    assert kept >= 1
    assert len(text) + 2 * 26 > 140
    assert "q9" in text and "q0" not in text
    assert renders.calls <= 6  # a binary search, not one render per start


def test_when_the_last_turn_alone_is_too_long_its_middle_goes():
    request = GenerationRequest(
        model="m",
        messages=(msg("user", "A" * 100 + "B" * 100),),
        max_tokens=10,
        truncate_prompt=True,
    )
    prompt = fit_prompt(request, Renders(), 60)
    text = text_of(prompt)
    assert len(text) == 50
    assert text[:KEEP_HEAD] == "u:AA" and text.endswith("B|")


def test_a_raw_prompt_loses_its_middle():
    request = GenerationRequest(model="m", prompt="0123" + "-" * 300 + "end", truncate_prompt=True)
    prompt = fit_prompt(request, Renders(), 100)
    assert text_of(prompt).startswith("0123") and text_of(prompt).endswith("-end")
    assert len(prompt.tokens) == 100 - answer_room(request, 100)


def test_a_continued_answer_keeps_the_question_it_answers():
    messages = [*list(chat(10).messages[:-1]), msg("user", "why?"), msg("assistant", "Because")]
    request = GenerationRequest(
        model="m",
        messages=tuple(messages),
        max_tokens=10,
        truncate_prompt=True,
        continue_final=True,
    )
    text = text_of(fit_prompt(request, Renders(), 40))
    assert text == "s:S|u:why?|a:Because|"


@pytest.mark.parametrize(
    ("max_tokens", "window", "room"),
    [(None, 2048, 512), (16, 2048, 16), (4000, 2048, 1024), (0, 2048, 1), (None, 2, 1)],
)
def test_the_room_left_for_the_answer(max_tokens, window, room):
    request = GenerationRequest(model="m", max_tokens=max_tokens)
    assert answer_room(request, window) == room


def test_the_kept_history_starts_at_a_user_message():
    messages = [msg("system", "S")]
    for i in range(6):
        messages += [msg("user", f"q{i}" + "x" * 10), msg("assistant", "calling")]
        messages += [msg("tool", "r" * 10), msg("assistant", f"a{i}")]
    messages.append(msg("user", "last"))
    request = replace(chat(0), messages=tuple(messages), truncate_prompt=True)
    text = text_of(fit_prompt(request, Renders(), 100))
    assert text.startswith("s:S|u:q")
