"""``llmgate chat`` through a real pty (pexpect) against a real gateway: a two-turn chat whose
history reaches the model, Ctrl-C mid-answer (the engine stops; the next question works),
/model, /reset, /set, and the exit codes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.integration.chat_ui import ChatGateway, chat_gateway
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

PROMPT = ">>>"


@pytest.fixture(scope="module")
def gateway(tiny_gguf: Path) -> Iterator[ChatGateway]:
    yield from chat_gateway(tiny_gguf)


def spawn(url: str, model: str, tmp_path: Path) -> pexpect.spawn:
    env = {
        **os.environ,
        "PROMPT_TOOLKIT_NO_CPR": "1",  # no cursor-position queries to the pty
        "LLMGATE_CHAT_HISTORY": str(tmp_path / "history"),
        "TERM": "xterm",
    }
    child = pexpect.spawn(
        sys.executable,
        ["-m", "gateway", "chat", "--url", url, "--model", model],
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 160),
    )
    child.expect("chatting with")
    child.expect(PROMPT)
    return child


def say(child: pexpect.spawn, line: str, until: str = "tokens") -> None:
    """Send ``line`` and wait for the answer's stats line (``/stats`` is on), then the prompt."""
    child.sendline(line)
    child.expect(until)
    child.expect(PROMPT)


def finish(child: pexpect.spawn) -> int:
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    return int(child.exitstatus)


def test_a_two_turn_chat_sends_the_history_and_reset_clears_it(gateway, tmp_path):
    child = spawn(gateway.server.base_url + "/v1", "echo", tmp_path)
    say(child, "/stats", until="on")
    say(child, "My name is Zed.")
    say(child, "What is my name?")
    sent = gateway.upstream.chat_bodies[-1]["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "My name is Zed."),
        ("assistant", "Noted."),
        ("user", "What is my name?"),
    ]
    say(child, "/reset", until="cleared")
    say(child, "/system Be brief.", until="system prompt set")
    say(child, "Hello again")
    sent = gateway.upstream.chat_bodies[-1]["messages"]
    assert sent == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello again"},
    ]
    assert finish(child) == 0


def test_ctrl_c_stops_the_answer_and_the_engine_then_the_chat_goes_on(gateway, tmp_path):
    stats = gateway.server.backend("smollm2").stats
    cancelled = stats.requests_cancelled
    child = spawn(gateway.server.base_url + "/v1", "smollm2", tmp_path)
    say(child, "/stats", until="on")
    say(child, "/set max_tokens 900", until="max_tokens = 900")
    child.sendline("Write a very long essay about the history of the sea.")
    child.expect(r"history of the sea\.")  # the line as typed
    child.expect(r"\n[^\n>]{40}")  # then the answer streams in
    assert wait_until(lambda: stats.tokens_generated > 20, 10)
    child.sendintr()
    child.expect(r"\(stopped\)")
    child.expect(PROMPT)
    assert wait_until(lambda: stats.requests_cancelled == cancelled + 1, 10), "engine kept going"
    say(child, "/set max_tokens 8", until="max_tokens = 8")
    say(child, "Name the capital of France.")  # the next question is answered
    child.sendintr()  # at an empty prompt: arms
    child.expect("Ctrl-C again")
    child.sendintr()  # exits, no traceback
    child.expect(pexpect.EOF)
    assert "Traceback" not in (child.before or "")
    child.close()
    assert child.exitstatus == 0


def test_two_ctrl_c_back_to_back_exit_cleanly_every_time(gateway, tmp_path):
    # The second Ctrl-C lands while prompt_toolkit tears one prompt down or builds the
    # next (a signal then, not a key): it must still count, with no traceback.
    for _ in range(5):
        child = spawn(gateway.server.base_url + "/v1", "echo", tmp_path)
        child.sendintr()
        child.sendintr()
        child.expect(pexpect.EOF)
        assert "Traceback" not in (child.before or "")
        assert "Exception ignored" not in (child.before or "")
        child.close()
        assert child.exitstatus == 0


