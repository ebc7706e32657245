"""The thread side of the llama.cpp backend: one ``llama_cpp.Llama`` and its decode loop.

Every method of ``LlamaCppEngine`` runs on the backend's single worker thread (a ``Llama`` is
not thread-safe). ``generate`` yields typed events and checks the stop signal between prefill
batches and between tokens, so a cancelled request ends within about one decode step.

We drive ``Llama.generate`` (token by token) rather than ``create_completion`` so that usage
counts are exact, stop strings never leak, prefill is interruptible, and cancellation is
checked on every token.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends._threaded import StopSignal
from backends.errors import ContextLengthExceededError, InvalidRequestError
from backends.events import Counted, Event, Finished, Piece, Started
from backends.schemas import FinishReason, TokenLogprob, TopLogprob
from backends.settings import LlamaCppSettings
from backends.stopping import StopSequenceMatcher


@dataclass(frozen=True)
class GenerationPlan:
    """A request translated into llama.cpp terms (built by ``plan_generation``)."""

    messages: list[dict[str, Any]]
    max_new_tokens: int | None
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    seed: int | None
    stops: list[str]
    presence_penalty: float
    frequency_penalty: float
    logit_bias: dict[int, float]
    n: int
    logprobs: bool
    top_logprobs: int
    json_schema: dict[str, Any] | None = None
    json_object: bool = False


@dataclass
class EngineStats:
    """Engine-side counters (read by tests and /health; written by the worker thread)."""

    tokens_generated: int = 0
    prefill_tokens: int = 0
    requests_started: int = 0
    requests_finished: int = 0
    requests_cancelled: int = 0  # ended early: client gone (or the engine failed)


class LlamaCppEngine:
    """Owns one ``Llama``. Not thread-safe: call from the worker thread only."""

    def __init__(self, llm: Any, settings: LlamaCppSettings, stats: EngineStats) -> None:
        self._llm = llm
        self._settings = settings
        self._stats = stats
        self._formatter = _build_formatter(llm, settings)
        self.n_vocab: int = llm.n_vocab()
        self.n_ctx: int = llm.n_ctx()

    @classmethod
    def load(cls, path: Path, settings: LlamaCppSettings, stats: EngineStats) -> LlamaCppEngine:
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
        return cls(Llama(**kwargs), settings, stats)

    def close(self) -> None:
        close = getattr(self._llm, "close", None)
        if close is not None:
            close()
        self._llm = None

    # -- prompt -----------------------------------------------------------------------------

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> list[int]:
        try:
            rendered = self._formatter(messages=messages)
        except Exception as exc:  # jinja errors, raise_exception() in templates
            raise InvalidRequestError(
                f"the chat template of model '{self._settings.name}' rejected these "
                f"messages: {exc}",
                param="messages",
            ) from exc
        return list(
            self._llm.tokenize(
                rendered.prompt.encode("utf-8"),
                add_bos=not rendered.added_special,
                special=True,
            )
        )

    # -- generation -------------------------------------------------------------------------

    def generate(self, plan: GenerationPlan, stop: StopSignal) -> Iterator[Event]:
        prompt = self.prompt_tokens(plan.messages)
        budget = self._budget(len(prompt), plan.max_new_tokens)
        for token_id in plan.logit_bias:
            if token_id >= self.n_vocab:
                raise InvalidRequestError(
                    f"logit_bias token id {token_id} is outside the vocabulary "
                    f"(0..{self.n_vocab - 1})",
                    param="logit_bias",
                )
        grammar = self._grammar(plan)
        self._stats.requests_started += 1
        finished = False
        total = 0
        try:
            for index in range(plan.n):
                yield Started(index)
                if not self._prefill(prompt, stop):
                    return
                seed = None if plan.seed is None else plan.seed + index
                reason, count = yield from self._decode(
                    prompt, budget, plan, index, seed, grammar, stop
                )
                total += count
                if reason is None:
                    return
                yield Finished(index, reason)
            finished = True
            yield Counted(len(prompt), total)
        finally:
            # Also reached when the consumer closes this generator (GeneratorExit).
            if finished:
                self._stats.requests_finished += 1
            else:
                self._stats.requests_cancelled += 1

    def _budget(self, prompt_len: int, requested: int | None) -> int:
        if requested is not None and prompt_len + requested > self.n_ctx:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {self.n_ctx} tokens. However, you "
                f"requested {prompt_len + requested} tokens ({prompt_len} in the messages, "
                f"{requested} in the completion). Please reduce the length of the messages "
                "or completion.",
                param="messages",
            )
        if prompt_len >= self.n_ctx:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {self.n_ctx} tokens. However, your "
                f"messages resulted in {prompt_len} tokens. Please reduce the length of the "
                "messages.",
                param="messages",
            )
        return requested if requested is not None else self.n_ctx - prompt_len

    def _grammar(self, plan: GenerationPlan) -> Any:
        if plan.json_schema is None and not plan.json_object:
            return None
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        try:
            if plan.json_schema is not None:
                return LlamaGrammar.from_json_schema(json.dumps(plan.json_schema), verbose=False)
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        except Exception as exc:
            raise InvalidRequestError(
                f"response_format.json_schema could not be compiled to a grammar: {exc}",
                param="response_format",
            ) from exc

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
            self._stats.prefill_tokens += len(batch)
        return not stop.is_set()

    def _decode(
        self,
        prompt: list[int],
        budget: int,
        plan: GenerationPlan,
        index: int,
        seed: int | None,
        grammar: Any,
        stop: StopSignal,
    ) -> Generator[Piece, None, tuple[FinishReason | None, int]]:
        import llama_cpp

        llm = self._llm
        if seed is not None:
            llm.set_seed(seed & 0xFFFFFFFF)
        else:
            import secrets

            llm.set_seed(secrets.randbits(32))
        vocab = llm._model.vocab
        matcher = StopSequenceMatcher(plan.stops)
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending: list[TokenLogprob] | None = [] if plan.logprobs else None
        count = 0
        reason: FinishReason = "length"
        tokens = llm.generate(
            prompt,
            top_k=plan.top_k,
            top_p=plan.top_p,
            min_p=plan.min_p,
            temp=plan.temperature,
            repeat_penalty=1.0,
            frequency_penalty=plan.frequency_penalty,
            presence_penalty=plan.presence_penalty,
            logits_processor=_logit_bias_processor(plan.logit_bias),
            grammar=grammar,
        )
        try:
            for token in tokens:
                if stop.is_set():
                    return None, count
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    reason = "stop"
                    break
                count += 1
                self._stats.tokens_generated += 1
                if pending is not None:
                    pending.append(self._logprob(token, plan.top_logprobs))
                emit, hit = matcher.feed(utf8.decode(llm.detokenize([token])))
                if emit:
                    yield Piece(index, emit, pending)
                    pending = [] if pending is not None else None
                if hit:
                    return "stop", count
                if count >= budget:
                    break
        finally:
            tokens.close()
        tail = matcher.feed(utf8.decode(b"", final=True))[0] + matcher.flush()
        if tail or pending:
            yield Piece(index, tail, pending)
        return reason, count

    def _logprob(self, token: int, top: int) -> TokenLogprob:
        """Log-probabilities of the distribution ``token`` was sampled from: the logits of
        the last evaluated position, before sampling transforms (as OpenAI reports)."""
        import llama_cpp
        import numpy as np

        llm = self._llm
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64)
        peak = float(logits.max())
        logprobs = logits - (peak + math.log(float(np.exp(logits - peak).sum())))
        alternatives: list[TopLogprob] = []
        if top:
            best = np.argpartition(-logprobs, top)[:top]
            for tid in sorted(best.tolist(), key=lambda t: -logprobs[t]):
                alternatives.append(self._top(int(tid), float(logprobs[tid])))
        chosen = self._top(token, float(logprobs[token]))
        return TokenLogprob(
            token=chosen.token,
            logprob=chosen.logprob,
            bytes=chosen.bytes,
            top_logprobs=alternatives,
        )

    def _top(self, token: int, logprob: float) -> TopLogprob:
        raw = self._llm.detokenize([token])
        return TopLogprob(
            token=raw.decode("utf-8", errors="replace"), logprob=logprob, bytes=list(raw)
        )


def _logit_bias_processor(bias: dict[int, float]) -> Any:
    if not bias:
        return None
    from llama_cpp import LogitsProcessorList

    ids = list(bias)
    values = [bias[i] for i in ids]

    def apply(_input_ids: Any, scores: Any) -> Any:
        scores[ids] += values
        return scores

    return LogitsProcessorList([apply])


def _build_formatter(llm: Any, settings: LlamaCppSettings) -> Any:
    from llama_cpp import llama_chat_format

    template = settings.chat_template
    if template is None and settings.chat_format is not None:
        name = settings.chat_format.replace("-", "_").replace(".", "_")
        formatter = getattr(llama_chat_format, f"format_{name}", None)
        if formatter is None:
            raise ValueError(
                f"chat_format {settings.chat_format!r} is not a llama-cpp-python chat format"
            )
        return formatter
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

    return llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=token_text(llm.token_eos()),
        bos_token=token_text(llm.token_bos()),
    )
