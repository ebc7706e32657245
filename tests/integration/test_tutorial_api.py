"""The tutorials' ``POST /``, driven the way their scripts drive it: ``requests.post`` with
``data=json.dumps(...)`` (one sends ``Content-Type: application/jons``), reading
``.json()["response"]``, and the multi-turn ``run_chat_session`` loop."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import requests

from backends.llama_cpp.settings import LlamaCppSettings
from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from tests.integration.conftest import ServerThread

pytestmark = pytest.mark.integration

TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def get_completion(url: str, prompt: str, history=None, content_type="application/json", **more):
    """As the tutorials write it."""
    headers = {"Content-Type": content_type}
    data = {"prompt": prompt, "history": history or [], **more}
    response = requests.post(url=url, headers=headers, data=json.dumps(data), timeout=120)
    return response.json()["response"]


def run_chat_session(url: str, inputs: list[str]) -> list[dict[str, str]]:
    """The tutorials' loop, reading scripted input instead of ``input()``."""
    history: list[dict[str, str]] = []
    for user_input in inputs:
        if user_input.lower() in ("exit", "quit"):
            break
        answer = get_completion(url, user_input, history, temperature=0, max_tokens=24)
        history.append({"role": "user", "content": user_input})
        history.append({"role": "assistant", "content": answer})
    return history


def chat_answer(server, messages: list[dict[str, str]], max_tokens: int) -> str:
    reply = httpx.post(
        f"{server.v1}/chat/completions",
        json={"model": "default", "messages": messages, "temperature": 0, "max_tokens": max_tokens},
        timeout=120,
    )
    return reply.json()["choices"][0]["message"]["content"]


def test_the_answer_has_response_history_status_and_local_time(server):
    before = datetime.now().replace(microsecond=0)
    reply = requests.post(
        server.base_url,
        data=json.dumps(
            {"prompt": "Name the capital city of France in one word.", "temperature": 0}
        ),
        headers={"Content-Type": "application/json"},
        timeout=120,
    )
    after = datetime.now()
    assert reply.status_code == 200
    body = reply.json()
    # the tutorials' keys, and ChatGLM api.py's `history` (this exchange added)
    assert set(body) == {"response", "history", "status", "time"}
    assert "Paris" in body["response"] and body["status"] == 200
    assert body["history"] == [["Name the capital city of France in one word.", body["response"]]]
    assert TIME.match(body["time"])
    assert before <= datetime.strptime(body["time"], "%Y-%m-%d %H:%M:%S") <= after


def test_the_misspelt_content_type_still_reads_json(server):
    answer = get_completion(
        server.base_url,
        "Name the capital city of France in one word.",
        content_type="application/jons",
        temperature=0,
    )
    assert "Paris" in answer


def test_history_is_replayed_through_the_models_chat_template(server):
    history = [
        {"role": "user", "content": "Remember the word: banana."},
        {"role": "assistant", "content": "I will remember banana."},
    ]
    prompt = "Which word did I ask you to remember?"
    answer = get_completion(server.base_url, prompt, history, temperature=0, max_tokens=16)
    # the same conversation through /v1/chat/completions (the model's template) answers alike
    expected = chat_answer(server, [*history, {"role": "user", "content": prompt}], 16)
    assert answer == expected


def test_chatglm_api_history_comes_back_in_its_form_and_max_length_caps(server):
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    sent = {"prompt": "Count from 1 to 50.", "history": turns, "max_length": 5, "temperature": 0}
    body = requests.post(server.base_url, data=json.dumps(sent), timeout=120).json()
    assert body["history"] == [
        *turns,
        {"role": "user", "content": "Count from 1 to 50."},
        {"role": "assistant", "content": body["response"]},
    ]
    counted = chat_answer(server, [*turns, {"role": "user", "content": sent["prompt"]}], 5)
    assert body["response"] == counted  # 5 tokens, as asked


def test_chatglm_style_history_pairs_are_accepted(server):
    pairs = [["Remember the word: banana.", "I will remember banana."]]
    prompt = "Which word did I ask you to remember?"
    answer = get_completion(server.base_url, prompt, pairs, temperature=0, max_tokens=16)
    turns = [
        {"role": "user", "content": pairs[0][0]},
        {"role": "assistant", "content": pairs[0][1]},
        {"role": "user", "content": prompt},
    ]
    assert answer == chat_answer(server, turns, 16)


def test_the_multi_turn_session_loop_carries_its_history(server):
    history = run_chat_session(
        server.base_url, ["Hello! Who are you?", "Name the capital of France.", "quit", "unused"]
    )
    assert [turn["role"] for turn in history] == ["user", "assistant"] * 2
    assert all(turn["content"] for turn in history)
    # the second answer is what the model says with the first turn before it
    assert history[3]["content"] == chat_answer(server, history[:3], 24)


def test_model_and_max_tokens_are_honoured(server):
    reply = requests.post(
        server.base_url,
        data=json.dumps(
            {"prompt": "Count from one to fifty.", "model": "smollm2", "max_tokens": 3}
        ),
        timeout=120,
    )
    text = reply.json()["response"]
    assert 0 < len(text) < 40


@pytest.mark.parametrize(
    ("raw", "status", "param"),
    [
        (b"", 400, None),
        (b"{not json", 400, None),
        (b'["a list"]', 400, None),
        (b'{"history": []}', 400, "prompt"),
        (b'{"prompt": 5}', 400, "prompt"),
        (b'{"prompt": "x", "history": [{"role": "robot", "content": "x"}]}', 400, "history[0]"),
        (b'{"prompt": "x", "history": "not a list"}', 400, "history"),
        (b'{"prompt": "x", "max_tokens": 0}', 400, "max_tokens"),
        (b'{"prompt": "x", "model": "nope"}', 404, None),
        (b"[" * 100_000 + b"]" * 100_000, 400, None),  # nested past the decoder's depth
        (b'{"prompt": "x", "history": ' + b"[" * 900 + b"]" * 900 + b"}", 400, None),
    ],
    ids=lambda value: value[:24] if isinstance(value, bytes) else value,
)
def test_bad_input_is_a_4xx_in_the_error_envelope(server, raw, status, param):
    reply = requests.post(server.base_url, data=raw, timeout=30)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] is not None and error["param"].startswith(param)


@pytest.fixture(scope="module")
def keyed(tiny_gguf: Path) -> Iterator[str]:
    config = GatewayConfig(
        server=ServerSettings(api_keys=["sk-tutorial"]),
        models=[
            LlamaCppSettings(
                name="tiny", aliases=["default"], backend="llama_cpp", source=str(tiny_gguf)
            )
        ],
    )
    thread = ServerThread(create_app(config))
    thread.start()
    yield f"http://127.0.0.1:{thread.port}"
    thread.stop()


def test_with_api_keys_configured_the_tutorial_route_needs_one_too(keyed):
    body = json.dumps({"prompt": "hi", "max_tokens": 2})
    assert requests.post(keyed, data=body, timeout=30).status_code == 401
    ok = requests.post(
        keyed, data=body, headers={"Authorization": "Bearer sk-tutorial"}, timeout=30
    )
    assert ok.status_code == 200 and ok.json()["status"] == 200
    assert requests.get(keyed, timeout=30).status_code == 200  # the chat page stays open
