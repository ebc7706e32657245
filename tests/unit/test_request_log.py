"""The request log: one line per request on ``llmgate.requests`` with the echoed request id, who
served it, status, tokens and timings; JSON lines; prompts only with ``log_prompts``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from gateway.app import create_app
from gateway.config import ConfigError, GatewayConfig, ServerSettings, parse_config
from gateway.request_log import REQUEST_LOGGER, JsonFormatter, configure_logging
from tests.fakes import fake_factory
from tests.unit.conftest import fake_entry

pytestmark = pytest.mark.anyio

SECRET = "the launch code is 0000"
CHAT = {"model": "a", "messages": [{"role": "user", "content": SECRET}]}


def lines_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == REQUEST_LOGGER]


@asynccontextmanager
async def serving(**server: object) -> AsyncIterator[httpx.AsyncClient]:
    config = GatewayConfig(
        server=ServerSettings(**server), models=[fake_entry("alpha", ["a"]), fake_entry("beta")]
    )
    app = create_app(config, backend_factory=fake_factory())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_one_text_line_per_request_with_the_echoed_request_id(caplog):
    caplog.set_level(logging.INFO, logger=REQUEST_LOGGER)
    async with serving() as client:
        reply = await client.post(
            "/v1/chat/completions", json=CHAT, headers={"X-Request-ID": "trace-7"}
        )
        missing = await client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    first, second = lines_of(caplog)
    assert reply.headers["x-request-id"] == "trace-7"
    assert first.levelno == logging.INFO
    text = first.getMessage()
    assert text.startswith("POST /v1/chat/completions 200 request_id=trace-7 surface=chat ")
    for part in (
        "requested=a",
        "model=alpha",
        "backend=fake",
        "key_id=-",
        "error=-",
        "prompt_tokens=7",
        "completion_tokens=4",
        "ttft_ms=",
        "duration_ms=",
    ):
        assert part in text
    assert f"request_id={missing.headers['x-request-id']}" in second.getMessage()
    assert "404" in second.getMessage() and "model=-" in second.getMessage()


async def test_a_json_line_carries_the_fields_at_top_level(caplog):
    caplog.set_level(logging.INFO, logger=REQUEST_LOGGER)
    async with serving(log_format="json") as client:
        stream = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        reply = await client.post("/v1/chat/completions", json=stream)
    [record] = lines_of(caplog)
    line = json.loads(JsonFormatter().format(record))
    assert list(line) == [
        "time",
        "level",
        "logger",
        "message",
        "request_id",
        "method",
        "path",
        "surface",
        "requested",
        "model",
        "backend",
        "replica",
        "key_id",
        "status",
        "error",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "ttft_ms",
        "duration_ms",
    ]
    assert line["request_id"] == reply.headers["x-request-id"]
    assert (line["level"], line["logger"]) == ("info", "llmgate.requests")
    assert (line["model"], line["status"], line["error"]) == ("alpha", 200, None)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (7, 4)
    assert line["duration_ms"] >= line["ttft_ms"] > 0
    assert line["message"] == "POST /v1/chat/completions 200"
    assert line["time"].endswith("Z")


async def test_an_error_code_is_logged(caplog):
    caplog.set_level(logging.INFO, logger=REQUEST_LOGGER)
    from backends.errors import BackendUnavailableError
    from tests.fakes import FakeScript

    config = GatewayConfig(models=[fake_entry("alpha", ["a"])])
    scripts = {"alpha": FakeScript(fail_before_first=BackendUnavailableError("down"))}
    app = create_app(config, backend_factory=fake_factory(scripts))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.post("/v1/chat/completions", json=CHAT)
    [record] = lines_of(caplog)
    assert "503" in record.getMessage() and "error=backend_unavailable" in record.getMessage()


async def test_no_prompt_text_is_logged_by_default(caplog):
    caplog.set_level(logging.DEBUG)
    async with serving(log_format="json") as client:
        await client.post("/v1/chat/completions", json=CHAT)
        await client.post("/v1/completions", json={"model": "a", "prompt": SECRET})
    records = lines_of(caplog)
    assert len(records) == 2
    assert SECRET not in caplog.text
    assert all(SECRET not in JsonFormatter().format(r) for r in caplog.records)
    assert all("prompt" not in json.loads(JsonFormatter().format(r)) for r in records)


async def test_log_prompts_logs_the_request_body_as_sent(caplog):
    caplog.set_level(logging.INFO, logger=REQUEST_LOGGER)
    async with serving(log_prompts=True) as client:
        await client.post("/v1/chat/completions", json=CHAT)
        await client.get("/v1/models")
    chat, models = lines_of(caplog)
    line = json.loads(JsonFormatter().format(chat))
    assert json.loads(line["prompt"]) == CHAT
    # the text line keeps the body on one line, quoted
    assert f"prompt={json.dumps(line['prompt'])}" in chat.getMessage()
    assert json.loads(JsonFormatter().format(models))["prompt"] is None


def test_configure_logging_json_makes_every_line_json(capsys):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    uvicorn = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    uvicorn_saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in uvicorn]
    try:
        configure_logging("info", "json")
        logging.getLogger("uvicorn.error").info("Application startup complete.")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("gateway.x").exception("it failed")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        for lg, (handlers, propagate, level) in zip(uvicorn, uvicorn_saved, strict=True):
            lg.handlers[:], lg.propagate = handlers, propagate
            lg.setLevel(level)
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["message"] == "Application startup complete."
    assert (first["level"], first["logger"]) == ("info", "uvicorn.error")
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]


def test_log_format_is_text_or_json():
    raw = {"server": {"log_format": "xml"}, "models": [fake_entry("m").model_dump()]}
    with pytest.raises(ConfigError, match=r"server: log_format: Input should be 'text' or 'json'"):
        parse_config(raw)
