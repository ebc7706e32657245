"""Build a tiny random-weight llama GGUF for tests.

``write_tiny_gguf`` writes a ~200 KB llama-architecture model (2 blocks, embedding 64, F16
weights drawn from a fixed seed) with a byte-level GPT-2 BPE tokenizer, ChatML control tokens
and a ChatML ``tokenizer.chat_template``. ``llama_cpp.Llama`` loads it in milliseconds and
generates from it through its chat template, so tests can exercise the real llama.cpp engine
without downloading a model. Its greedy output is deterministic gibberish.
"""

from __future__ import annotations

import pathlib

import gguf
import numpy as np

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CONTEXT_LENGTH = 2048
EMBEDDING_LENGTH = 64
BLOCK_COUNT = 2
FEED_FORWARD_LENGTH = 128
HEAD_COUNT = 4
HEAD_COUNT_KV = 2
HEAD_DIM = EMBEDDING_LENGTH // HEAD_COUNT
SEED = 1234

# Control tokens come first so their ids are fixed: <|endoftext|> is bos/pad (id 0).
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TINY_BOS_ID = 0
TINY_EOS_ID = SPECIAL_TOKENS.index("<|im_end|>")

# BPE merges in rank order; each merge's result is also added to the vocabulary.
MERGES = (
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("e", "r"),
    ("Ġ", "a"),
    ("o", "n"),
    ("r", "e"),
)


def _bytes_to_unicode() -> list[str]:
    """GPT-2's reversible byte -> printable unicode map, as a list indexed by byte value."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return [mapping[b] for b in range(256)]


def _vocab() -> tuple[list[str], list[int]]:
    tokens = list(SPECIAL_TOKENS) + _bytes_to_unicode() + ["".join(m) for m in MERGES]
    types = [gguf.TokenType.CONTROL] * len(SPECIAL_TOKENS)
    types += [gguf.TokenType.NORMAL] * (len(tokens) - len(SPECIAL_TOKENS))
    assert len(set(tokens)) == len(tokens), "duplicate token in tiny vocab"
    return tokens, [int(t) for t in types]


TINY_VOCAB_SIZE = len(_vocab()[0])


def write_tiny_gguf(path: pathlib.Path) -> pathlib.Path:
    """Write the tiny model to ``path`` (parent directories must exist) and return ``path``."""
    path = pathlib.Path(path)
    tokens, token_types = _vocab()
    rng = np.random.default_rng(SEED)

    def weight(n_out: int, n_in: int) -> np.ndarray:
        # numpy shape is the reverse of ggml's (ne0 = n_in, ne1 = n_out).
        return rng.normal(0.0, 0.02, size=(n_out, n_in)).astype(np.float16)

    def norm() -> np.ndarray:
        return np.ones(EMBEDDING_LENGTH, dtype=np.float32)

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("llmgate-tiny-test")
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(EMBEDDING_LENGTH)
    writer.add_block_count(BLOCK_COUNT)
    writer.add_feed_forward_length(FEED_FORWARD_LENGTH)
    writer.add_head_count(HEAD_COUNT)
    writer.add_head_count_kv(HEAD_COUNT_KV)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges([f"{a} {b}" for a, b in MERGES])
    writer.add_bos_token_id(TINY_BOS_ID)
    writer.add_pad_token_id(TINY_BOS_ID)
    writer.add_eos_token_id(TINY_EOS_ID)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    kv_dim = HEAD_COUNT_KV * HEAD_DIM
    writer.add_tensor("token_embd.weight", weight(len(tokens), EMBEDDING_LENGTH))
    for i in range(BLOCK_COUNT):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", norm())
        writer.add_tensor(f"{blk}.attn_q.weight", weight(EMBEDDING_LENGTH, EMBEDDING_LENGTH))
        writer.add_tensor(f"{blk}.attn_k.weight", weight(kv_dim, EMBEDDING_LENGTH))
        writer.add_tensor(f"{blk}.attn_v.weight", weight(kv_dim, EMBEDDING_LENGTH))
        writer.add_tensor(f"{blk}.attn_output.weight", weight(EMBEDDING_LENGTH, EMBEDDING_LENGTH))
        writer.add_tensor(f"{blk}.ffn_norm.weight", norm())
        writer.add_tensor(f"{blk}.ffn_gate.weight", weight(FEED_FORWARD_LENGTH, EMBEDDING_LENGTH))
        writer.add_tensor(f"{blk}.ffn_up.weight", weight(FEED_FORWARD_LENGTH, EMBEDDING_LENGTH))
        writer.add_tensor(f"{blk}.ffn_down.weight", weight(EMBEDDING_LENGTH, FEED_FORWARD_LENGTH))
    # No output.weight: llama.cpp ties the output projection to token_embd.
    writer.add_tensor("output_norm.weight", norm())

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
