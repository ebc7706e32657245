"""The llama.cpp engine: one ``llama_cpp.Llama`` and its decode loop, on one worker thread.

A ``Llama`` is not thread-safe, so every generation runs on the engine's ``SerialWorker`` (one
thread, bounded FIFO queue: a full queue is a 429, never a hang). Rendering the chat template
and tokenizing only read the vocabulary, so they run before the request queues.

We drive ``Llama.generate`` (token by token) rather than ``create_completion`` so that usage
counts are exact, stop strings never leak, prefill is interruptible, and cancellation is
checked on every token.

LoRA adapters (``backends.llama_cpp.adapters``) are loaded with the model; each request
decodes with its own adapter, or none, set on the worker thread before its prefill.
"""

from __future__ import annotations

import codecs
import ctypes
import math
import secrets
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

from backends.events import Event, Started, TokenLogprob, TopToken, Usage
from backends.llama_cpp.adapters import LoraAdapters, LoraFile
from backends.llama_cpp.settings import LlamaCppSettings
from backends.local.bridge import StopSignal
from backends.local.engine import EngineStats
from backends.local.grammar import GrammarVocabulary, TokenConstraint
from backends.local.output import ChoiceOutput
from backends.local.plan import EngineLimits, GenerationPlan
from backends.local.serial_worker import SerialWorker

# llama.cpp server's sampling defaults, used where the request leaves a knob unset.
SAMPLING_DEFAULTS = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05}


class LlamaCppEngine:
    """A loaded GGUF (see the module docstring). ``submit`` relays the request's events from
    the worker thread; ``aclose`` frees the model after the running request."""

    def __init__(
        self, llm: Any, settings: LlamaCppSettings, loras: Sequence[LoraFile] = ()
    ) -> None:
        self._llm = llm
        self._settings = settings
        self._formatter, self._template = _build_formatter(llm, settings)
        self._specials = _special_tokens(llm)
        self._adapters = LoraAdapters(llm, loras)  # nothing after this fails: no leak on error
        self._worker = SerialWorker(settings.name, settings.max_queue)
        self.stats = EngineStats()
        self.limits = EngineLimits(
            context_window=llm.n_ctx(),
            vocab_size=llm.n_vocab(),
            sampling_defaults=SAMPLING_DEFAULTS,
            default_seed=settings.seed,
        )
        self._grammar = GrammarVocabulary(
            lambda: _grammar_tokenizer(self._llm, self.limits.vocab_size)
        )

    @classmethod
    def load(
        cls, path: Path, settings: LlamaCppSettings, loras: Sequence[LoraFile] = ()
    ) -> LlamaCppEngine:
        """Load the GGUF at ``path`` and the LoRA adapters ``loras`` (blocking). Raises
        ``ValueError`` naming an adapter llama.cpp refuses (the model is freed again)."""
        from llama_cpp import Llama

        kwargs: dict[str, Any] = {
            "model_path": str(path),
            "n_ctx": settings.n_ctx,
            "n_gpu_layers": settings.n_gpu_layers,
            "n_batch": settings.n_batch,
            "verbose": False,
        }
        if settings.n_threads is not None:
            kwargs["n_threads"] = settings.n_threads
        if settings.n_threads_batch is not None:
            kwargs["n_threads_batch"] = settings.n_threads_batch
        if settings.flash_attn:
            kwargs["flash_attn"] = True
        if settings.chat_format is not None:
            kwargs["chat_format"] = settings.chat_format
        llm = Llama(**kwargs)
        try:
            return cls(llm, settings, loras)
        except BaseException:
            llm.close()
            raise

    @property
    def waiting(self) -> int:
        return self._worker.waiting

    async def aclose(self) -> None:
        """Fail the requests still queued (503), let the running one finish, free the model."""
        self._worker.close()
        await self._worker.run(self._free)
        self._worker.shutdown()

    def _free(self) -> None:
        self._adapters.free()
        close = getattr(self._llm, "close", None)
        if close is not None:
            close()
        self._llm = None

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
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    @property
    def special_tokens(self) -> Mapping[str, int]:
        return self._specials

    def grammar_tokenizer(self) -> Any:
        return self._grammar.get()

    # -- on the worker thread ---------------------------------------------------------------

    def submit(self, plan: GenerationPlan) -> AsyncIterator[Event]:
        return self._worker.stream(lambda stop: self._generate(plan, stop))

    def _generate(self, plan: GenerationPlan, stop: StopSignal) -> Generator[Event, None, None]:
        self.stats.requests_started += 1
        finished = False
        total = 0
        try:
            if self._adapters.use(plan.adapter):
                self._llm.reset()  # the cached prefix was computed under another adapter
            for index in range(plan.n):
                yield Started(index)
                if not self._prefill(plan.prompt, stop):
                    return
                output = yield from self._decode(plan, index, stop)
                total += output.tokens
                if output.reason is None:
                    return
            finished = True
            yield Usage(len(plan.prompt), total)
        finally:
            # Also reached when the consumer closes this generator (GeneratorExit).
            if finished:
                self.stats.requests_finished += 1
            else:
                self.stats.requests_cancelled += 1

    def _prefill(self, prompt: list[int], stop: StopSignal) -> bool:
        """Evaluate the prompt in ``n_batch`` slices, reusing the cached KV prefix; False if
        stopped before the end."""
        llm = self._llm
        cached = llm.input_ids[: llm.n_tokens].tolist()
        prefix = 0
        for a, b in zip(cached, prompt, strict=False):
            if a != b:
                break
            prefix += 1
        # Re-evaluate at least the last prompt token: its logits seed the first sample.
        prefix = min(prefix, len(prompt) - 1)
        if prefix == 0:
            llm.reset()
        llm.n_tokens = prefix
        step = self._settings.n_batch
        for start in range(prefix, len(prompt), step):
            if stop.is_set():
                return False
            batch = prompt[start : start + step]
            llm.eval(batch)
            self.stats.prefill_tokens += len(batch)
        return not stop.is_set()

    def _decode(
        self, plan: GenerationPlan, index: int, stop: StopSignal
    ) -> Generator[Event, None, ChoiceOutput]:
        """One choice; returns its output, whose ``reason`` is None if it was stopped."""
        import llama_cpp

        llm = self._llm
        sampling = plan.sampling.for_choice(index)
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(32)
        llm.set_seed(seed & 0xFFFFFFFF)
        vocab = llm._model.vocab
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        output = ChoiceOutput(
            index,
            plan.stops,
            plan.max_new_tokens,
            sampling.logprobs,
            flush_text=lambda: utf8.decode(b"", final=True),
            spec=plan.spec,
        )
        constraint = plan.grammar.constraint() if plan.grammar is not None else None
        tokens = llm.generate(
            plan.prompt,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            temp=sampling.temperature,
            repeat_penalty=1.0,
            frequency_penalty=sampling.frequency_penalty,
            presence_penalty=sampling.presence_penalty,
            logits_processor=_logits_processor(sampling.logit_bias, constraint),
        )
        try:
            for token in tokens:
                if stop.is_set():
                    return output
                if constraint is not None:
                    constraint.accept(token)
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    yield from output.token(None)
                    return output
                self.stats.tokens_generated += 1
                logprob = self._logprob(token, sampling.top_logprobs) if sampling.logprobs else None
                piece = llm.detokenize([token], special=token in plan.visible)
                yield from output.token(utf8.decode(piece), logprob)
                if output.reason is not None:
                    return output
        finally:
            tokens.close()
        return output

    def _logprob(self, token: int, top: int) -> TokenLogprob:
        """Log-probabilities of the distribution ``token`` was sampled from: the logits of
        the last evaluated position, before sampling transforms (as OpenAI reports)."""
        import llama_cpp
        import numpy as np

        llm = self._llm
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(self.limits.vocab_size,)).astype(np.float64)
        peak = float(logits.max())
        logprobs = logits - (peak + math.log(float(np.exp(logits - peak).sum())))
        alternatives: list[TopToken] = []
        if top:
            best = np.argpartition(-logprobs, top)[:top]
            for tid in sorted(best.tolist(), key=lambda t: -logprobs[t]):
                alternatives.append(self._top(int(tid), float(logprobs[tid])))
        chosen = self._top(token, float(logprobs[token]))
        return TokenLogprob(chosen.token, chosen.logprob, chosen.bytes, tuple(alternatives))

    def _top(self, token: int, logprob: float) -> TopToken:
        raw = self._llm.detokenize([token])
        return TopToken(raw.decode("utf-8", errors="replace"), logprob, bytes(raw))


