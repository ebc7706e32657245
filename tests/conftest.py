from __future__ import annotations

import contextlib

import pytest

# As `llmgate serve` does (gateway/cli.py, _native_engines_first): llama-cpp-python's libraries
# load before anything imports numpy, or a CUDA build crashes on its first model load.
with contextlib.suppress(ImportError):
    import llama_cpp  # noqa: F401


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
