"""Benchmark on a CUDA GPU: the transformers engine serving an 8B-class Llama in bf16.

The model has Llama-3.1-8B's shape (32 layers, hidden 4096, MLP 14336, 32 query and 8 KV
heads, a vocabulary of 128,256: 8.03 B parameters, 16.1 GB in bf16) and random weights drawn
on the GPU, so nothing is downloaded. Its tokenizer is a word-level one over the same 128,256
ids (``w0`` ... ``w127999`` and Llama 3's special tokens at their real ids) with Llama 3.1's
chat template (``tests/templates/llama3.1.jinja``). Every prompt is 100 random words, so every
request prefills the same number of tokens and none shares more than the template's prefix.

One run measures, in this order:

1. the GPU's memory bandwidth: a device-to-device copy, bytes read + written / time;
2. raw ``model.generate`` (greedy, ``min_new_tokens`` = ``max_new_tokens``) on the same weights
   in this process: one prompt, then a left-padded batch of the largest concurrency;
3. llmgate: ``python -m gateway serve`` with that folder as one ``transformers`` model
   (``device: cuda``, ``dtype: bfloat16``, ``max_batch_size`` = the largest concurrency),
   ``--concurrency`` streams sent at once over HTTP, exactly ``--max-tokens`` each (the end
   tokens biased away with ``logit_bias``), ``--rounds`` rounds after one warm-up.

Per stream: TTFT (request sent -> first content delta) and decode rate ((tokens - 1) / (last
delta - first delta)). Per round: aggregate tok/s = all completion tokens / (last stream done
- first request sent), which includes the prefills. The table shows the median round.

The bandwidth bound of one stream: a decode step reads every weight once except the input
embedding table (one row of it), so bound tok/s = measured bandwidth / those bytes.

On the GPU machine (its own python3 with torch; the gateway's other packages on PYTHONPATH):

    python3 bench/gpu_llama8b.py --folder /tmp/llama8b [--max-tokens 128] [--rounds 3]

A local dry run of the same code on a small random model, on the CPU:

    PYTHONPATH=. .venv/bin/python bench/gpu_llama8b.py --folder /tmp/l8 --shape tiny \\
        --device cpu --concurrency 1,4 --max-tokens 16 --rounds 1

A benchmark, not a test: it prints markdown (and ``--json``) and exits 0 unless a setup fails.
Results and how they were taken: docs/benchmarks.md.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's directory comes first on sys.path, and bench/ holds a
# transformers.py: drop that entry so `import transformers` finds the real package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402

sys.path.insert(0, os.path.dirname(_HERE))  # the repository, for bench.chat_stream
from bench.chat_stream import Stream, stream_chat  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "tests" / "templates" / "llama3.1.jinja"
VOCAB = 128_256
WORDS = 128_000  # ids 0 .. 127999 are the words w0 ... w127999; the rest are special
BOS, EOS, EOM, EOT, PAD = 128_000, 128_001, 128_008, 128_009, 128_004
SHAPES: dict[str, dict[str, int]] = {
    "8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
           "num_attention_heads": 32, "num_key_value_heads": 8},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2},
}  # fmt: skip
PROMPT_WORDS = 100
READY_TIMEOUT_S = 600.0


def special_tokens() -> dict[int, str]:
    names = {BOS: "<|begin_of_text|>", EOS: "<|end_of_text|>", 128_006: "<|start_header_id|>",
             128_007: "<|end_header_id|>", EOM: "<|eom_id|>", EOT: "<|eot_id|>",
             PAD: "<|finetune_right_pad_id|>", 128_010: "<|python_tag|>"}  # fmt: skip
    return {i: names.get(i, f"<|reserved_special_token_{i - WORDS}|>") for i in range(WORDS, VOCAB)}


def write_tokenizer(folder: Path) -> Any:
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = special_tokens()
    vocab = {f"w{i}": i for i in range(WORDS)} | {text: i for i, text in specials.items()}
    words = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words.add_special_tokens([AddedToken(t, special=True, normalized=False)
                              for t in specials.values()])  # fmt: skip
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=words,
        bos_token=specials[BOS],
        eos_token=specials[EOT],
        pad_token=specials[PAD],
    )
    tokenizer.chat_template = TEMPLATE.read_text()
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_model(folder: Path, shape: str, device: str) -> Any:
    """Random bf16 weights drawn on ``device``, saved to ``folder``; returns the model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        bos_token_id=BOS,
        eos_token_id=[EOS, EOM, EOT],
        pad_token_id=PAD,
        tie_word_embeddings=False,
        dtype="bfloat16",
        **SHAPES[shape],
    )
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = [EOS, EOM, EOT]
    model.generation_config.pad_token_id = PAD
    started = time.perf_counter()
    model.save_pretrained(folder, max_shard_size="5GB")
    write_tokenizer(folder)
    print(f"wrote {folder} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return model


def prompt(i: int) -> str:
    rng = random.Random(i)
    return " ".join(f"w{rng.randrange(1, WORDS)}" for _ in range(PROMPT_WORDS))


def bandwidth_gb_s(device: str) -> float:
    """Device-to-device copy of 4 GiB: (read + written bytes) / time, median of 10."""
    import torch

    if device != "cuda":
        return float("nan")
    src = torch.empty(2 * 1024**3, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    times = []
    for i in range(13):
        torch.cuda.synchronize()
        start = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - start)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * 4 * 1024**3 / statistics.median(times) / 1e9


def raw_generate(model: Any, folder: Path, batch: int, max_tokens: int) -> float:
    """Aggregate tok/s of greedy ``generate`` over ``batch`` left-padded prompts."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": prompt(i)}], tokenize=False,
                                      add_generation_prompt=True)
        for i in range(batch)
    ]  # fmt: skip
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    enc = enc.to(model.device)
    with torch.inference_mode():
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(**enc, max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                       do_sample=False)  # fmt: skip
        if model.device.type == "cuda":
            torch.cuda.synchronize()
    return batch * max_tokens / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gateway(tmp: Path, folder: Path, args: argparse.Namespace) -> tuple[Any, str]:
    port = free_port()
    config = tmp / "gpu-bench.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {port}, log_level: warning}}\n"
        "models:\n"
        "  - name: llama8b\n"
        "    backend: transformers\n"
        f"    source: {folder}\n"
        "    dtype: bfloat16\n"
        f"    device: {args.device}\n"
        f"    max_batch_size: {max(args.concurrency)}\n"
        f"    max_queue: {4 * max(args.concurrency)}\n"
    )
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        env={**os.environ, "PYTHONPATH": path},
    )
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_S:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with {process.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                print(f"gateway ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("the gateway did not become ready")


async def one_stream(client: httpx.AsyncClient, i: int, max_tokens: int) -> Stream:
    return await stream_chat(client, {
        "model": "llama8b",
        "messages": [{"role": "user", "content": prompt(i)}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "logit_bias": {str(t): -100 for t in (EOS, EOM, EOT)},
    })  # fmt: skip


@dataclass
class Round:
    streams: int
    aggregate_tok_s: float
    decode_tok_s_per_stream: float
    ttft_p50_s: float
    ttft_p90_s: float
    prompt_tokens: int
    tokens: int


async def concurrent(url: str, n: int, max_tokens: int, offset: int) -> Round:
    async with httpx.AsyncClient(base_url=url, timeout=900) as client:
        start = time.perf_counter()
        streams = await asyncio.gather(*(one_stream(client, offset + i, max_tokens)
                                         for i in range(n)))  # fmt: skip
    ttfts = sorted(s.ttft for s in streams)
    total = sum(s.tokens for s in streams)
    return Round(
        n,
        total / (max(s.done for s in streams) - start),
        statistics.median(s.decode_tok_s for s in streams),
        statistics.median(ttfts),
        ttfts[min(len(ttfts) - 1, int(0.9 * len(ttfts)))],
        max(s.prompt_tokens for s in streams),
        total,
    )


def measure_gateway(url: str, args: argparse.Namespace) -> list[Round]:
    asyncio.run(concurrent(url, 2, 8, 10_000))  # warm-up
    results = []
    for n in args.concurrency:
        rounds = [asyncio.run(concurrent(url, n, args.max_tokens, 1000 * (r + 1)))
                  for r in range(args.rounds)]  # fmt: skip
        for r in rounds:
            if r.tokens != n * args.max_tokens:
                raise RuntimeError(f"{n} streams gave {r.tokens} tokens")
        print(f"  llmgate c={n}: {[round(r.aggregate_tok_s, 1) for r in rounds]} tok/s",
              file=sys.stderr)  # fmt: skip
        results.append(sorted(rounds, key=lambda r: r.aggregate_tok_s)[len(rounds) // 2])
    return results


def weight_bytes_per_step(model: Any) -> int:
    embed = model.get_input_embeddings().weight
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    return int(total - embed.numel() * embed.element_size())


def environment(device: str) -> dict[str, str]:
    import torch
    import transformers

    info = {"torch": torch.__version__, "transformers": transformers.__version__,
            "python": sys.version.split()[0]}  # fmt: skip
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def report(facts: dict[str, Any], rounds: list[Round], args: argparse.Namespace) -> str:
    bound = facts["bandwidth_gb_s"] * 1e9 / facts["weight_bytes_per_step"]
    lines = [
        f"{facts['params_b']:.2f} B parameters ({args.shape}), bf16, {args.device}; "
        f"{rounds[0].prompt_tokens}-token prompts, {args.max_tokens}-token "
        f"answers; median of {args.rounds} rounds; {facts['env']}",
        "",
        f"- memory bandwidth (copy): {facts['bandwidth_gb_s']:.0f} GB/s; weights read per "
        f"decode step: {facts['weight_bytes_per_step'] / 1e9:.2f} GB; bound for one stream: "
        f"{bound:.1f} tok/s",
        f"- raw `generate`, 1 prompt: {facts['raw_1']:.1f} tok/s; left-padded batch of "
        f"{max(args.concurrency)}: {facts['raw_batch']:.1f} tok/s",
        f"- gateway start to ready: {facts['ready_s']:.1f} s",
        "",
        "| streams | aggregate tok/s | decode tok/s per stream (p50) | TTFT p50 (s) | "
        "TTFT p90 (s) |",
        "|---|---|---|---|---|",
    ]
    for r in rounds:
        lines.append(f"| {r.streams} | {r.aggregate_tok_s:.1f} | {r.decode_tok_s_per_stream:.1f}"
                     f" | {r.ttft_p50_s:.3f} | {r.ttft_p90_s:.3f} |")  # fmt: skip
    one = next((r for r in rounds if r.streams == 1), None)
    if one:
        lines += [
            "",
            f"- one stream: {one.decode_tok_s_per_stream / bound:.2f}x the bandwidth bound; "
            f"{one.decode_tok_s_per_stream / facts['raw_1']:.2f}x raw `generate`",
        ]
    top = rounds[-1]
    lines.append(f"- {top.streams} streams: {top.aggregate_tok_s / facts['raw_batch']:.2f}x "
                 f"raw `generate` on a batch of {max(args.concurrency)}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, required=True, help="written if absent")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="8b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 8, 32, 64])  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--build-only", action="store_true", help="write --folder and stop")
    args = parser.parse_args(argv)
    if args.build_only:
        build_model(args.folder, args.shape, args.device)
        return 0

    import torch
    from transformers import AutoModelForCausalLM

    facts: dict[str, Any] = {"env": environment(args.device)}
    facts["bandwidth_gb_s"] = bandwidth_gb_s(args.device)
    if (args.folder / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(args.folder, dtype=torch.bfloat16,
                                                     device_map=args.device).eval()  # fmt: skip
    else:
        model = build_model(args.folder, args.shape, args.device)
    facts["params_b"] = sum(p.numel() for p in model.parameters()) / 1e9
    facts["weight_bytes_per_step"] = weight_bytes_per_step(model)
    raw_generate(model, args.folder, 1, 8)  # warm-up
    facts["raw_1"] = statistics.median(raw_generate(model, args.folder, 1, args.max_tokens)
                                       for _ in range(3))  # fmt: skip
    facts["raw_batch"] = raw_generate(model, args.folder, max(args.concurrency), args.max_tokens)
    print(f"raw generate: {facts['raw_1']:.1f} / {facts['raw_batch']:.1f} tok/s", file=sys.stderr)
    del model
    if args.device == "cuda":
        torch.cuda.empty_cache()

    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        process, url = start_gateway(Path(tmp), args.folder, args)
        facts["ready_s"] = time.monotonic() - started
        try:
            rounds = measure_gateway(url, args)
            facts["models"] = httpx.get(url + "/v1/models", timeout=10).json()
        finally:
            process.terminate()
            process.wait(60)
    text = report(facts, rounds, args)
    print(text)
    if args.json:
        figures = {"facts": facts, "rounds": [asdict(r) for r in rounds], "args": vars(args)}
        args.json.write_text(json.dumps(figures, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