def _logits_processor(bias: dict[int, float], constraint: TokenConstraint | None) -> Any:
    """``logit_bias`` added, then the grammar's mask applied (disallowed tokens: -inf)."""
    if not bias and constraint is None:
        return None
    from llama_cpp import LogitsProcessorList

    ids = list(bias)
    values = [bias[i] for i in ids]

    def apply(_input_ids: Any, scores: Any) -> Any:
        if ids:
            scores[ids] += values
        if constraint is not None:
            scores[~constraint.allowed()] = -math.inf
        return scores

    return LogitsProcessorList([apply])


def _token_kinds(llm: Any) -> list[tuple[bytes, bool]]:
    """Every token's bytes, and whether llguidance treats it as special: control tokens, and
    user-defined ones that look like ``<...>`` (the rule of ``llguidance.llamacpp``)."""
    import llama_cpp

    vocab = llm._model.vocab
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


def _special_tokens(llm: Any) -> dict[str, int]:
    """Text -> id of the vocabulary's special tokens (as llguidance sees them)."""
    found: dict[str, int] = {}
    for token, (piece, special) in enumerate(_token_kinds(llm)):
        if special and piece:
            found.setdefault(piece.decode("utf-8", errors="replace"), token)
    return found


def _grammar_tokenizer(llm: Any, vocab_size: int) -> Any:
    """The vocabulary as llguidance reads it (about a second for a 150k vocabulary)."""
    import llama_cpp
    from llguidance import LLTokenizer

    vocab = llm._model.vocab
    tokens = [b"\xff" + piece if special else piece for piece, special in _token_kinds(llm)]
    tokens += [b""] * (vocab_size - len(tokens))
    eog = [t for t in range(len(tokens)) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    tokenize = ctypes.cast(llama_cpp.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
    build: Any = LLTokenizer.from_llamacpp  # type: ignore[attr-defined]  # not in its stubs
    return build(
        tokens=tokens, vocab_ptr=vocab, tokenize_fptr=tokenize, eos_token=eog or llm.token_eos()
    )


def _build_formatter(llm: Any, settings: LlamaCppSettings) -> tuple[Any, str | None]:
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
        template = llm.metadata.get("tokenizer.chat_template")
    if template is None:
        raise ValueError(
            "the GGUF has no chat template (tokenizer.chat_template); set chat_template "
            "or chat_format in this model's config entry"
        )

    def token_text(token_id: int) -> str:
        if token_id < 0:
            return ""
        return str(llm._model.token_get_text(token_id))

    formatter = llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=token_text(llm.token_eos()),
        bos_token=token_text(llm.token_bos()),
    )
    return formatter, template
