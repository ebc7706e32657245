"""Turning a growing list of token ids into text, piece by piece, for any HF tokenizer.

Decoding one token at a time is wrong for most tokenizers (SentencePiece drops the leading
space of a word, byte-level BPE splits multi-byte characters across tokens). So each step
decodes a short window ending at the new token and emits only what it adds past the window's
already-emitted prefix, holding back text that ends in an incomplete character (U+FFFD).
"""

from __future__ import annotations

import re
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
    """Single tokens as text and bytes (cached per id), for the ``logprobs`` of a response. A
    token that is only part of a UTF-8 character reads as U+FFFD, as with other servers, but
    its ``bytes`` are its own (a client joins them back into the character): read from the
    vocabulary's spelling for byte-level BPE (GPT-2's byte-to-character map) and byte-fallback
    tokens (``<0xE3>``)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._texts: dict[int, str] = {}
        self._bytes: dict[int, bytes] = {}
        backend = getattr(tokenizer, "backend_tokenizer", None)
        decoder = getattr(backend, "decoder", None)
        self._byte_level = "ByteLevel" in repr(decoder)

    def text(self, token: int) -> str:
        text = self._texts.get(token)
        if text is None:
            text = self._texts[token] = self._tokenizer.decode([token])
        return text

    def bytes_of(self, token: int) -> bytes:
        raw = self._bytes.get(token)
        if raw is None:
            raw = self._bytes[token] = self._raw(token)
        return raw

    def _raw(self, token: int) -> bytes:
        text = self.text(token)
        if _REPLACEMENT not in text:
            return text.encode("utf-8")
        spelled = self._tokenizer.convert_ids_to_tokens(token)
        if isinstance(spelled, str):
            if self._byte_level and all(c in _BYTE_OF_CHAR for c in spelled):
                return bytes(_BYTE_OF_CHAR[c] for c in spelled)
            fallback = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", spelled)
            if fallback:
                return bytes([int(fallback.group(1), 16)])
        return text.encode("utf-8")

    def logprob(self, token: int, logprobs: tuple[float, list[tuple[int, float]]]) -> TokenLogprob:
        """``logprobs``: the chosen token's log-probability and the top alternatives'."""
        chosen, alternatives = logprobs
        top = tuple(TopToken(self.text(t), lp, self.bytes_of(t)) for t, lp in alternatives)
        return TokenLogprob(self.text(token), chosen, self.bytes_of(token), top)


def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE's spelling of bytes (GPT-2's): printable Latin-1 bytes stand for
    themselves, the other bytes for the characters from U+0100 on, in byte order."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    alphabet: dict[str, int] = {}
    shifted = 0
    for byte in range(256):
        if byte in printable:
            alphabet[chr(byte)] = byte
        else:
            alphabet[chr(0x100 + shifted)] = byte
            shifted += 1
    return alphabet


_BYTE_OF_CHAR = _byte_level_alphabet()
