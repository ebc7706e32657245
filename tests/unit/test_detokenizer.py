"""Incremental detokenization: the pieces add up to the whole text, never a broken character."""

from __future__ import annotations

import pytest

from backends.transformers.detokenizer import IncrementalDetokenizer, TokenTexts
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


@pytest.mark.parametrize("text", ["おわん", "🙂 ok", "café"])
def test_logprob_bytes_are_each_tokens_own_and_join_to_the_text(tokenizer, text):
    """A token inside a character reads as U+FFFD, but its bytes are its own, as OpenAI's
    ``bytes`` field is: a client rebuilds the text from them."""
    ids = tokenizer.encode(text)
    texts = TokenTexts(tokenizer)
    joined = b"".join(texts.bytes_of(i) for i in ids)
    assert joined.decode("utf-8") == text
    logprob = texts.logprob(ids[0], (-0.5, [(ids[0], -0.5)]))
    assert logprob.bytes == logprob.top[0].bytes == texts.bytes_of(ids[0])
