"""A JSON body sent the way ``curl URL -d '{...}'`` sends it (as a form) is read as JSON on
every surface, through a real socket; a body that is not JSON, or JSON declared as another
type, still gets the surface's 400."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from backends.upstream.settings import OpenAICompatSettings
from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.fake_upstreams import FakeModel, FakeOpenAI
from tests.integration.conftest import ServerThread

pytestmark = pytest.mark.integration

FORM = "application/x-www-form-urlencoded"  # what curl -d sends


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    upstream = ServerThread(FakeOpenAI([FakeModel("echo", tokens=["Noted", "."])]))  # type: ignore[arg-type]
    upstream.start()
    config = GatewayConfig(
        models=[
            OpenAICompatSettings(
                name="echo", backend="openai", upstream_model="echo",
                base_url=f"http://127.0.0.1:{upstream.port}/v1", health_check_interval=0,
            )
        ]
    )  # fmt: skip
    gateway = ServerThread(create_app(config))
    gateway.start()
    try:
        yield f"http://127.0.0.1:{gateway.port}"
    finally:
        gateway.stop()
        upstream.stop()


CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.mark.parametrize("content_type", [FORM, "text/plain; charset=utf-8", None])
@pytest.mark.parametrize(
    ("path", "body", "answer"),
    [
        ("/v1/chat/completions", CHAT, lambda r: r["choices"][0]["message"]["content"]),
        ("/api/chat", {**CHAT, "stream": False}, lambda r: r["message"]["content"]),
        (
            "/v1/messages",
            {**CHAT, "max_tokens": 4},
            lambda r: r["content"][0]["text"],
        ),
    ],
)
def test_a_json_body_sent_as_a_form_is_read_as_json(base_url, path, body, answer, content_type):
    headers = {"content-type": content_type} if content_type else {}
    reply = httpx.post(base_url + path, content=json.dumps(body), headers=headers, timeout=30)
    assert reply.status_code == 200, reply.text
    assert answer(reply.json()) == "Noted."


def test_a_form_that_is_not_json_and_json_declared_as_xml_stay_400s(base_url):
    url = base_url + "/v1/chat/completions"
    form = httpx.post(url, content="model=echo", headers={"content-type": FORM}, timeout=30)
    assert form.status_code == 400
    assert set(form.json()["error"]) == {"message", "type", "param", "code"}
    xml = httpx.post(
        url, content=json.dumps(CHAT), headers={"content-type": "application/xml"}, timeout=30
    )
    assert xml.status_code == 400 and xml.json()["error"]["type"] == "invalid_request_error"
