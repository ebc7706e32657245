"""How a sentence-transformers model folder turns token states into one vector: its pooling
mode (``1_Pooling/config.json``), whether it normalises (a ``Normalize`` module in
``modules.json``), its longest input (``sentence_bert_config.json``), read without importing
sentence-transformers; and the pooling itself (``pool``, torch imported when called).

A plain Hugging Face folder (no ``modules.json``) pools as sentence-transformers pools one:
mean over the tokens, not normalised. A module this engine does not run (``Dense``, a router,
several pooling modes concatenated) refuses to load, naming it, rather than giving different
vectors than the model's authors meant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

PoolingMode = Literal["mean", "cls", "max", "lasttoken", "mean_sqrt_len_tokens"]

# sentence-transformers' config flags -> our modes (weightedmean needs weights we do not keep)
_FLAGS: dict[str, PoolingMode] = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
}
_OTHER_FLAGS = ("pooling_mode_weightedmean_tokens",)


class PoolingConfigError(ValueError):
    """The folder's sentence-transformers configuration is one this engine cannot follow."""


@dataclass(frozen=True)
class PoolingConfig:
    mode: PoolingMode = "mean"
    normalize: bool = False
    max_seq_length: int | None = None  # None: the tokenizer's / model's own limit
    do_lower_case: bool = False


def read_pooling_config(folder: Path) -> PoolingConfig:
    """The folder's pooling, normalisation and length limit (see the module docstring)."""
    modules_file = folder / "modules.json"
    bert = _json(folder / "sentence_bert_config.json") or {}
    max_len = bert.get("max_seq_length")
    base = PoolingConfig(
        max_seq_length=int(max_len) if isinstance(max_len, int) else None,
        do_lower_case=bool(bert.get("do_lower_case", False)),
    )
    if not modules_file.is_file():
        return base
    modules = _json(modules_file)
    if not isinstance(modules, list):
        raise PoolingConfigError(f"{modules_file} is not a list of modules")
    pooling: dict[str, Any] | None = None
    normalize = False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Transformer" and not module.get("path"):
            continue
        if kind == "Pooling":
            pooling = _json(folder / str(module.get("path", "")) / "config.json") or {}
        elif kind == "Normalize":
            normalize = True
        else:
            raise PoolingConfigError(
                f"{modules_file}: module {module.get('type')!r} is not supported (this engine "
                "runs a transformer, one pooling mode and Normalize)"
            )
    mode = _pooling_mode(pooling) if pooling is not None else base.mode
    return replace(base, mode=mode, normalize=normalize)


def _pooling_mode(config: dict[str, Any]) -> PoolingMode:
    named = config.get("pooling_mode")  # newer sentence-transformers may write the mode's name
    if isinstance(named, str):
        for mode in _FLAGS.values():
            if named in (mode, f"{mode}_tokens", f"{mode}_token"):
                return mode
        raise PoolingConfigError(f"pooling mode {named!r} is not supported")
    modes = [mode for flag, mode in _FLAGS.items() if config.get(flag)]
    others = [flag for flag in _OTHER_FLAGS if config.get(flag)]
    if others or len(modes) != 1:
        chosen = [*modes, *others] or ["none"]
        raise PoolingConfigError(
            f"pooling {' + '.join(chosen)} is not supported (exactly one of mean, cls, max, "
            "lasttoken, mean_sqrt_len_tokens)"
        )
    return modes[0]


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise PoolingConfigError(f"{path} is not valid JSON: {exc}") from exc


def pool(hidden: Any, mask: Any, lengths: Any, mode: PoolingMode) -> Any:
    """One vector per row of ``hidden`` [batch, tokens, width] (right-padded: ``mask`` is 1 on
    real tokens, ``lengths`` counts them), as sentence-transformers' ``Pooling`` computes it."""
    import torch

    if mode == "cls":
        return hidden[:, 0]
    if mode == "lasttoken":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    if mode == "mean":
        return summed / counts
    return summed / counts.sqrt()
