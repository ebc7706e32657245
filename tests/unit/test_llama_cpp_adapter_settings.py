"""`adapters:` of a llama.cpp entry: GGUF LoRA adapters as their own public names, checked at
config load (each problem one line naming the key)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config

LLAMA = """
models:
  - name: tiny
    backend: llama_cpp
    source: tiny.gguf
    adapters:
      - {name: tiny-sql, source: sql.gguf}
      - {name: tiny-chat, source: chat.gguf, scale: 0.5}
  - name: other
    backend: llama_cpp
    source: tiny.gguf
"""


@pytest.fixture
def gguf_dir(tmp_path: Path) -> Path:
    for file in ("tiny.gguf", "sql.gguf", "chat.gguf"):
        (tmp_path / file).write_bytes(b"GGUF")
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_llama_cpp_entry_with_adapters_loads(gguf_dir):
    tiny = load_config(write(gguf_dir, LLAMA)).models[0]
    assert tiny.public_names() == ["tiny", "tiny-sql", "tiny-chat"]
    assert [(a.name, a.scale) for a in tiny.adapters] == [("tiny-sql", 1.0), ("tiny-chat", 0.5)]
    assert [key for key, _ in tiny.weight_sources()] == [
        "source",
        "adapters[0] (tiny-sql): source",
        "adapters[1] (tiny-chat): source",
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "source: chat.gguf",
            "source: nowhere.gguf",
            "models[0] (tiny): adapters[1] (tiny-chat): source: file not found",
        ),
        (
            "source: sql.gguf}",
            "source: package:no_such_pkg/sql.gguf}",
            "models[0] (tiny): adapters[0] (tiny-sql): source: Python package 'no_such_pkg'",
        ),
        ("{name: tiny-sql,", "{name: other,", "name or alias 'other' is already used"),
        ("{name: tiny-sql,", "{name: tiny-chat,", "name or alias 'tiny-chat' is already used"),
        ("{name: tiny-sql,", "{name: 'bad name',", "'bad name' is not a valid model name"),
        ("source: sql.gguf}", "src: sql.gguf}", "unknown key 'adapters[0].src'"),
        (
            "scale: 0.5",
            "scale: 0",
            "models[0] (tiny): adapters[1].scale: Input should be greater than 0",
        ),
    ],
)
def test_bad_adapters_stop_config_load_naming_the_key(gguf_dir, old, new, expected):
    assert old in LLAMA
    with pytest.raises(ConfigError) as info:
        load_config(write(gguf_dir, LLAMA.replace(old, new, 1)))
    message = str(info.value)
    assert "\n" not in message
    assert expected in message


def test_adapters_on_an_embedding_model_stop_startup():
    entry = {"backend": "llama_cpp", "source": "x.gguf", "adapters": [{"name": "a", "source": "a"}]}
    with pytest.raises(ConfigError, match="adapters: read only for text generation"):
        parse_config({"models": [{"name": "e", "task": "embed", **entry}]})


def test_scale_is_a_llama_cpp_key_only():
    entry = {
        "backend": "transformers",
        "source": "folder",
        "adapters": [{"name": "a", "source": "a", "scale": 2}],
    }
    with pytest.raises(ConfigError, match=re.escape("unknown key 'adapters[0].scale'")):
        parse_config({"models": [{"name": "t", **entry}]})
