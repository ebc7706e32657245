"""One streamed ``/v1/chat/completions`` request, timed: the helper the GPU benchmarks share.

TTFT is request sent -> first content delta; decode rate is (tokens - 1) / (last content delta
- first); the token counts come from the ``include_usage`` chunk.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Stream:
    ttft: float
    decode_tok_s: float
    prompt_tokens: int
    tokens: int
    done: float  # perf_counter when the stream ended


async def stream_chat(client: httpx.AsyncClient, body: dict[str, Any]) -> Stream:
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    sent = time.perf_counter()
    first = last = -1.0
    tokens = prompt_tokens = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    last = time.perf_counter()
                    first = last if first < 0 else first
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
                prompt_tokens = chunk["usage"]["prompt_tokens"]
    rate = (tokens - 1) / (last - first) if last > first else float("nan")
    return Stream(first - sent, rate, prompt_tokens, tokens, time.perf_counter())
