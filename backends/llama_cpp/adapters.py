"""GGUF LoRA adapters of a llama.cpp model: each loaded once with the model (llama.cpp's
``llama_adapter_lora_init``), and per request the request's adapter, or none, set on the
model's one context (``llama_set_adapters_lora``) before it decodes.

The context computes every token with the adapters set at that moment, so sequences of
different adapters never share a decode step, and a cached prefix is reused only under the
adapter it was computed with (``backends.llama_cpp.slots``).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LoraFile:
    """An adapter to load: its public name, its local GGUF, the scale it applies with."""

    name: str
    path: Path
    scale: float = 1.0


class LoraAdapters:
    """The adapters of one llama.cpp model (``model``, a ``llama_model_p``) and its context
    (``ctx``), by name. Not thread-safe: built on the loading thread, then used only on the
    engine's thread. ``free`` must run before the model is closed (an adapter points into its
    model)."""

    def __init__(self, model: Any, ctx: Any, files: Sequence[LoraFile]) -> None:
        import llama_cpp

        self._ctx = ctx
        self._loaded: dict[str, tuple[Any, float]] = {}
        self.active: str | None = None  # the adapter set on the context now
        try:
            for lora in files:
                adapter = llama_cpp.llama_adapter_lora_init(model, str(lora.path).encode("utf-8"))
                if not adapter:
                    raise ValueError(
                        f"adapter '{lora.name}' ({lora.path}): llama.cpp could not load it as "
                        "a LoRA adapter of this model (it needs general.type adapter, "
                        "adapter.type lora, the base's architecture, and .lora_a/.lora_b "
                        "tensors matching the base's names and shapes)"
                    )
                self._loaded[lora.name] = (adapter, lora.scale)
        except BaseException:
            self.free()
            raise

    @property
    def names(self) -> list[str]:
        return list(self._loaded)

    def use(self, name: str | None) -> bool:
        """Make ``name`` (None: the base model, no adapter) the adapter the context decodes
        with; True if that changed what it decodes with (the KV cache is then stale)."""
        import llama_cpp

        if name == self.active:
            return False
        if name is None:
            status = llama_cpp.llama_set_adapters_lora(self._ctx, None, 0, None)
        else:
            if name not in self._loaded:
                raise KeyError(f"no adapter '{name}' on this model (loaded: {self.names})")
            adapter, scale = self._loaded[name]
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
            scales = (ctypes.c_float * 1)(scale)
            status = llama_cpp.llama_set_adapters_lora(self._ctx, adapters, 1, scales)
        if status != 0:
            raise RuntimeError(f"llama.cpp could not set adapter {name!r} (status {status})")
        self.active = name
        return True

    def free(self) -> None:
        """Take the adapters off the context and free them (idempotent)."""
        import llama_cpp

        if self.active is not None:
            self.use(None)
        loaded, self._loaded = self._loaded, {}
        for adapter, _scale in loaded.values():
            llama_cpp.llama_adapter_lora_free(adapter)
