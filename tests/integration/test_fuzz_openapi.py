"""Property-based fuzzing of the gateway over real sockets: schemathesis generates requests for
every operation of the gateway's own ``/openapi.json`` (valid and schema-violating), and
hypothesis sends raw garbage bodies under random ``Content-Type``s to every POST route.

The contract, for every request: no 5xx, every 4xx body in its surface's envelope (OpenAI's four
keys, Ollama's ``{"error": str}`` under ``/api/``, Anthropic's under ``/v1/messages``), every 2xx
body well formed (JSON, or a stream without an internal error in it). The server is the tiny
in-process GGUF (generation capped at a few tokens) and an in-process MiniLM GGUF (embeddings),
so a bad request reaches the real engines.

The example count is bounded for CI (``LLMGATE_FUZZ_EXAMPLES`` per operation, default 25) and
the search is derandomized (the same examples every run); ``LLMGATE_FUZZ_RANDOM=1`` explores
new ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from backends.llama_cpp.settings import LlamaCppSettings
from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.integration.conftest import RunningServer, ServerThread
from tests.minilm_gguf import write_minilm_gguf

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("LLMGATE_FUZZ_EXAMPLES", "25"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=os.environ.get("LLMGATE_FUZZ_RANDOM") != "1",
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
# The model a generated body names: left as generated (mostly unknown: 404) or a served one.
MODEL_CHOICES = (None, "tiny", "default", "minilm")
TIMEOUT = 60
# Valid required fields, put into half the generated bodies: the rest of the body (sampling,
# tools, formats, stop strings) is still generated, and reaches the engines.
_CHAT = [{"role": "user", "content": "hi"}]
VALID_PARTS: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"messages": _CHAT},
    "/v1/completions": {"prompt": "hi"},
    "/v1/responses": {"input": "hi"},
    "/v1/messages": {"messages": _CHAT},
    "/v1/messages/count_tokens": {"messages": _CHAT},
    "/v1/embeddings": {"input": "hi"},
    "/api/chat": {"messages": _CHAT},
    "/api/generate": {"prompt": "hi"},
    "/api/embed": {"input": "hi"},
    "/api/embeddings": {"prompt": "hi"},
    "/": {"prompt": "hi"},
}


def _operations() -> list[tuple[str, str]]:
    entry = LlamaCppSettings(name="alpha", backend="llama_cpp", source="unused.gguf")
    app = create_app(GatewayConfig(models=[entry]))
    return [(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops]


OPERATIONS = _operations()
POST_PATHS = [path for method, path in OPERATIONS if method == "POST"]


@pytest.fixture(scope="module")
def fuzz_server(
    tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    minilm = write_minilm_gguf(tmp_path_factory.mktemp("fuzz") / "minilm.gguf")
    config = GatewayConfig(
        models=[
            LlamaCppSettings(
                name="tiny",
                aliases=["default"],
                backend="llama_cpp",
                source=str(tiny_gguf),
                n_threads=1,
                n_ctx=512,
                max_tokens_cap=4,
                request_timeout=30,
            ),
            LlamaCppSettings(
                name="minilm",
                task="embed",
                backend="llama_cpp",
                source=str(minilm),
                n_threads=1,
                n_ctx=512,
            ),
        ]
    )
    app = create_app(config)
    thread = ServerThread(app)
    thread.start()
    yield RunningServer(app=app, base_url=f"http://127.0.0.1:{thread.port}", port=thread.port)
    thread.stop()


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_server: RunningServer) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_server.base_url}/openapi.json")


def surface_of(path: str) -> str:
    if path.startswith("/api/"):
        return "ollama"
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return "anthropic"
    return "openai"


def assert_error_envelope(path: str, body: Any) -> None:
    """``body`` is the error shape the surface of ``path`` promises its clients."""
    surface = surface_of(path)
    if surface == "ollama":
        assert isinstance(body, dict) and set(body) == {"error"}, body
        assert isinstance(body["error"], str) and body["error"], body
    elif surface == "anthropic":
        assert isinstance(body, dict) and set(body) == {"type", "error"}, body
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
        assert isinstance(body["error"]["message"], str), body
    else:
        assert isinstance(body, dict) and set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], body


def _stream_payloads(content_type: str, text: str) -> list[Any]:
    if content_type.startswith("text/event-stream"):
        datas = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        return [json.loads(d) for d in datas if d != "[DONE]"]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _internal(payload: Any) -> bool:
    """A stream's error frame that says the server failed (not the client's mistake)."""
    if not isinstance(payload, dict):
        return False
    if payload.get("type") == "error" and "code" in payload:  # Responses' error event
        return payload["code"] == "internal_error"
    if payload.get("type") == "response.failed":
        return payload["response"]["error"]["code"] == "server_error"
    error = payload.get("error")
    if isinstance(error, dict):  # OpenAI's and Anthropic's error frames
        return error.get("code") == "internal_error" or error.get("type") == "api_error"
    return error is not None and "internal" in str(error).lower()  # Ollama's error line


def check_response(method: str, path: str, status: int, content_type: str, text: str) -> None:
    """The contract every fuzzed request must keep."""
    assert status < 500, f"{method} {path} -> {status}: {text[:500]}"
    if method == "HEAD":
        return
    if status >= 400:
        assert content_type.startswith("application/json"), content_type
        assert_error_envelope(path, json.loads(text))
    elif content_type.startswith(("text/event-stream", "application/x-ndjson")):
        payloads = _stream_payloads(content_type, text)
        assert payloads, f"{method} {path}: an empty stream"
        assert not any(_internal(p) for p in payloads), text[:500]
    elif content_type.startswith("application/json"):
        json.loads(text)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_generated_requests_get_no_5xx_and_errors_in_the_surface_envelope(
    fuzz_server: RunningServer, fuzz_schema: Any, method: str, path: str
) -> None:
    operation = fuzz_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    session = requests.Session()

    @FUZZ_SETTINGS
    @given(case=cases, model=st.sampled_from(MODEL_CHOICES), valid_parts=st.booleans())
    def fuzz(case: Any, model: str | None, valid_parts: bool) -> None:
        if model is not None and isinstance(case.body, dict):
            case.body["model"] = model
        if valid_parts and isinstance(case.body, dict):
            case.body.update(VALID_PARTS.get(path, {}))
        response = case.call(base_url=fuzz_server.base_url, session=session, timeout=TIMEOUT)
        content_type = response.headers.get("content-type", [""])[0]
        check_response(method, path, response.status_code, content_type, response.text)

    with session:
        fuzz()


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    _containers,
    max_leaves=12,
)
_KEYS = ("model", "messages", "prompt", "input", "stream", "max_tokens", "options", "history")
_NEAR_VALID = st.fixed_dictionaries(
    {}, optional={key: _JSON for key in _KEYS} | {"model": st.sampled_from(MODEL_CHOICES[1:])}
)
_BODIES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    _JSON.map(lambda value: json.dumps(value).encode()),
    _NEAR_VALID.map(lambda value: json.dumps(value).encode()),
    _NEAR_VALID.map(lambda value: json.dumps(value).encode()[:-1]),  # truncated JSON
)
_CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            None,
            "application/json",
            "application/json; charset=latin-1",
            "application/jons",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "multipart/form-data; boundary=x",
            "application/x-ndjson",
        ]
    ),
    # h11 refuses to send a header value with surrounding blanks
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip),
)


@pytest.mark.parametrize("path", POST_PATHS)
def test_raw_garbage_bodies_get_no_5xx_and_errors_in_the_surface_envelope(
    fuzz_server: RunningServer, path: str
) -> None:
    with httpx.Client(base_url=fuzz_server.base_url, timeout=TIMEOUT) as client:

        @FUZZ_SETTINGS
        @given(body=_BODIES, content_type=_CONTENT_TYPES)
        def fuzz(body: bytes, content_type: str | None) -> None:
            headers = {} if content_type is None else {"content-type": content_type}
            target = path.replace("{digest}", "sha256-0").replace("{response_id}", "resp_1")
            response = client.post(target, content=body, headers=headers)
            content_type = response.headers.get("content-type", "")
            check_response("POST", path, response.status_code, content_type, response.text)

        fuzz()
