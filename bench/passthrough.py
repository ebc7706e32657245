"""Gateway overhead through the `openai` (OpenAI-compatible relay) backend.

Three processes on loopback: a fast fake upstream (aiohttp, canned replies), the gateway
(`python -m gateway serve`, one model relayed to that upstream), and this load generator
(aiohttp client). Each scenario runs once straight to the upstream and once through the
gateway; we report p50 latency, the p50 the gateway adds, requests/s, and the gateway
process's own CPU time per request (from /proc/<pid>/stat), and for streams the CPU per
relayed chunk.

    python bench/passthrough.py [--requests 2000] [--chunks 64]

Results and how they were taken: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")

UPSTREAM = r"""
import json, sys, time
from aiohttp import web

CHUNKS = int(sys.argv[2])
COMPLETION = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "upstream-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there!"},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
}, separators=(",", ":")).encode()

def chunk(delta, finish=None):
    return b"data: " + json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
        "model": "upstream-model",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }, separators=(",", ":")).encode() + b"\n\n"

STREAM = (chunk({"role": "assistant", "content": ""})
          + b"".join(chunk({"content": f"tok{i} "}) for i in range(CHUNKS - 2))
          + chunk({}, "stop") + b"data: [DONE]\n\n")
EVENTS = [e + b"\n\n" for e in STREAM.split(b"\n\n") if e]

async def chat(request):
    body = await request.json()
    if not body.get("stream"):
        return web.Response(body=COMPLETION, content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for event in EVENTS:
        await response.write(event)
    await response.write_eof()
    return response

async def models(request):
    return web.json_response({"object": "list", "data": [{"id": "upstream-model"}]})

app = web.Application()
app.router.add_post("/v1/chat/completions", chat)
app.router.add_get("/v1/models", models)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


async def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


@dataclass
class Result:
    latencies: list[float]
    seconds: float
    chunks: int

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds


async def load(url: str, stream: bool, concurrency: int, total: int) -> Result:
    body = json.dumps(
        {
            "model": "bench",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
        }
    ).encode()
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    chunks = 0
    todo = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal chunks
            for _ in todo:
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as reply:
                    if reply.status != 200:
                        raise RuntimeError(f"{reply.status}: {await reply.text()}")
                    if stream:
                        async for line in reply.content:
                            if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
                                chunks += 1
                    else:
                        await reply.read()
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return Result(latencies, time.perf_counter() - began, chunks)


async def scenario(name, direct_url, gateway_url, gateway_pid, stream, concurrency, total):
    await load(direct_url, stream, concurrency, min(200, total))  # warm-up
    await load(gateway_url, stream, concurrency, min(200, total))
    direct = await load(direct_url, stream, concurrency, total)
    cpu_before = cpu_seconds(gateway_pid)
    via = await load(gateway_url, stream, concurrency, total)
    cpu = cpu_seconds(gateway_pid) - cpu_before
    per_request_ms = cpu * 1000 / total
    return {
        "scenario": name,
        "direct_p50_ms": direct.p50_ms,
        "gateway_p50_ms": via.p50_ms,
        "added_p50_ms": via.p50_ms - direct.p50_ms,
        "direct_rps": direct.rps,
        "gateway_rps": via.rps,
        "gateway_cpu_ms_per_req": per_request_ms,
        "chunks_per_req": via.chunks / total if stream else 0,
    }


async def main(args: argparse.Namespace) -> list[dict]:
    upstream_port, gateway_port = free_port(), free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-c", UPSTREAM, str(upstream_port), str(args.chunks)]
    )
    config = Path(tempfile.mkdtemp()) / "config.yaml"
    config.write_text(
        "server: {log_level: warning}\n"
        "models:\n"
        "  - name: bench\n"
        "    backend: openai\n"
        f"    base_url: http://127.0.0.1:{upstream_port}/v1\n"
        "    upstream_model: upstream-model\n"
        "    health_check_interval: 0\n"
    )
    gateway = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(config),
            "--port",
            str(gateway_port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        await wait_ready(f"http://127.0.0.1:{upstream_port}/v1/models")
        await wait_ready(f"http://127.0.0.1:{gateway_port}/health")
        direct = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
        via = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        rows = []
        for name, stream, concurrency in (
            ("non-stream c=1", False, 1),
            ("non-stream c=32", False, 32),
            (f"{args.chunks}-chunk stream c=1", True, 1),
            (f"{args.chunks}-chunk stream c=32", True, 32),
        ):
            total = args.requests if not stream else max(200, args.requests // 4)
            rows.append(await scenario(name, direct, via, gateway.pid, stream, concurrency, total))
        return rows
    finally:
        for proc in (gateway, upstream):
            proc.terminate()
            proc.wait(10)


def report(rows: list[dict]) -> str:
    base = next(r for r in rows if r["scenario"] == "non-stream c=1")["gateway_cpu_ms_per_req"]
    lines = [
        "| scenario | direct p50 ms | gateway p50 ms | added p50 ms | direct req/s "
        "| gateway req/s | gateway CPU ms/req | CPU µs/chunk |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        per_chunk = (
            f"{(r['gateway_cpu_ms_per_req'] - base) * 1000 / r['chunks_per_req']:.1f}"
            if r["chunks_per_req"]
            else "–"
        )
        lines.append(
            f"| {r['scenario']} | {r['direct_p50_ms']:.2f} | {r['gateway_p50_ms']:.2f} "
            f"| {r['added_p50_ms']:.2f} | {r['direct_rps']:.0f} | {r['gateway_rps']:.0f} "
            f"| {r['gateway_cpu_ms_per_req']:.3f} | {per_chunk} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=64)
    print(report(asyncio.run(main(parser.parse_args()))))
