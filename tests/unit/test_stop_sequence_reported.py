"""Which stop string ended a choice (``Finished.stop_sequence``): the matcher names it, the
in-process output reader reports it only for a stop-string stop, and an OpenAI-compatible
upstream's ``stop_reason`` (vLLM's) is read."""

from __future__ import annotations

import json

import pytest

from backends.events import Finished
from backends.local.output import ChoiceOutput
from backends.stop_strings import StopSequenceMatcher
from backends.upstream.openai_generate import ChunkEvents


@pytest.mark.parametrize(
    ("stops", "pieces", "matched"),
    [
        (["END"], ["a E", "ND"], "END"),
        (["b", "ab"], ["xab"], "ab"),  # the earliest position wins
        (["ab", "a"], ["xab"], "ab"),  # at one position, the first listed
        (["END"], ["no stop here"], None),
    ],
)
def test_the_matcher_names_the_stop_it_found(stops, pieces, matched):
    matcher = StopSequenceMatcher(stops)
    for piece in pieces:
        matcher.feed(piece)
    assert matcher.matched == matched


def finished(output: ChoiceOutput, tokens: list[str | None]) -> Finished:
    events = [e for token in tokens for e in output.token(token)]
    return next(e for e in events if isinstance(e, Finished))


def test_a_stop_string_stop_reports_the_string():
    output = ChoiceOutput(0, ("###", "\n\n"), 100, False)
    assert finished(output, ["Paris", "\n", "\n", "more"]) == Finished(0, "stop", "\n\n")


def test_end_of_generation_and_the_budget_report_no_stop_string():
    assert finished(ChoiceOutput(0, ("###",), 100, False), ["Paris", None]) == Finished(0, "stop")
    assert finished(ChoiceOutput(0, ("###",), 2, False), ["a", "b"]) == Finished(0, "length")


def chunk(reason: str, stop_reason: object) -> bytes:
    choice = {"index": 0, "delta": {}, "finish_reason": reason, "stop_reason": stop_reason}
    return json.dumps({"choices": [choice]}).encode()


@pytest.mark.parametrize(
    ("reason", "stop_reason", "expected"),
    [
        ("stop", "###", Finished(0, "stop", "###")),
        ("stop", None, Finished(0, "stop")),
        ("stop", 128009, Finished(0, "stop")),  # vLLM: a stop token id, not a string
        ("length", "###", Finished(0, "length")),
    ],
)
def test_an_openai_upstream_stop_reason_is_read(reason, stop_reason, expected):
    events = ChunkEvents().feed(chunk(reason, stop_reason))
    assert events[-1] == expected
