"""Loading a Hugging Face model for the transformers engine: where its files are, which device
and dtype it runs in, its tokenizer and chat template, its stop tokens, its LoRA adapters.

A GGUF source (a ``.gguf`` path, ``package:`` or ``hf:`` file) is dequantized by transformers
(``gguf_file=``, 12-26 s for SmolLM2-135M) once, then saved as a plain safetensors folder in
the conversion cache, so later loads take about 0.1 s. The cache key covers the file's
identity (path, size, mtime), the dtype and the transformers version; a folder is published
by an atomic rename, so concurrent gateways never see half a conversion.

Everything here blocks: call it from a worker thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.errors import BackendUnavailableError
from backends.transformers.settings import TransformersSettings
from backends.weight_sources import resolve_source

log = logging.getLogger(__name__)

_DTYPES = {"bfloat16", "float16", "float32"}
# Sampling defaults a model's generation_config.json may set (vLLM applies them the same way).
_SAMPLING_DEFAULTS = ("temperature", "top_p", "top_k", "min_p")


@dataclass
class LoadedModel:
    """A model ready to run: what the scheduler and the request planner need to know."""

    model: Any  # a transformers PreTrainedModel, or a peft PeftModel around one
    tokenizer: Any
    device: str
    dtype: str
    eos_token_ids: frozenset[int]
    max_context: int
    vocab_size: int
    sampling_defaults: dict[str, float] = field(default_factory=dict)
    adapters: tuple[str, ...] = ()
    converted_from_gguf: bool = False  # this load wrote the conversion cache


def default_cache_dir() -> Path:
    explicit = os.environ.get("LLMGATE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "llmgate"


def resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {device!r} asked for, but CUDA is not available")
        if device == "mps" and not torch.backends.mps.is_available():
            raise BackendUnavailableError("device 'mps' asked for, but MPS is not available")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto``: bfloat16 on GPUs that have it (else float16), on MPS float16, on CPUs with
    native bf16 instructions (AVX512-BF16/AMX: 1.3-2x faster than float32 measured here)
    bfloat16, else float32 (emulated bf16 is slower than float32)."""
    if dtype in _DTYPES:
        return dtype
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "mps":
        return "float16"
    return "bfloat16" if _cpu_has_native_bf16() else "float32"


def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def load_model(
    settings: TransformersSettings,
    base_dir: Path | None,
    cache_dir: Path,
    fetch: Callable[[str], Path] | None = None,
) -> LoadedModel:
    """Load ``settings``' model with its tokenizer and adapters.

    Raises ``BackendUnavailableError`` naming the model for every failure: weights that cannot
    be found or fetched, no chat template, a device that is absent, a broken checkpoint.
    """
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    if fetch is None:  # ``fetch``: the backend's, which reports the download's progress
        path = resolve_source(settings.name, settings.source, base_dir)
    else:
        path = fetch(settings.source)
    converted = False
    if path.is_file() and path.suffix == ".gguf":
        path, converted = converted_gguf(settings, path, dtype, cache_dir)
    elif not path.is_dir():
        raise BackendUnavailableError(
            f"model '{settings.name}': {path} is neither a model folder nor a .gguf file"
        )
    try:
        tokenizer, model = load_pretrained(settings, path, device, dtype)
    except BackendUnavailableError:
        raise
    except Exception as exc:
        raise BackendUnavailableError(
            f"model '{settings.name}' failed to load from {path}: {type(exc).__name__}: {exc}"
        ) from exc
    if settings.chat_template is not None:
        tokenizer.chat_template = settings.chat_template
    if not tokenizer.chat_template:
        raise BackendUnavailableError(
            f"model '{settings.name}': {path} has no chat template; set `chat_template:` in "
            "its config entry (a Jinja template, e.g. ChatML)"
        )
    adapters = _load_adapters(settings, model, base_dir) if settings.adapters else None
    config = model.config
    max_context = settings.max_model_len or int(
        getattr(config, "max_position_embeddings", None) or 2048
    )
    return LoadedModel(
        model=adapters if adapters is not None else model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        eos_token_ids=_eos_token_ids(model, tokenizer),
        max_context=max_context,
        vocab_size=int(model.get_output_embeddings().weight.shape[0]),
        sampling_defaults=_sampling_defaults(path),
        adapters=tuple(a.name for a in settings.adapters),
        converted_from_gguf=converted,
    )


