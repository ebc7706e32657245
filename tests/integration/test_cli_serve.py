"""The README's server command, as a real process: `python -m gateway serve` on the committed
config.yaml serves the embedded model; a bad config exits 2 with one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
CAPITAL = [{"role": "user", "content": "Name the capital city of France in one word."}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_default_config_answers_and_stops_cleanly(conversion_cache):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLMGATE_CACHE_DIR": str(conversion_cache)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(ROOT / "config.yaml"),
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180  # the first run converts smollm2-hf's GGUF (~20 s)
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready:
                break
            time.sleep(0.1)
        assert ready, "server did not become ready"
        for model in ("default", "smollm2-hf"):
            reply = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                timeout=60,
                json={"model": model, "temperature": 0, "messages": CAPITAL},
            )
            assert "Paris" in reply.json()["choices"][0]["message"]["content"], model
        # the embedded embedding model, by its alias
        embedded = httpx.post(
            f"http://127.0.0.1:{port}/v1/embeddings",
            timeout=60,
            json={"model": "embedding", "input": ["a cat sat on the mat"]},
        ).json()
        assert (embedded["model"], len(embedded["data"][0]["embedding"])) == ("embedding", 384)
        # the tutorials' scripts, pointed at the port they use (`--port 6006` in their case)
        tutorial = httpx.post(
            f"http://127.0.0.1:{port}/",
            content=json.dumps({"prompt": CAPITAL[-1]["content"], "temperature": 0}),
            headers={"Content-Type": "application/jons"},
            timeout=60,
        )
        assert "Paris" in tutorial.json()["response"]
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output


def test_bad_config_exits_2_naming_the_key(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text(
        (ROOT / "config.yaml").read_text().replace("n_ctx: 2048", "n_ctx: 2048\n    gpu: yes")
    )
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(bad)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"llmgate: config error: {bad}: models[0] (smollm2): unknown key 'gpu'"
    ]


def test_importing_the_app_does_not_import_engines():
    code = (
        "import sys, gateway.app, gateway.cli; "
        "print([m for m in ('llama_cpp', 'torch', 'transformers') if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_a_port_in_use_is_refused_before_any_model_loads():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--config", str(ROOT / "config.yaml"),
             "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"llmgate: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    assert time.monotonic() - started < 20  # config.yaml's three models were not loaded
