"""The tensors of a decode batch: one KV cache whose rows are left-padded to a common length.

Left padding keeps every row's cached keys aligned to the right, so a decode step is a plain
``[rows, 1]`` forward with a 2-D attention mask (1 = a real column) and per-row position ids:
the model's own attention (SDPA, eager, flash) runs unchanged, and each row's RoPE positions
are its own. Rows join with ``add`` (the shorter side is zero-padded on the left) and leave
with ``keep``, which also trims the columns only padding still used.

Works on ``transformers``' ``DynamicCache`` (its ``layers`` of ``keys``/``values`` tensors
shaped ``[rows, heads, time, dim]``); call from the engine thread only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class PaddedKVBatch:
    def __init__(self, device: torch.device) -> None:
        self._device = device
        self.cache: Any = None
        self.clear()

    @property
    def rows(self) -> int:
        return int(self._positions.shape[0])

    def clear(self) -> None:
        self.cache = None
        self._mask = torch.zeros(0, 0, dtype=torch.long, device=self._device)
        self._positions = torch.zeros(0, dtype=torch.long, device=self._device)
        self._next = torch.zeros(0, dtype=torch.long, device=self._device)

    def add(self, cache: Any, length: int, first_tokens: list[int]) -> None:
        """Append the rows of a freshly prefilled ``cache`` (each ``length`` tokens long) whose
        next inputs are ``first_tokens``."""
        n = len(first_tokens)
        mask = torch.ones(n, length, dtype=torch.long, device=self._device)
        positions = torch.full((n,), length, dtype=torch.long, device=self._device)
        tokens = torch.tensor(first_tokens, dtype=torch.long, device=self._device)
        if self.rows == 0:
            self.cache, self._mask, self._positions, self._next = cache, mask, positions, tokens
            return
        width = self._mask.shape[1]
        grow, pad = max(0, length - width), max(0, width - length)
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad_left(old.keys, grow), _pad_left(new.keys, pad)])
            old.values = torch.cat([_pad_left(old.values, grow), _pad_left(new.values, pad)])
        self._mask = torch.cat([F.pad(self._mask, (grow, 0)), F.pad(mask, (pad, 0))])
        self._positions = torch.cat([self._positions, positions])
        self._next = torch.cat([self._next, tokens])

    def decode_inputs(self) -> dict[str, Any]:
        """The model's keyword arguments for the next decode step (one new column each)."""
        ones = torch.ones(self.rows, 1, dtype=torch.long, device=self._device)
        self._mask = torch.cat([self._mask, ones], dim=1)
        return {
            "input_ids": self._next.unsqueeze(-1),
            "attention_mask": self._mask,
            "position_ids": self._positions.unsqueeze(-1),
            "cache": self.cache,
        }

    def advance(self, next_tokens: list[int]) -> None:
        """After a decode step: every row moved one position; these are its next inputs."""
        self._positions += 1
        self._next = torch.tensor(next_tokens, dtype=torch.long, device=self._device)

    def row_kv(self, row: int, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A copy of the last ``length`` columns of ``row``'s keys and values in every layer
        (its history once the padding is left out: ``length`` is what it has evaluated)."""
        return [
            (layer.keys[row : row + 1, :, -length:].clone(),
             layer.values[row : row + 1, :, -length:].clone())
            for layer in self.cache.layers
        ]  # fmt: skip

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in this order) and drop the columns no kept row uses."""
        if not rows:
            self.clear()
            return
        index = torch.tensor(rows, dtype=torch.long, device=self._device)
        self._mask = self._mask[index]
        self._positions = self._positions[index]
        self._next = self._next[index]
        used = self._mask.any(dim=0).nonzero()
        first = int(used[0]) if used.numel() else 0
        self._mask = self._mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, first:]
            layer.values = layer.values[index, :, first:]


def _pad_left(tensor: torch.Tensor, columns: int) -> torch.Tensor:
    """Zero-pad ``tensor`` ([rows, heads, time, dim]) with ``columns`` steps of history."""
    return F.pad(tensor, (0, 0, columns, 0)) if columns else tensor
