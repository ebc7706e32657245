"""Build a tiny random-weight llama GGUF for tests.

``write_tiny_gguf`` writes a ~200 KB llama-architecture model (2 blocks, embedding 64, F16
weights drawn from a fixed seed) with a byte-level GPT-2 BPE tokenizer, ChatML control tokens
and a ChatML ``tokenizer.chat_template``. ``llama_cpp.Llama`` loads it in milliseconds and
generates from it through its chat template, so tests can exercise the real llama.cpp engine
without downloading a model. Its greedy output is deterministic gibberish.

``family=`` picks the chat template and special tokens of a real model family
(``tests/model_families.py``); the default is the ChatML model above. The family's tokens come
first (id = index in ``Family.tokens``): CONTROL where the real tokenizer has them special,
USER_DEFINED where they are plain added tokens (llama.cpp then matches them even when a
tokenize call does not parse special tokens, and always prints them, as with the real GGUFs).
"""

from __future__ import annotations

import pathlib

import gguf
import numpy as np

from tests import model_families as families

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


def _vocab(family: str = "chatml") -> tuple[list[str], list[int]]:
    spec = families.family(family)
    tokens = [*spec.texts, *_bytes_to_unicode(), *("".join(m) for m in MERGES)]
    types = [
        gguf.TokenType.CONTROL if t.special else gguf.TokenType.USER_DEFINED for t in spec.tokens
    ]
    types += [gguf.TokenType.NORMAL] * (len(tokens) - len(spec.tokens))
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"duplicate token in the tiny vocabulary of family {family!r}")
    return tokens, [int(t) for t in types]


def gguf_token_id(text: str, *, family: str = "chatml") -> int:
    """The id of a family token in the GGUF ``write_tiny_gguf`` writes (for ``logit_bias``);
    the same id ``tiny_hf.hf_token_id`` gives."""
    return families.family(family).token_id(text)


TINY_VOCAB_SIZE = len(_vocab()[0])


def write_tiny_gguf(path: pathlib.Path, *, family: str = "chatml") -> pathlib.Path:
    """Write the tiny model to ``path`` (parent directories must exist) and return ``path``."""
    path = pathlib.Path(path)
    spec = families.family(family)
    tokens, token_types = _vocab(family)
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
    _add_family_tokens(writer, spec)
    writer.add_chat_template(CHAT_TEMPLATE if family == "chatml" else spec.chat_template)

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


def _add_family_tokens(writer: gguf.GGUFWriter, spec: families.Family) -> None:
    """bos/eos/pad/eot/eom ids and add_bos, as convert_hf_to_gguf.py writes them. Qwen has no
    bos token; its GGUFs name <|endoftext|> as bos (never added), and so does this one."""
    bos = spec.bos if spec.bos is not None else spec.pad
    if bos is not None:
        writer.add_bos_token_id(spec.token_id(bos))
    if spec.pad is not None:
        writer.add_pad_token_id(spec.token_id(spec.pad))
    writer.add_eos_token_id(spec.token_id(spec.eos))
    if spec.eot is not None:
        writer.add_eot_token_id(spec.token_id(spec.eot))
    if spec.eom is not None:
        writer.add_eom_token_id(spec.token_id(spec.eom))
    writer.add_add_bos_token(spec.add_bos)


# The base tensors the tiny LoRA adapters adapt (every block's).
LORA_TARGETS = ("attn_q.weight", "attn_v.weight", "ffn_down.weight")
LORA_RANK = 4


def write_tiny_lora_gguf(base: pathlib.Path, path: pathlib.Path, seed: int) -> pathlib.Path:
    """Write a LoRA adapter GGUF for the model at ``base`` (as llama.cpp's
    ``convert_lora_to_gguf.py`` lays one out: ``general.type adapter``, ``adapter.type lora``,
    ``adapter.lora.alpha``, ``<base tensor>.lora_a`` / ``.lora_b`` pairs) to ``path``.

    Its weights are drawn from ``seed`` and large next to the base's (std 0.02), so that greedy
    output through the adapter differs from the base's, and adapters of different seeds differ.
    """
    reader = gguf.GGUFReader(base)
    architecture = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(pathlib.Path(path), architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(LORA_RANK))  # scale alpha/rank = 1
    for tensor in reader.tensors:
        if not tensor.name.endswith(LORA_TARGETS):
            continue
        n_in, n_out = (int(n) for n in tensor.shape)  # ggml order: ne0 = inputs
        # numpy shapes are the reverse of ggml's: lora_a is ne [n_in, rank], lora_b [rank, n_out]
        lora_a = rng.normal(0.0, 0.5, size=(LORA_RANK, n_in)).astype(np.float32)
        lora_b = rng.normal(0.0, 0.5, size=(n_out, LORA_RANK)).astype(np.float32)
        writer.add_tensor(f"{tensor.name}.lora_a", lora_a)
        writer.add_tensor(f"{tensor.name}.lora_b", lora_b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return pathlib.Path(path)