def load_pretrained(
    settings: TransformersSettings,
    path: Path,
    device: str,
    dtype: str,
    auto_class: str = "AutoModelForCausalLM",
) -> tuple[Any, Any]:
    """The tokenizer and model (``auto_class`` of transformers: ``AutoModelForCausalLM`` to
    generate, ``AutoModel`` to embed) from ``path``, in ``dtype``, on ``device`` (or spread by
    ``device_map``), in eval mode."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=settings.trust_remote_code)
    kwargs: dict[str, Any] = {
        "dtype": getattr(torch, dtype),
        "trust_remote_code": settings.trust_remote_code,
    }
    if settings.attn_implementation is not None:
        kwargs["attn_implementation"] = settings.attn_implementation
    if settings.device_map is not None:
        kwargs["device_map"] = settings.device_map
    model: Any = getattr(transformers, auto_class).from_pretrained(path, **kwargs)
    if settings.device_map is None:
        model = model.to(device)
    model.eval()
    return tokenizer, model


def converted_gguf(
    settings: TransformersSettings, gguf: Path, dtype: str, cache_dir: Path
) -> tuple[Path, bool]:
    """The cached plain folder for ``gguf`` (converting it first if needed); True if it was
    converted now."""
    import transformers

    stat = gguf.stat()
    version = transformers.__version__
    identity = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{dtype}|{version}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    folder = cache_dir / "gguf-converted" / f"{gguf.stem}-{dtype}-{key}"
    if (folder / "config.json").is_file():
        return folder, False
    log.info("model %s: converting %s once, into %s", settings.name, gguf, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _convert_gguf(gguf, staging, dtype, settings.trust_remote_code)
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / "config.json").is_file():  # not a concurrent conversion: real error
                raise
    except Exception as exc:
        raise BackendUnavailableError(
            f"model '{settings.name}': converting {gguf} for transformers failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder, True


def _convert_gguf(gguf: Path, target: Path, dtype: str, trust_remote_code: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=getattr(torch, dtype),
        trust_remote_code=trust_remote_code,
    )
    # The GGUF loader marks the model as quantized, but its weights are already dense:
    # save_pretrained refuses a "quantized" model until both markers are gone.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def _load_adapters(settings: TransformersSettings, model: Any, base_dir: Path | None) -> Any:
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise BackendUnavailableError(
            f"model '{settings.name}': adapters need peft (pip install 'llmgate[transformers]')"
        ) from exc
    wrapped: Any = None
    for adapter in settings.adapters:
        path = resolve_source(adapter.name, adapter.source, base_dir)
        try:
            if wrapped is None:
                wrapped = PeftModel.from_pretrained(model, path, adapter_name=adapter.name)
            else:
                wrapped.load_adapter(path, adapter_name=adapter.name)
        except Exception as exc:
            raise BackendUnavailableError(
                f"model '{settings.name}': adapter '{adapter.name}' failed to load from "
                f"{path}: {type(exc).__name__}: {exc}"
            ) from exc
    wrapped.eval()
    return wrapped


def _eos_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def _sampling_defaults(path: Path) -> dict[str, float]:
    """Sampling values the model's authors set in generation_config.json (only those)."""
    try:
        data = json.loads((path / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {
        key: float(data[key])
        for key in _SAMPLING_DEFAULTS
        if isinstance(data.get(key), int | float) and not isinstance(data.get(key), bool)
    }
