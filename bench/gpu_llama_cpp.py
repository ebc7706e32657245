"""Benchmark on a CUDA GPU: the llama.cpp engine with ``n_gpu_layers: -1`` against the CPU.

One gateway (``python -m gateway serve``) serves the same GGUF twice: ``<name>-gpu`` with every
layer offloaded and ``<name>-cpu`` with none (``--threads`` CPU threads), both with
``parallel: 4``. The run prints what ``/v1/models`` says of each (device, offloaded layers)
and any warning the gateway logged at startup, then, alternating the two models round by
round: one stream and 4 concurrent streams of exactly ``--max-tokens`` tokens (the end tokens
biased away), decode tok/s per stream ((tokens - 1) / (last delta - first delta)), aggregate
tok/s and TTFT. The table shows the median round. It needs a llama-cpp-python built with CUDA:

    CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90" pip install llama-cpp-python
    python3 bench/gpu_llama_cpp.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --eos 0,2

A benchmark, not a test: it prints markdown and exits 0 unless a setup fails.
Results and how they were taken: docs/benchmarks.md.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's directory comes first on sys.path, and bench/ holds a
# llama_cpp.py: drop that entry so `import llama_cpp` finds the real package.
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
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402

sys.path.insert(0, os.path.dirname(_HERE))  # the repository, for bench.chat_stream
from bench.chat_stream import Stream, stream_chat  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gateway(tmp: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    config = tmp / "gpu-llama-cpp.yaml"
    entries = "".join(
        f"  - name: {args.name}-{kind}\n"
        "    backend: llama_cpp\n"
        f"    source: {args.gguf.resolve()}\n"
        f"    n_gpu_layers: {layers}\n"
        f"    n_threads: {args.threads}\n"
        "    parallel: 4\n"
        "    n_ctx: 2048\n"
        for kind, layers in (("gpu", -1), ("cpu", 0))
    )
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {port}, log_level: warning}}\nmodels:\n{entries}"
    )
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        env={**os.environ, "PYTHONPATH": path},
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the gateway exited: {process.stderr.read() if process.stderr else ''}"
            )
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    process.kill()
    raise RuntimeError("the gateway did not become ready")


async def one_stream(
    client: httpx.AsyncClient, model: str, i: int, args: argparse.Namespace
) -> Stream:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Story {i}: write a long story about the sea."}],
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "logit_bias": {e: -100 for e in args.eos.split(",")},
    }
    stream = await stream_chat(client, body)
    if stream.tokens != args.max_tokens:
        raise RuntimeError(f"{model}: {stream.tokens} tokens, expected {args.max_tokens}")
    return stream


async def concurrent(url: str, model: str, n: int, offset: int, args: argparse.Namespace):
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        start = time.perf_counter()
        streams = await asyncio.gather(
            *(one_stream(client, model, offset + i, args) for i in range(n))
        )
    return {
        "aggregate": n * args.max_tokens / (max(s.done for s in streams) - start),
        "decode": statistics.median(s.decode_tok_s for s in streams),
        "ttft": statistics.median(s.ttft for s in streams),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--name", default="smollm2")
    parser.add_argument("--eos", default="0,2", help="token ids biased away (SmolLM2's)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_gateway(Path(tmp), args)
        try:
            cards = httpx.get(url + "/v1/models", timeout=30).json()["data"]
            models = [f"{args.name}-gpu", f"{args.name}-cpu"]
            rows: dict[tuple[str, int], list[dict[str, float]]] = {}
            asyncio.run(concurrent(url, models[0], 1, 999, args))  # warm-up
            asyncio.run(concurrent(url, models[1], 1, 999, args))
            for r in range(args.rounds):
                for model in models if r % 2 == 0 else models[::-1]:
                    for n in (1, 4):
                        result = asyncio.run(concurrent(url, model, n, 100 * r, args))
                        rows.setdefault((model, n), []).append(result)
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=60)
    print(f"llama-cpp-python build: GPU offload = {supports_gpu_offload()}; "
          f"{args.gguf.name}, {args.max_tokens}-token answers, median of {args.rounds} rounds, "
          f"CPU threads {args.threads}")  # fmt: skip
    print("\n/v1/models placement:")
    for card in cards:
        print(f"- {card['id']}: {json.dumps(card.get('placement'))}")
    warned = [line for line in stderr.splitlines() if "WARNING" in line or "warning" in line]
    print(f"\nstartup warnings: {warned or 'none'}\n")
    print("| model | streams | decode tok/s per stream | aggregate tok/s | TTFT p50 (s) |")
    print("|---|---|---|---|---|")
    for (model, n), results in rows.items():
        mid = sorted(results, key=lambda x: x["aggregate"])[len(results) // 2]
        print(f"| {model} | {n} | {mid['decode']:.1f} | {mid['aggregate']:.1f} | "
              f"{mid['ttft']:.3f} |")  # fmt: skip
    for n in (1, 4):
        gpu = statistics.median(x["aggregate"] for x in rows[(models[0], n)])
        cpu = statistics.median(x["aggregate"] for x in rows[(models[1], n)])
        print(f"\n- {n} stream(s): GPU / CPU aggregate = {gpu / cpu:.2f}x")
    return 0


def supports_gpu_offload() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


if __name__ == "__main__":
    sys.exit(main())
