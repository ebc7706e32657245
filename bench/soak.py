"""Soak: many concurrent streams for a minute through one gateway process, watching its memory.

Three processes on loopback: a fast fake OpenAI upstream (bench/passthrough.py's aiohttp
server, 64-chunk SSE streams), the gateway (`python -m gateway serve`: the model `bench`
relayed to that upstream, and `tiny`, the tests' tiny random-weight GGUF in-process on
llama.cpp) and this load generator (aiohttp). Two phases, one after the other:

1. `--upstream-streams` clients (default 200), each looping: stream a chat from `bench`, read to
   `data: [DONE]`;
2. `--tiny-streams` clients (default 16) doing the same against `tiny` (`max_tokens` 32).

Each phase warms up for `--warmup` seconds, then is measured for `--seconds`. Every second the
gateway process's RSS is sampled (psutil, else /proc/<pid>/status VmRSS). An error is a status
other than 200, an error frame, a stream without `[DONE]`, or a client exception. We report
completed streams, errors, throughput, and RSS at the start of the measured minute against its
end (growth; the target is < 10 %) and its peak.

    python bench/soak.py [--seconds 60] [--warmup 10] [--upstream-streams 200] [--tiny-streams 16]

Not run in CI. Results and how they were taken: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from passthrough import UPSTREAM, cpu_seconds, free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.tiny_gguf import write_tiny_gguf  # noqa: E402

CHUNKS = 64
TINY_MAX_TOKENS = 32


def rss_bytes(pid: int) -> int:
    try:
        import psutil
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for pid {pid}") from None
    return int(psutil.Process(pid).memory_info().rss)


@dataclass
class Tally:
    streams: int = 0
    chunks: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def one_stream(session: aiohttp.ClientSession, url: str, body: bytes, tally: Tally) -> None:
    headers = {"Content-Type": "application/json"}
    try:
        async with session.post(url, data=body, headers=headers) as reply:
            if reply.status != 200:
                tally.error(f"status {reply.status}")
                await reply.read()
                return
            chunks, done = 0, False
            async for line in reply.content:
                if not line.startswith(b"data: "):
                    continue
                if line.strip() == b"data: [DONE]":
                    done = True
                elif b'"error"' in line[:16]:
                    tally.error("error frame")
                else:
                    chunks += 1
            if not done:
                tally.error("no [DONE]")
                return
            tally.streams += 1
            tally.chunks += chunks
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.error(type(exc).__name__)


async def phase(
    name: str, url: str, model: str, clients: int, warmup: float, seconds: float, pid: int
) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    if model == "tiny":
        body["max_tokens"] = TINY_MAX_TOKENS
    data = json.dumps(body).encode()
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=clients)
    warm, measured = Tally(), Tally()
    current = warm
    stop_at = time.monotonic() + warmup + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop_at:
            await one_stream(session, url, data, current)

    samples: list[tuple[float, int]] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(client(session)) for _ in range(clients)]
        await asyncio.sleep(warmup)
        current = measured
        began, cpu_before = time.monotonic(), cpu_seconds(pid)
        while time.monotonic() < stop_at:
            samples.append((time.monotonic() - began, rss_bytes(pid)))
            await asyncio.sleep(1)
        await asyncio.gather(*tasks)  # the streams under way finish (and count)
        ended, cpu = time.monotonic(), cpu_seconds(pid) - cpu_before
        samples.append((ended - began, rss_bytes(pid)))
    first, last = samples[0][1], samples[-1][1]
    return {
        "phase": name,
        "clients": clients,
        "seconds": ended - began,
        "streams": measured.streams,
        "streams_per_s": measured.streams / (ended - began),
        "chunks_per_s": measured.chunks / (ended - began),
        "errors": sum(measured.errors.values()) + sum(warm.errors.values()),
        "error_kinds": {**warm.errors, **measured.errors},
        "gateway_cpu_share": cpu / (ended - began),
        "rss_start_mib": first / 2**20,
        "rss_end_mib": last / 2**20,
        "rss_peak_mib": max(rss for _, rss in samples) / 2**20,
        "rss_growth_pct": (last - first) * 100 / first,
    }


def gateway_config(upstream_port: int, tiny: Path) -> str:
    return (
        "server: {log_level: warning}\n"
        "models:\n"
        "  - name: bench\n"
        "    backend: openai\n"
        f"    base_url: http://127.0.0.1:{upstream_port}/v1\n"
        "    upstream_model: upstream-model\n"
        "    health_check_interval: 0\n"
        "    max_connections: 256\n"
        "  - name: tiny\n"
        "    backend: llama_cpp\n"
        f"    source: {tiny}\n"
        "    n_threads: 1\n"
    )


async def main(args: argparse.Namespace) -> list[dict]:
    upstream_port, gateway_port = free_port(), free_port()
    workdir = Path(tempfile.mkdtemp())
    tiny = write_tiny_gguf(workdir / "tiny.gguf")
    config = workdir / "config.yaml"
    config.write_text(gateway_config(upstream_port, tiny))
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(upstream_port), str(CHUNKS)])
    gateway = subprocess.Popen(
        [
            *(sys.executable, "-m", "gateway", "serve", "--config", str(config)),
            *("--port", str(gateway_port), "--log-level", "warning"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        await wait_ready(f"http://127.0.0.1:{upstream_port}/v1/models")
        await wait_ready(f"http://127.0.0.1:{gateway_port}/health", timeout=120)
        url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        return [
            await phase(
                f"{CHUNKS}-chunk upstream streams",
                url,
                "bench",
                args.upstream_streams,
                args.warmup,
                args.seconds,
                gateway.pid,
            ),
            await phase(
                f"tiny GGUF streams ({TINY_MAX_TOKENS} tokens)",
                url,
                "tiny",
                args.tiny_streams,
                args.warmup,
                args.seconds,
                gateway.pid,
            ),
        ]
    finally:
        for proc in (gateway, upstream):
            proc.terminate()
            proc.wait(10)


def report(rows: list[dict], load_before: str) -> str:
    lines = [
        f"load average before the run: {load_before}",
        "",
        "| phase | clients | measured s | streams | streams/s | chunks/s | errors "
        "| gateway CPU (cores) | RSS start MiB | RSS end MiB | RSS peak MiB | RSS growth |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['phase']} | {r['clients']} | {r['seconds']:.0f} | {r['streams']} "
            f"| {r['streams_per_s']:.1f} | {r['chunks_per_s']:.0f} | {r['errors']} "
            f"| {r['gateway_cpu_share']:.2f} | {r['rss_start_mib']:.1f} | {r['rss_end_mib']:.1f} "
            f"| {r['rss_peak_mib']:.1f} | {r['rss_growth_pct']:+.1f} % |"
        )
    for r in rows:
        if r["errors"]:
            lines.append(f"errors in {r['phase']}: {r['error_kinds']}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--upstream-streams", type=int, default=200)
    parser.add_argument("--tiny-streams", type=int, default=16)
    arguments = parser.parse_args()
    load_before = Path("/proc/loadavg").read_text().split(" ", 3)[:3]
    rows = asyncio.run(main(arguments))
    print(json.dumps(rows, indent=1))
    print(report(rows, " ".join(load_before)))
