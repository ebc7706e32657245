"""What Tab completes in ``llmgate chat``."""

from __future__ import annotations

import pytest

from gateway.terminal_input import completions

MODELS = ["smollm2", "smollm2-hf", "minilm"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/mo", [("/model", "/mo"), ("/models", "/mo")]),
        ("/model smo", [("smollm2", "smo"), ("smollm2-hf", "smo")]),
        ("/model ", [(name, "") for name in MODELS]),
        ("/set te", [("temperature", "te")]),
        ("/set temperature 0", []),  # a value is not completed
        ("/x", []),
        ("hello /mo", []),  # only a command at the start of the line
    ],
)
def test_completions_for_the_text_before_the_cursor(text, expected):
    assert list(completions(text, MODELS)) == expected
