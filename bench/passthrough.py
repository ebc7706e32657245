"""Gateway overhead through the `openai` (OpenAI-compatible relay) backend.

Three processes on loopback: a fast fake upstream (aiohttp, canned replies), the gateway
(`python -m gateway serve`, one model relayed to that upstream), and this load generator
(aiohttp client). Each scenario runs once straight to the upstream and once through the
gateway; we report p50 latency, the p50 the gateway adds, requests/s, and the gateway
process's own CPU time per request (its threads' time on a CPU, /proc/<pid>/task/*/schedstat,
in ns), and for streams the CPU per relayed chunk: (stream CPU per request - the same round's
non-stream c=1 CPU per request) / chunks per request.

    python bench/passthrough.py [--requests 2000] [--chunks 64]

To compare this tree with others (e.g. a ``git worktree`` of an older commit), side by side in
one run: ``--compare /tmp/before [--rounds 3]``. Every tree's gateway runs at once (idle ones
cost nothing); each scenario then loads the gateways in turn, round after round, so that noise
from other processes falls on all of them alike. The report gives each figure's range over the
rounds and the ratio of the medians (this tree / the other). ``--only c=1`` runs only the
scenarios whose name contains that text; ``--json FILE`` keeps every row.

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
    """The process's CPU time: its threads' time on a CPU in ns (schedstat) where the kernel
    has it, else utime + stime in clock ticks (10 ms steps)."""
    try:
        return (
            sum(
                int((task / "schedstat").read_text().split()[0])
                for task in Path(f"/proc/{pid}/task").iterdir()
            )
            / 1e9
        )
    except (OSError, ValueError):
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


SCENARIOS = (("non-stream c=1", False, 1), ("non-stream c=32", False, 32))
STREAM_SCENARIOS = (("stream c=1", True, 1), ("stream c=32", True, 32))


async def measure(url: str, pid: int, stream: bool, concurrency: int, total: int) -> dict:
    """One load of ``total`` requests on the gateway ``pid`` serving ``url``."""
    cpu_before = cpu_seconds(pid)
    result = await load(url, stream, concurrency, total)
    cpu = cpu_seconds(pid) - cpu_before
    return {
        "p50_ms": result.p50_ms,
        "rps": result.rps,
        "cpu_ms_per_req": cpu * 1000 / total,
        "chunks_per_req": result.chunks / total if stream else 0,
    }


def start_gateway(tree: Path, upstream_port: int) -> tuple[subprocess.Popen, str]:
    """``python -m gateway serve`` from ``tree``, one model relayed to the fake upstream."""
    port = free_port()
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
    command = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    command += ["--port", str(port), "--log-level", "warning"]
    gateway = subprocess.Popen(command, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)})
    return gateway, f"http://127.0.0.1:{port}"


async def main(args: argparse.Namespace) -> dict[str, list[dict]]:
    """Rows per tree (``"direct"``: the upstream itself): one per scenario and round."""
    trees = [ROOT, *(Path(t).resolve() for t in args.compare)]
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-c", UPSTREAM, str(upstream_port), str(args.chunks)]
    )
    gateways = {str(tree): start_gateway(tree, upstream_port) for tree in trees}
    try:
        await wait_ready(f"http://127.0.0.1:{upstream_port}/v1/models")
        for _, base in gateways.values():
            await wait_ready(f"{base}/health")
        targets = {"direct": (f"http://127.0.0.1:{upstream_port}", upstream.pid)}
        targets |= {name: (base, proc.pid) for name, (proc, base) in gateways.items()}
        rows: dict[str, list[dict]] = {name: [] for name in targets}
        for name, stream, concurrency in (*SCENARIOS, *STREAM_SCENARIOS):
            if stream:
                name = f"{args.chunks}-chunk {name}"
            if args.only and not any(part in name for part in args.only):
                continue
            total = args.requests if not stream else max(200, args.requests // 4)
            for base, _ in targets.values():  # warm-up
                await load(f"{base}/v1/chat/completions", stream, concurrency, min(200, total))
            for round_ in range(args.rounds):
                order = list(targets.items())
                if round_ % 2:  # alternate who goes first after the direct run
                    order = [order[0], *reversed(order[1:])]
                for target, (base, pid) in order:
                    url = f"{base}/v1/chat/completions"
                    row = await measure(url, pid, stream, concurrency, total)
                    rows[target].append({"scenario": name, "round": round_, **row})
        return rows
    finally:
        for proc in (*(p for p, _ in gateways.values()), upstream):
            proc.terminate()
            proc.wait(10)


def per_chunk_us(rows: list[dict], row: dict) -> float | None:
    """(stream CPU per request - the same round's non-stream c=1 CPU) / chunks per request."""
    if not row["chunks_per_req"]:
        return None
    base = [r for r in rows if r["scenario"] == "non-stream c=1" and r["round"] == row["round"]]
    if not base:
        return None
    return (row["cpu_ms_per_req"] - base[0]["cpu_ms_per_req"]) * 1000 / row["chunks_per_req"]


def figures(rows: list[dict], scenario: str, key: str) -> list[float]:
    if key == "us_per_chunk":
        values = [per_chunk_us(rows, r) for r in rows if r["scenario"] == scenario]
        return [v for v in values if v is not None]
    return [r[key] for r in rows if r["scenario"] == scenario]


def span(values: list[float], digits: int) -> str:
    if not values:
        return "–"
    low, high = min(values), max(values)
    if len(values) == 1 or f"{low:.{digits}f}" == f"{high:.{digits}f}":
        return f"{low:.{digits}f}"
    return f"{low:.{digits}f}–{high:.{digits}f}"


COLUMNS = (
    ("p50 ms", "p50_ms", 2),
    ("req/s", "rps", 0),
    ("gateway CPU ms/req", "cpu_ms_per_req", 3),
    ("CPU µs/chunk", "us_per_chunk", 1),
)


def report(rows: dict[str, list[dict]]) -> str:
    """One table per gateway tree (ranges over rounds), then the ratios between trees."""
    direct = rows["direct"]
    trees = [name for name in rows if name != "direct"]
    scenarios = list(dict.fromkeys(r["scenario"] for r in direct))
    out = []
    for tree in trees:
        out += [
            f"gateway from {tree} ({max(r['round'] for r in direct) + 1} rounds)",
            "",
            "| scenario | direct p50 ms | gateway p50 ms | added p50 ms | direct req/s "
            "| gateway req/s | gateway CPU ms/req | CPU µs/chunk |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        mine = rows[tree]
        for scenario in scenarios:
            p50 = figures(mine, scenario, "p50_ms")
            direct_p50 = figures(direct, scenario, "p50_ms")
            added = [g - d for g, d in zip(p50, direct_p50, strict=True)]
            out.append(
                f"| {scenario} | {span(direct_p50, 2)} | {span(p50, 2)} | {span(added, 2)} "
                f"| {span(figures(direct, scenario, 'rps'), 0)} "
                f"| {span(figures(mine, scenario, 'rps'), 0)} "
                f"| {span(figures(mine, scenario, 'cpu_ms_per_req'), 3)} "
                f"| {span(figures(mine, scenario, 'us_per_chunk'), 1)} |"
            )
        out.append("")
    if len(trees) > 1:
        first = trees[0]
        for other in trees[1:]:
            out += [
                f"ratio of medians: {first} / {other}",
                "",
                "| scenario | CPU ms/req | CPU µs/chunk | gateway p50 | gateway req/s |",
                "| --- | ---: | ---: | ---: | ---: |",
            ]
            for scenario in scenarios:
                cells = []
                for key in ("cpu_ms_per_req", "us_per_chunk", "p50_ms", "rps"):
                    a, b = figures(rows[first], scenario, key), figures(rows[other], scenario, key)
                    ratio = statistics.median(a) / statistics.median(b) if a and b else None
                    cells.append("–" if ratio is None else f"{ratio:.2f}")
                out.append(f"| {scenario} | {' | '.join(cells)} |")
            out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="TREE",
        help="another checkout of llmgate to measure alongside this one (repeatable)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="loads per gateway and scenario")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only the scenarios whose name contains TEXT (repeatable; e.g. 'c=1')",
    )
    parser.add_argument("--json", type=Path, help="also write every row here")
    arguments = parser.parse_args()
    results = asyncio.run(main(arguments))
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(results, indent=1))
    print(report(results))
