from __future__ import annotations

import pytest

from backends.stop_strings import StopSequenceMatcher


def run(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopSequenceMatcher(stops)
    out: list[str] = []
    for piece in pieces:
        emit, hit = matcher.feed(piece)
        out.append(emit)
        if hit:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


@pytest.mark.parametrize(
    ("stops", "pieces", "expected"),
    [
        ([], ["a", "b"], ("ab", False)),
        (["END"], ["hello ", "E", "N", "D", "more"], ("hello ", True)),
        (["END"], ["hello E", "NX"], ("hello ENX", False)),
        (["\n\n"], ["line\n", "\n", "next"], ("line", True)),
        (["ab", "b"], ["xab"], ("x", True)),
        (["cd", "abcde"], ["abc", "d"], ("ab", True)),
        (["stop"], ["sto"], ("sto", False)),
        (["é!"], ["caf", "é", "!"], ("caf", True)),
    ],
)
def test_stop_sequences_never_leak(stops, pieces, expected):
    assert run(stops, pieces) == expected


def test_held_text_is_released_once_it_cannot_start_a_stop():
    matcher = StopSequenceMatcher(["STOP"])
    assert matcher.feed("ST") == ("", False)
    assert matcher.feed("X") == ("STX", False)
