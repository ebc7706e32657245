"""Reading a sentence-transformers folder's pooling, normalisation and length limit (without
sentence-transformers), and the pooling itself on right-padded batches."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from backends.transformers.pooling import (
    PoolingConfig,
    PoolingConfigError,
    pool,
    read_pooling_config,
)
from tests.minilm_gguf import minilm_folder

TRANSFORMER = {
    "idx": 0,
    "name": "0",
    "path": "",
    "type": "sentence_transformers.models.Transformer",
}
POOLING = {
    "idx": 1,
    "name": "1",
    "path": "1_Pooling",
    "type": "sentence_transformers.models.Pooling",
}
NORMALIZE = {
    "idx": 2,
    "name": "2",
    "path": "2_Normalize",
    "type": "sentence_transformers.models.Normalize",
}
DENSE = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}


def folder(tmp_path: Path, modules: list | None, pooling: dict | None = None, bert=None) -> Path:
    if modules is not None:
        (tmp_path / "modules.json").write_text(json.dumps(modules))
    if pooling is not None:
        (tmp_path / "1_Pooling").mkdir()
        (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    if bert is not None:
        (tmp_path / "sentence_bert_config.json").write_text(json.dumps(bert))
    return tmp_path


def flags(**on: bool) -> dict:
    names = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "lasttoken")
    return {"word_embedding_dimension": 8} | {
        f"pooling_mode_{name}": on.get(name, False) for name in names
    }


def test_the_embedded_minilm_pools_mean_normalises_and_reads_256_tokens():
    assert read_pooling_config(minilm_folder()) == PoolingConfig(
        mode="mean", normalize=True, max_seq_length=256, do_lower_case=False
    )


@pytest.mark.parametrize(
    ("modules", "pooling", "expected"),
    [
        ([TRANSFORMER, POOLING], flags(cls_token=True), PoolingConfig(mode="cls")),
        ([TRANSFORMER, POOLING, NORMALIZE], flags(max_tokens=True), PoolingConfig("max", True)),
        ([TRANSFORMER, POOLING], flags(lasttoken=True), PoolingConfig(mode="lasttoken")),
        ([TRANSFORMER, POOLING], {"pooling_mode": "cls"}, PoolingConfig(mode="cls")),
        (None, None, PoolingConfig(mode="mean", normalize=False)),  # a plain HF folder
        ([TRANSFORMER, NORMALIZE], None, PoolingConfig(mode="mean", normalize=True)),
    ],
)
def test_pooling_and_normalisation_follow_the_folder(tmp_path, modules, pooling, expected):
    assert read_pooling_config(folder(tmp_path, modules, pooling)) == expected


def test_sentence_bert_config_gives_the_limit_and_lower_casing(tmp_path):
    config = read_pooling_config(
        folder(tmp_path, None, bert={"max_seq_length": 128, "do_lower_case": True})
    )
    assert (config.max_seq_length, config.do_lower_case) == (128, True)


@pytest.mark.parametrize(
    ("modules", "pooling", "fragment"),
    [
        ([TRANSFORMER, POOLING, DENSE], flags(mean_tokens=True), "Dense"),
        ([TRANSFORMER, POOLING], flags(mean_tokens=True, cls_token=True), "mean + cls"),
        ([TRANSFORMER, POOLING], flags(), "none"),
        ([TRANSFORMER, POOLING], {"pooling_mode": "weightedmean"}, "weightedmean"),
    ],
)
def test_what_this_engine_cannot_run_refuses_to_load(tmp_path, modules, pooling, fragment):
    with pytest.raises(PoolingConfigError, match=re.escape(fragment)):
        read_pooling_config(folder(tmp_path, modules, pooling))


# two rows: the second is padded after its 2 real tokens
HIDDEN = torch.tensor(
    [[[1.0, 4.0], [3.0, 0.0], [5.0, 2.0]], [[2.0, 2.0], [4.0, 6.0], [99.0, 99.0]]]
)
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
LENGTHS = torch.tensor([3, 2])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("mean", [[3.0, 2.0], [3.0, 4.0]]),
        ("cls", [[1.0, 4.0], [2.0, 2.0]]),
        ("max", [[5.0, 4.0], [4.0, 6.0]]),
        ("lasttoken", [[5.0, 2.0], [4.0, 6.0]]),
        ("mean_sqrt_len_tokens", [[9.0 / 3**0.5, 6.0 / 3**0.5], [6.0 / 2**0.5, 8.0 / 2**0.5]]),
    ],
)
def test_pooling_ignores_padding(mode, expected):
    torch.testing.assert_close(pool(HIDDEN, MASK, LENGTHS, mode), torch.tensor(expected))
