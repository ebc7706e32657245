"""What the terminal chat lets through to the terminal from model output."""

from __future__ import annotations

import pytest

from gateway.chat_client import printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text\nwith\ttabs", "plain text\nwith\ttabs"),
        ("copy\x1b]52;c;cHduZWQ=\x07 me", "copy me"),  # OSC 52: a clipboard write
        ("title\x1b]0;pwned\x1b\\ set", "title set"),  # OSC with ST terminator
        ("\x1b[2J\x1b[Hclear", "clear"),  # CSI: clear screen, cursor home
        ("\x1b[31mred\x1b[0m", "red"),
        ("bell\x07 nul\x00 del\x7f c1\x9b", "bell nul del c1"),
        ("unicode: é ✓ 中文", "unicode: é ✓ 中文"),
    ],
)
def test_control_sequences_are_dropped_text_is_kept(raw, shown):
    assert printable(raw) == shown
