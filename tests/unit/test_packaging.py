"""docker-compose.yml and the Dockerfile reference only what exists (no Docker engine here)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]


def test_compose_parses_and_references_existing_files():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    gateway = compose["services"]["gateway"]
    assert gateway["build"] == "."
    assert (ROOT / "Dockerfile").is_file()
    for volume in gateway["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), source
        else:
            assert source in compose["volumes"]
    assert "8000:8000" in gateway["ports"]


def test_dockerfile_copies_existing_paths():
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for path in line.split()[1:-1]:
                assert (ROOT / path).exists(), path


def test_console_script_and_extras_are_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["llmgate"] == "gateway.cli:main"
    assert {"llama-cpp", "transformers", "all", "test"} <= set(project["optional-dependencies"])