def test_model_switch_and_settings(gateway, tmp_path):
    child = spawn(gateway.server.base_url + "/v1", "default", tmp_path)  # an alias works
    say(child, "/model nope", until="is not served there")
    say(child, "/model echo", until="now chatting with echo")
    say(child, "/set temperature 0.2", until="temperature = 0.2")
    say(child, "/set temperature hot", until="needs a float")
    say(child, "/stats", until="on")
    say(child, "hello")
    body = gateway.upstream.chat_bodies[-1]
    assert body["model"] == "echo" and body["temperature"] == 0.2
    say(child, "/help", until="/reset")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_a_long_chat_goes_on_without_its_oldest_exchanges(gateway, tmp_path):
    """``short`` has a 60-word window (the fake counts words): each turn adds 14, so from the
    third turn on the oldest exchanges are left out of the request, and the chat says so."""
    child = spawn(gateway.server.base_url, "short", tmp_path)  # /v1 implied
    words = "one two three four five six seven eight nine ten eleven twelve"
    say(child, f"0: {words}", until="Sure")
    say(child, f"1: {words}", until="Sure")
    say(child, f"2: {words}", until="1 older exchange left out")
    say(child, f"3: {words}", until="2 older exchanges left out")
    sent = [m["content"] for m in gateway.upstream.chat_bodies[-1]["messages"]]
    assert sent[-1].startswith("3:") and not any(m.startswith(("0:", "1:")) for m in sent)
    assert gateway.upstream.chat_bodies[-1]["max_tokens"] == 30  # half the window
    say(child, "/reset", until="conversation cleared")
    say(child, f"4: {words}", until="Sure")
    assert len(gateway.upstream.chat_bodies[-1]["messages"]) == 1
    assert finish(child) == 0


def test_embedding_models_are_not_offered_for_chat(gateway, tmp_path):
    child = spawn(gateway.server.base_url + "/v1", "echo", tmp_path)
    child.sendline("/models")
    child.expect("short")
    child.expect(PROMPT)
    assert "vectors" not in (child.before or "")
    say(child, "/model vectors", until="is not served there")
    assert finish(child) == 0


def test_multi_line_input_completion_and_history_across_sessions(gateway, tmp_path):
    child = spawn(gateway.server.base_url + "/v1", "echo", tmp_path)
    say(child, "/stats", until="on")
    child.sendline('"""first line')
    child.sendline('second line"""')
    child.expect("tokens")
    child.expect(PROMPT)
    assert gateway.upstream.chat_bodies[-1]["messages"][-1]["content"] == "first line\nsecond line"
    child.send("/model thi\t")  # Tab completes the model name
    child.expect("thinker")
    child.sendline("")
    child.expect("now chatting with thinker")
    child.expect(PROMPT)
    child.sendline("2+2?")  # a thinking model: its reasoning shows, then the answer below it
    child.expect("Two plus two ")  # dim: each piece comes in its own colour codes
    child.expect("is four.")
    child.expect(r"\n(\x1b\[[0-9;]*m)*4")
    child.expect(PROMPT)
    assert finish(child) == 0
    again = spawn(gateway.server.base_url + "/v1", "echo", tmp_path)  # same history file
    again.send("\x1b[A")  # Up: the last line of the previous session
    again.expect("2\\+2\\?")
    again.sendline("")
    again.expect("Noted")  # the recalled line was sent
    again.expect(PROMPT)
    assert finish(again) == 0


def test_control_sequences_in_model_output_never_reach_the_terminal(gateway, tmp_path):
    child = spawn(gateway.server.base_url + "/v1", "escapes", tmp_path)
    child.sendline("hi")
    child.expect("safe text")  # the escape sequences between the two words were dropped
    child.expect(PROMPT)
    assert "]52;" not in (child.before or "") and "\x1b[2J" not in (child.before or "")
    assert finish(child) == 0


def exit_code(url: str, model: str, tmp_path: Path, expected: str) -> int:
    """Start a chat that cannot begin; return its exit code once it printed ``expected``."""
    env = {**os.environ, "LLMGATE_CHAT_HISTORY": str(tmp_path / "history")}
    argv = ["-m", "gateway", "chat", "--url", url, "--model", model]
    child = pexpect.spawn(sys.executable, argv, env=env, encoding="utf-8", timeout=30)
    child.expect(expected)
    child.expect(pexpect.EOF)
    child.close()
    assert "Traceback" not in (child.before or "")
    return int(child.exitstatus)


def test_a_down_server_or_an_unknown_model_is_a_clear_error(gateway, tmp_path):
    down = "http://127.0.0.1:9/v1"
    assert exit_code(down, "default", tmp_path, f"cannot reach {down}") == 1
    assert exit_code("http://", "default", tmp_path, "is not an http:// or https:// URL") == 2
    url = gateway.server.base_url + "/v1"
    unknown = "model 'nope' is not served there; available: smollm2, tiny, hostile"
    assert exit_code(url, "nope", tmp_path, unknown) == 2


def test_models_url_takes_the_servers_address_and_prints_errors_as_one_line(gateway, capsys):
    from gateway.cli import main

    assert main(["models", "--url", gateway.server.base_url]) == 0  # /v1 implied
    listed = capsys.readouterr().out
    assert "smollm2" in listed and "vectors" in listed  # every model, with its task
    assert main(["models", "--url", gateway.server.base_url + "/nope"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("llmgate: ") and "not an OpenAI-compatible model list" in error
    assert "{" not in error and error.count("\n") == 1
