"""The llama.cpp engine: one GGUF, one context decoding up to ``parallel`` sequences at once.

The model and its context are driven through llama-cpp-python's low-level API: the context is
made for ``parallel`` sequences, each with its own ``n_ctx`` window (llama.cpp's split KV
cache: ``n_ctx × parallel`` cells, as ``llama-server -c <n_ctx × np> -np <np>``), and the
``SequenceScheduler`` (``backends.llama_cpp.scheduler``) batches them, one ``llama_decode`` a
step, on its own thread. Rendering the chat template and tokenizing only read the vocabulary,
so they run before the request queues.

LoRA adapters (``backends.llama_cpp.adapters``) are loaded with the model; sequences decode
with their request's adapter, or none.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from backends.events import Event
from backends.llama_cpp.adapters import LoraAdapters, LoraFile
from backends.llama_cpp.native import LlamaContextHandles, token_piece
from backends.llama_cpp.scheduler import SequenceScheduler
from backends.llama_cpp.settings import LlamaCppSettings
from backends.local.engine import EngineStats
from backends.local.grammar import GrammarVocabulary
from backends.local.plan import EngineLimits, GenerationPlan
from backends.model_types import ModelPlacement

log = logging.getLogger(__name__)

# llama.cpp's model loading is not thread-safe: two models loading at once in one process
# crashed a CUDA build (seen on an H200, in llama_model_load_from_file), and llama-cpp-python
# redirects the process's stdout and stderr around each load. Loads take turns; nothing else does.
_LOADS = threading.Lock()

# llama.cpp server's sampling defaults, used where the request leaves a knob unset.
SAMPLING_DEFAULTS = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05}

GPU_BUILD_HINT = (
    'for NVIDIA GPUs install a CUDA build: CMAKE_ARGS="-DGGML_CUDA=on" pip install '
    '--force-reinstall --no-cache-dir llama-cpp-python (see the README, "GPUs")'
)


def default_parallel(n_ctx: int, cores: int | None = None) -> int:
    """Sequences decoded at once when ``parallel`` is unset: 4 (as llama-server), fewer on a
    one-core machine or when the cache (``n_ctx × parallel`` tokens) would pass 16,384."""
    cores = cores or os.cpu_count() or 1
    return max(1, min(4, 2 * cores, 16384 // n_ctx))


def layer_placement(model: Any, n_gpu_layers: int, parallel: int) -> ModelPlacement:
    """Where a GGUF's layers run: of its offloadable layers (blocks plus the output layer, as
    llama.cpp counts them), those ``n_gpu_layers`` asks for when the build can offload."""
    import llama_cpp

    layers = int(llama_cpp.llama_model_n_layer(model)) + 1
    on_gpu = 0
    if llama_cpp.llama_supports_gpu_offload():
        on_gpu = min(layers if n_gpu_layers < 0 else n_gpu_layers, layers)
    device = "cpu" if on_gpu == 0 else "gpu" if on_gpu == layers else "gpu+cpu"
    size = int(llama_cpp.llama_model_size(model))
    file_type = gguf_metadata(model, "general.file_type")
    return ModelPlacement(
        device=device,
        layers=layers,
        gpu_layers=on_gpu,
        parallel=parallel,
        weights_bytes=size,
        gpu_bytes=size * on_gpu // layers,
        architecture=gguf_metadata(model, "general.architecture"),
        parameters=int(llama_cpp.llama_model_n_params(model)),
        quantization=GGUF_FILE_TYPES.get(file_type or ""),
        embedding_length=int(llama_cpp.llama_model_n_embd(model)),
    )


# GGUF's ``general.file_type`` (llama.cpp's ``llama_ftype``), as Ollama names quantizations
GGUF_FILE_TYPES = {
    str(number): name
    for number, name in {
        0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
        11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
        17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
        23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
        29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
        38: "MXFP4_MOE",
    }.items()
}  # fmt: skip


def gguf_metadata(model: Any, key: str) -> str | None:
    """A GGUF metadata value of a loaded model, as text (None: the file has no such key)."""
    import llama_cpp

    buffer = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buffer, len(buffer))
    if n < 0:
        return None
    return buffer.value.decode("utf-8", errors="replace")


class LlamaCppEngine:
    """A loaded GGUF (see the module docstring). ``submit`` relays the request's events from
    the scheduler's thread; ``aclose`` fails what still waits, lets the running sequences
    finish, and frees the model."""

    def __init__(
        self,
        model: Any,
        ctx: Any,
        settings: LlamaCppSettings,
        parallel: int,
        loras: Sequence[LoraFile] = (),
    ) -> None:
        import llama_cpp

        self._model = model  # llama_cpp._internals.LlamaModel
        self._ctx = ctx  # llama_cpp._internals.LlamaContext
        self._settings = settings
        self.parallel = parallel
        self._formatter, self._template = _build_formatter(model, settings)
        self._specials = _special_tokens(model)
        self.placement = layer_placement(model.model, settings.n_gpu_layers, parallel)
        self.stats = EngineStats()
        window = int(llama_cpp.llama_n_ctx_seq(ctx.ctx))
        self.limits = EngineLimits(
            context_window=min(settings.n_ctx, window),
            vocab_size=model.n_vocab(),
            sampling_defaults=SAMPLING_DEFAULTS,
            default_seed=settings.seed,
        )
        self._grammar = GrammarVocabulary(lambda: _grammar_tokenizer(model, self.limits.vocab_size))
        self._adapters = LoraAdapters(model.model, ctx.ctx, loras)
        handles = LlamaContextHandles(
            ctx=ctx.ctx,
            memory=llama_cpp.llama_get_memory(ctx.ctx),
            vocab=model.vocab,
            vocab_size=self.limits.vocab_size,
            piece=token_piece(model.vocab),
        )
        # Nothing after this fails: the scheduler's thread starts last.
        self._scheduler = SequenceScheduler(
            settings.name,
            handles,
            self._adapters,
            parallel=parallel,
            n_batch=settings.n_batch,
            max_queue=settings.max_queue,
            stats=self.stats,
        )

    @classmethod
    def load(
        cls, path: Path, settings: LlamaCppSettings, loras: Sequence[LoraFile] = ()
    ) -> LlamaCppEngine:
        """Load the GGUF at ``path`` and the LoRA adapters ``loras`` (blocking). Raises
        ``ValueError`` naming an adapter llama.cpp refuses (the model is freed again)."""
        import llama_cpp
        from llama_cpp._logger import set_verbose

        set_verbose(False)  # llama.cpp's own log goes to stderr only at ERROR
        with _LOADS:
            llama_cpp.llama_backend_init()
            return cls._load(path, settings, loras)

    @classmethod
    def _load(
        cls, path: Path, settings: LlamaCppSettings, loras: Sequence[LoraFile]
    ) -> LlamaCppEngine:
        import llama_cpp
        from llama_cpp import _internals

        if settings.n_gpu_layers != 0 and not llama_cpp.llama_supports_gpu_offload():
            log.warning(
                "model '%s' asks for n_gpu_layers=%d, but this llama-cpp-python build cannot "
                "offload to a GPU: every layer runs on the CPU; %s",
                settings.name,
                settings.n_gpu_layers,
                GPU_BUILD_HINT,
            )
        model_params = llama_cpp.llama_model_default_params()
        layers = settings.n_gpu_layers
        model_params.n_gpu_layers = 0x7FFFFFFF if layers < 0 else layers  # -1: all of them
        model = _internals.LlamaModel(path_model=str(path), params=model_params, verbose=False)
        try:
            parallel = settings.parallel or default_parallel(settings.n_ctx)
            ctx = _internals.LlamaContext(
                model=model, params=_context_params(settings, parallel), verbose=False
            )
            return cls(model, ctx, settings, parallel, loras)
        except BaseException:
            model.close()
            raise

    @property
    def waiting(self) -> int:
        return self._scheduler.waiting

    async def aclose(self) -> None:
        """Fail the requests still queued (503), let the running ones finish, free the model."""
        self._scheduler.close()
        await asyncio.to_thread(self._scheduler.join)
        self._adapters.free()
        self._model.close()  # frees its context first

    # -- before the queue (any thread) ------------------------------------------------------

    @property
    def chat_template(self) -> str | None:
        return self._template

    def render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, **options: Any
    ) -> tuple[str, bool]:
        rendered = self._formatter(messages=messages, tools=tools, **options)
        return rendered.prompt, not rendered.added_special

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        return list(self._model.tokenize(text.encode("utf-8"), add_bos, True))

    @property
    def special_tokens(self) -> Mapping[str, int]:
        return self._specials

    def grammar_tokenizer(self) -> Any:
        return self._grammar.get()

    def submit(self, plan: GenerationPlan) -> AsyncIterator[Event]:
        return self._scheduler.submit(plan)


def _context_params(settings: LlamaCppSettings, parallel: int) -> Any:
    """A context of ``parallel`` sequences, each with an ``n_ctx`` window of its own."""
    import llama_cpp

    cores = os.cpu_count() or 1
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = settings.n_ctx * parallel
    params.n_seq_max = parallel
    params.kv_unified = False
    params.n_batch = params.n_ubatch = max(settings.n_batch, parallel)
    params.n_threads = settings.n_threads or max(cores // 2, 1)
    params.n_threads_batch = settings.n_threads_batch or cores
    params.flash_attn_type = {
        None: llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
        True: llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
        False: llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
    }[settings.flash_attn]
    return params


def _token_kinds(model: Any) -> list[tuple[bytes, bool]]:
    """Every token's bytes, and whether llguidance treats it as special: control tokens, and
    user-defined ones that look like ``<...>`` (the rule of ``llguidance.llamacpp``)."""
    import llama_cpp

    vocab = model.vocab
    buffer = ctypes.create_string_buffer(16 * 1024)
    kinds: list[tuple[bytes, bool]] = []
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer) - 1, 0, True)
        piece = buffer.raw[: max(size, 0)]
        attr = llama_cpp.llama_vocab_get_attr(vocab, token)
        special = bool(attr & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL) or bool(
            attr & llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
            and piece.startswith(b"<")
            and piece.endswith(b">")
        )
        kinds.append((piece, special))
    return kinds


def _special_tokens(model: Any) -> dict[str, int]:
    """Text -> id of the vocabulary's special tokens (as llguidance sees them)."""
    found: dict[str, int] = {}
    for token, (piece, special) in enumerate(_token_kinds(model)):
        if special and piece:
            found.setdefault(piece.decode("utf-8", errors="replace"), token)
    return found


