"""Incremental detokenization: the pieces add up to the whole text, never a broken character."""

from __future__ import annotations

import pytest

from backends.transformers.detokenizer import IncrementalDetokenizer
from tests.tiny_hf import tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.mark.parametrize(
    "text",
    ["Hello world! How are you?", "café naïve 東京 🙂 done", "  spaces  and\nnewlines\t", "🙂🙂🙂"],
)
def test_pieces_join_to_the_full_decode(tokenizer, text):
    ids = tokenizer.encode(text)
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.push(i) for i in ids]
    pieces.append(detok.flush())
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)


def test_special_tokens_are_not_text(tokenizer):
    detok = IncrementalDetokenizer(tokenizer)
    ids = [*tokenizer.encode("hi"), tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert "".join(detok.push(i) for i in ids) + detok.flush() == "hi"


def test_a_cut_character_is_flushed_as_a_replacement(tokenizer):
    ids = tokenizer.encode("🙂")
    assert len(ids) > 1  # byte-level: the emoji spans several tokens
    detok = IncrementalDetokenizer(tokenizer)
    assert detok.push(ids[0]) == ""
    assert detok.flush() == "\ufffd"
