"""Turning a growing list of token ids into text, piece by piece, for any HF tokenizer.

Decoding one token at a time is wrong for most tokenizers (SentencePiece drops the leading
space of a word, byte-level BPE splits multi-byte characters across tokens). So each step
decodes a short window ending at the new token and emits only what it adds past the window's
already-emitted prefix, holding back text that ends in an incomplete character (U+FFFD).
"""

from __future__ import annotations

from typing import Any

from backends.events import TokenLogprob, TopToken

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Special tokens are left out of the text, except those in ``visible`` (the markers a tool
    or reasoning parser reads, such as Mistral's ``[TOOL_CALLS]``)."""

    def __init__(self, tokenizer: Any, visible: frozenset[int] = frozenset()) -> None:
        self._tokenizer = tokenizer
        self._skip = True
        self._hidden: frozenset[int] = frozenset()
        if visible:
            self._skip = False
            self._hidden = frozenset(tokenizer.all_special_ids) - visible
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the decode window
        self._read_offset = 0  # ids before this are emitted

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (may be empty)."""
        if token_id in self._hidden:
            return ""
        self._ids.append(token_id)
        decode = self._tokenizer.decode
        window = self._ids[self._prefix_offset :]
        prefix = decode(
            self._ids[self._prefix_offset : self._read_offset], skip_special_tokens=self._skip
        )
        text = decode(window, skip_special_tokens=self._skip)
        if len(text) > len(prefix) and not text.endswith(_REPLACEMENT):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return text[len(prefix) :]
        return ""

    def flush(self) -> str:
        """What is still held back (an incomplete character at the very end)."""
        decode = self._tokenizer.decode
        prefix = decode(
            self._ids[self._prefix_offset : self._read_offset], skip_special_tokens=self._skip
        )
        text = decode(self._ids[self._prefix_offset :], skip_special_tokens=self._skip)
        self._prefix_offset = self._read_offset = len(self._ids)
        return text[len(prefix) :]


class TokenTexts:
    """Single tokens as text (cached per id), for the ``logprobs`` of a response. A token that
    is only part of a UTF-8 character reads as U+FFFD, as with other servers."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._texts: dict[int, str] = {}

    def text(self, token: int) -> str:
        text = self._texts.get(token)
        if text is None:
            text = self._texts[token] = self._tokenizer.decode([token])
        return text

    def logprob(self, token: int, logprobs: tuple[float, list[tuple[int, float]]]) -> TokenLogprob:
        """``logprobs``: the chosen token's log-probability and the top alternatives'."""
        chosen, alternatives = logprobs
        text = self.text(token)
        top = tuple(TopToken(self.text(t), lp, self.text(t).encode()) for t, lp in alternatives)
        return TokenLogprob(text, chosen, text.encode("utf-8"), top)