def _grammar_tokenizer(model: Any, vocab_size: int) -> Any:
    """The vocabulary as llguidance reads it (about a second for a 150k vocabulary)."""
    import llama_cpp
    from llguidance import LLTokenizer

    vocab = model.vocab
    tokens = [b"\xff" + piece if special else piece for piece, special in _token_kinds(model)]
    tokens += [b""] * (vocab_size - len(tokens))
    eog = [t for t in range(len(tokens)) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    tokenize = ctypes.cast(llama_cpp.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
    build: Any = LLTokenizer.from_llamacpp  # type: ignore[attr-defined]  # not in its stubs
    return build(
        tokens=tokens, vocab_ptr=vocab, tokenize_fptr=tokenize, eos_token=eog or model.token_eos()
    )


def _build_formatter(model: Any, settings: LlamaCppSettings) -> tuple[Any, str | None]:
    """The chat renderer and its Jinja source (None for a llama-cpp-python named format)."""
    from llama_cpp import llama_chat_format

    template = settings.chat_template
    if template is None and settings.chat_format is not None:
        name = settings.chat_format.replace("-", "_").replace(".", "_")
        formatter = getattr(llama_chat_format, f"format_{name}", None)
        if formatter is None:
            raise ValueError(
                f"chat_format {settings.chat_format!r} is not a llama-cpp-python chat format"
            )
        return formatter, None
    if template is None:
        template = model.metadata().get("tokenizer.chat_template")
    if template is None:
        raise ValueError(
            "the GGUF has no chat template (tokenizer.chat_template); set chat_template "
            "or chat_format in this model's config entry"
        )

    def token_text(token_id: int) -> str:
        if token_id < 0:
            return ""
        return str(model.token_get_text(token_id))

    formatter = llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=token_text(model.token_eos()),
        bos_token=token_text(model.token_bos()),
    )
    return formatter, template
