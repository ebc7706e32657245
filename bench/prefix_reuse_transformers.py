"""Benchmark: prefix reuse in the transformers engine. Turn 3 of a chat whose history is
``--history`` tokens (~1,000), against a cold prefill of a prompt just as long.

The gateway (``python -m gateway serve``) serves SmolLM2-135M-Instruct, the embedded GGUF
converted once into llmgate's conversion cache (as in bench/transformers.py), in ``--dtype``
with ``--threads`` torch threads and its default ``prefix_cache_tokens`` (8192). Each round:

1. **alone**: chat X, turn 1 = a generated document and a question, turn 2 = a question, each
   answered with ``--reply-tokens`` tokens (EOS biased away; the answers go back as the
   assistant's messages); turn 3's TTFT. Then the same turn-3 messages with another tag at the
   start of the system message (so it shares no prefix with anything cached): a cold prefill
   of the same length. The two turn-3 requests alternate in order from round to round;
2. **interleaved**: chats X and Y turn by turn (X1 Y1 X2 Y2 X3 Y3): the TTFT of X3 and Y3, each
   against its own cold twin.

Every chat carries its own tag ("Chat 0123.") at the start of its system message. TTFT is the
time from sending the request to the first non-empty content delta (``stream: true``, SSE parsed
by hand). The ratio is cached/cold per round; the table gives medians over ``--rounds``.

    PYTHONPATH=. .venv/bin/python bench/prefix_reuse_transformers.py [--threads 1] [--rounds 5]

A benchmark, not a test: it prints markdown and exits 0 unless the gateway fails to start.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's directory comes first on sys.path, and it holds transformers.py:
# drop that entry so `import transformers` finds the real package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402

import httpx  # noqa: E402

REPO = Path(_HERE).parent
MODEL = "smollm2-hf"
SENTENCES = [
    "The harbour town kept its lighthouse lit through every winter storm.",
    "Fishermen mended their nets on the quay while gulls circled overhead.",
    "A narrow road wound from the market square up to the old chapel on the hill.",
    "In spring the orchards behind the mill filled the valley with white blossom.",
    "The schoolteacher kept a logbook of every ship that passed the point.",
    "Merchants brought salt, wool and copper pots on the Thursday boat.",
    "When the fog rolled in, the bell on the breakwater rang every half minute.",
    "The baker's daughter could name every star visible from the harbour wall.",
]


def _bench_transformers() -> ModuleType:
    """bench/transformers.py (its weights and gateway helpers), loaded under another name."""
    spec = importlib.util.spec_from_file_location(
        "bench_transformers", Path(_HERE, "transformers.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def document(tokenizer: object, tokens: int) -> str:
    """Sentences, numbered, until the text is ``tokens`` tokens long."""
    lines: list[str] = []
    while len(tokenizer("\n".join(lines))["input_ids"]) < tokens:  # type: ignore[operator]
        i = len(lines)
        lines.append(f"{i + 1}. {SENTENCES[i % len(SENTENCES)]}")
    return "\n".join(lines)


@dataclass
class Reply:
    text: str
    ttft: float
    prompt_tokens: int


async def send(client: httpx.AsyncClient, messages: list[dict[str, str]], max_tokens: int) -> Reply:
    body = {
        "model": MODEL,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logit_bias": {"0": -100, "2": -100},  # <|endoftext|>, <|im_end|>
    }
    sent = time.perf_counter()
    ttft, pieces, prompt = -1.0, [], 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    if ttft < 0:
                        ttft = time.perf_counter() - sent
                    pieces.append(content)
            if chunk.get("usage"):
                prompt = chunk["usage"]["prompt_tokens"]
    return Reply("".join(pieces), ttft, prompt)


class Chat:
    """One conversation: its tag, its document, the turns so far."""

    QUESTIONS = ("Summarise the document above.", "Which sentence mentions the bell?",
                 "Now list three things the merchants brought.")  # fmt: skip

    def __init__(self, tag: str, doc: str) -> None:
        self.doc = doc
        self.messages = self.opening(tag)

    def opening(self, tag: str) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": f"Chat {tag}. You are a helpful assistant."},
            {"role": "user", "content": f"{self.doc}\n\n{self.QUESTIONS[0]}"},
        ]

    def cold_twin(self, tag: str) -> list[dict[str, str]]:
        """These messages with another tag: as long, sharing no cached prefix."""
        return self.opening(tag) + self.messages[2:]

    async def turn(self, client: httpx.AsyncClient, tokens: int) -> Reply:
        reply = await send(client, self.messages, tokens)
        question = self.QUESTIONS[min(len(self.messages) // 2, len(self.QUESTIONS) - 1)]
        self.messages += [{"role": "assistant", "content": reply.text},
                          {"role": "user", "content": question}]  # fmt: skip
        return reply


@dataclass
class Pair:
    scenario: str
    prompt_tokens: int
    cached: float
    cold: float


async def measure_turn3(client: httpx.AsyncClient, chat: Chat, cold_tag: str, cached_first: bool,
                        scenario: str) -> Pair:  # fmt: skip
    """Turn 3 of ``chat`` and its cold twin, in the given order."""
    if cached_first:
        cached = await send(client, chat.messages, 8)
        cold = await send(client, chat.cold_twin(cold_tag), 8)
    else:
        cold = await send(client, chat.cold_twin(cold_tag), 8)
        cached = await send(client, chat.messages, 8)
    return Pair(scenario, cached.prompt_tokens, cached.ttft, cold.ttft)


async def one_round(url: str, r: int, doc: str, reply_tokens: int) -> list[Pair]:
    pairs = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        x = Chat(f"{r:02d}00", doc)
        for _ in range(2):
            await x.turn(client, reply_tokens)
        pairs.append(await measure_turn3(client, x, f"{r:02d}01", r % 2 == 0, "alone"))
        x, y = Chat(f"{r:02d}10", doc), Chat(f"{r:02d}20", doc)
        for _ in range(2):
            await x.turn(client, reply_tokens)
            await y.turn(client, reply_tokens)
        pairs.append(await measure_turn3(client, x, f"{r:02d}11", r % 2 == 1, "interleaved"))
        pairs.append(await measure_turn3(client, y, f"{r:02d}21", r % 2 == 0, "interleaved"))
    return pairs


def start_gateway(helpers: ModuleType, tmp: Path, folder: Path, args: argparse.Namespace):
    port = helpers.free_port()
    config = tmp / "bench-config.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {port}, log_level: warning}}\n"
        "models:\n"
        f"  - name: {MODEL}\n"
        "    backend: transformers\n"
        f"    source: {folder}\n"
        f"    dtype: {args.dtype}\n"
        "    device: cpu\n"
        f"    torch_threads: {args.threads}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = helpers.Server("llmgate", process, f"http://127.0.0.1:{port}", MODEL, True)
    helpers.wait_ready(server, "/health")
    return server


def report(pairs: list[Pair], args: argparse.Namespace) -> str:
    lines = [
        f"SmolLM2-135M-Instruct, {args.dtype}, torch threads {args.threads}, replies of "
        f"{args.reply_tokens} tokens, {args.rounds} rounds (medians; ratio: per round)",
        "",
        "| scenario | turn-3 prompt tokens | TTFT turn 3 (s) | TTFT cold, same length (s) | "
        "ratio | <= 0.3 |",
        "|---|---|---|---|---|---|",
    ]
    for scenario in ("alone", "interleaved"):
        rows = [p for p in pairs if p.scenario == scenario]
        ratio = statistics.median(p.cached / p.cold for p in rows)
        lines.append(
            f"| {scenario} | {statistics.median(p.prompt_tokens for p in rows):.0f} | "
            f"{statistics.median(p.cached for p in rows):.3f} | "
            f"{statistics.median(p.cold for p in rows):.3f} | {ratio:.2f} | "
            f"{'yes' if ratio <= 0.3 else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=1000, help="turn 3's prompt, in tokens")
    parser.add_argument("--reply-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from backends.transformers.loading import default_cache_dir

    helpers = _bench_transformers()
    folder = helpers.converted_folder(args.dtype, args.cache_dir or default_cache_dir())
    print(f"weights: {folder}", file=sys.stderr)
    # turn 3 = the document, two replies, the template and three short questions
    doc = document(AutoTokenizer.from_pretrained(folder), args.history - 2 * args.reply_tokens - 80)
    pairs: list[Pair] = []
    with tempfile.TemporaryDirectory() as tmp:
        gateway = start_gateway(helpers, Path(tmp), folder, args)
        try:
            asyncio.run(one_round(gateway.url, 99, doc, 8))  # warm-up
            for r in range(args.rounds):
                found = asyncio.run(one_round(gateway.url, r, doc, args.reply_tokens))
                for p in found:
                    print(f"  round {r} {p.scenario}: {p.prompt_tokens} tokens, turn 3 "
                          f"{p.cached:.3f} s, cold {p.cold:.3f} s", file=sys.stderr)  # fmt: skip
                pairs += found
        finally:
            gateway.stop()
    print(report(pairs, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
