"""The chat page in a real browser (Debian's Chromium driven by Playwright) against a real
gateway: streaming, Stop (proved by the engine's counter), switching models, hostile model
output rendered as text, errors shown, conversations kept, API keys. Screenshots are saved
under test-artifacts/ (LLMGATE_TEST_ARTIFACTS)."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.fake_upstreams import Fault
from tests.integration.chat_ui import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    ChatGateway,
    chat_gateway,
    chromium_path,
)
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

ESSAY = "Write a very long essay about the history of the sea, with many chapters."


@pytest.fixture(scope="module")
def gateway(tiny_gguf: Path) -> Iterator[ChatGateway]:
    yield from chat_gateway(tiny_gguf)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, gateway: ChatGateway, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(gateway.server.base_url + "/")
    expect(page.locator("#model option")).not_to_have_count(0)
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"chat-page-{request.node.name}.png"), full_page=True)
    context.close()
    assert not dialogs, f"the page ran script from model output: {dialogs}"


def send(page: Page, text: str) -> None:
    page.locator("#prompt").fill(text)
    page.locator("#prompt").press("Enter")


def last_answer(page: Page):
    return page.locator("article.message.assistant").last


def test_the_page_is_served_with_its_assets_and_a_strict_policy(gateway):
    with httpx.Client(base_url=gateway.server.base_url) as client:
        index = client.get("/")
        assert index.status_code == 200 and "text/html" in index.headers["content-type"]
        policy = index.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy
        for asset in ("chat.js", "chat.css", "vendor/markdown-it.min.js", "vendor/purify.min.js"):
            assert client.get(f"/static/{asset}").status_code == 200, asset


def test_the_page_loads_without_a_console_error(browser, gateway):
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.goto(gateway.server.base_url + "/")
    expect(page.locator("#model option")).not_to_have_count(0)
    page.wait_for_load_state("networkidle")
    context.close()
    assert errors == []  # a favicon.ico 404 was one


def test_a_message_streams_in_and_shows_its_stats(page, gateway):
    page.select_option("#model", "smollm2")
    page.locator("#temperature").focus()
    page.keyboard.press("Home")  # temperature 0: a reproducible answer
    expect(page.locator("#temperature-value")).to_have_text("0")
    send(page, "Name the capital city of France in one word.")
    answer = last_answer(page)
    expect(page.locator("#send")).to_be_visible(timeout=60_000)
    expect(answer.locator(".body")).to_contain_text("Paris")
    expect(answer.locator(".stats")).to_contain_text("tokens")
    expect(answer.locator(".stats")).to_contain_text("tok/s")
    expect(page.locator("article.message.user .body")).to_have_text(
        "Name the capital city of France in one word."
    )


def test_stop_aborts_the_request_and_the_engine_stops(page, gateway):
    stats = gateway.server.backend("smollm2").stats
    cancelled = stats.requests_cancelled
    page.select_option("#model", "smollm2")
    send(page, ESSAY)  # 512 tokens by default: several seconds of streaming
    answer = last_answer(page)
    expect(answer.locator(".body")).not_to_have_text("", timeout=30_000)  # tokens arrived
    expect(page.locator("#stop")).to_be_visible()
    page.locator("#stop").click()
    expect(answer.locator(".stopped")).to_have_text("stopped")
    assert wait_until(lambda: stats.requests_cancelled == cancelled + 1, 10), "engine kept going"
    generated = stats.tokens_generated
    time.sleep(0.5)
    assert stats.tokens_generated == generated
    expect(page.locator("#send")).to_be_visible()


def test_a_question_stopped_before_any_answer_is_replaced_by_the_next(page, gateway):
    page.select_option("#model", "echo")
    gateway.upstream.faults.append(Fault("hang_before_headers", seconds=5))  # a slow upstream
    send(page, "never answered")
    expect(page.locator("#stop")).to_be_visible()
    page.locator("#stop").click()
    expect(page.locator("#send")).to_be_visible()
    send(page, "answered")
    expect(last_answer(page).locator(".body")).to_have_text("Noted.", timeout=30_000)
    sent = gateway.upstream.chat_bodies[-1]["messages"]
    assert [m["content"] for m in sent] == ["answered"]


def test_switching_model_sends_to_the_new_model(page, gateway):
    started = gateway.server.backend("tiny").stats.requests_started
    page.select_option("#model", "tiny")
    send(page, "hello")
    expect(page.locator("#send")).to_be_visible(timeout=60_000)
    expect(last_answer(page).locator(".role")).to_have_text("tiny")
    assert gateway.server.backend("tiny").stats.requests_started == started + 1
    page.reload()  # the choice is remembered
    expect(page.locator("#model")).to_have_value("tiny")


def test_hostile_model_output_renders_as_text(page, gateway):
    page.select_option("#model", "hostile")
    send(page, "say something")
    expect(page.locator("#send")).to_be_visible(timeout=30_000)
    body = last_answer(page).locator(".body")
    expect(body).to_contain_text("<img src=x onerror=alert(1)>")
    expect(body).to_contain_text("<script>alert(2)</script>")
    expect(body.locator("img")).to_have_count(0)
    expect(body.locator("script")).to_have_count(0)


def test_markdown_code_blocks_render_with_a_copy_button(page, gateway):
    gateway.upstream.models["echo"].tokens = ["Here:\n\n```python\nprint(1)\n```\n"]
    try:
        page.select_option("#model", "echo")
        send(page, "code please")
        expect(page.locator("#send")).to_be_visible(timeout=30_000)
        body = last_answer(page).locator(".body")
        expect(body.locator("pre code")).to_have_text("print(1)\n")
        expect(body.locator("pre button.copy-code")).to_have_accessible_name("Copy code")
    finally:
        gateway.upstream.models["echo"].tokens = ["Noted", "."]


def test_reasoning_is_shown_collapsed_apart_from_the_answer(page, gateway):
    page.select_option("#model", "thinker")
    send(page, "2+2?")
    expect(page.locator("#send")).to_be_visible(timeout=30_000)
    answer = last_answer(page)
    expect(answer.locator(".body")).to_have_text("4")
    reasoning = answer.locator("details.reasoning")
    expect(reasoning).not_to_have_attribute("open", "")
    expect(reasoning.locator(".thinking")).not_to_be_visible()
    reasoning.locator("summary").click()
    expect(reasoning.locator(".thinking")).to_have_text("Two plus two is four.")


def test_an_error_from_the_server_is_shown_and_can_be_retried(page, gateway):
    page.select_option("#model", "echo")
    gateway.upstream.faults.append(Fault("status", status=500))
    send(page, "hello")
    error = page.locator("article.message.error")
    expect(error).to_contain_text("502")
    expect(page.locator("#status")).to_contain_text("Answer interrupted: 502")
    expect(page.locator("#send")).to_be_visible()
    page.get_by_role("button", name="Send the last message again").click()
    expect(last_answer(page).locator(".body")).to_have_text("Noted.", timeout=30_000)
    expect(error).to_have_count(0)
    expect(page.locator("#status")).to_contain_text("Answer complete")
    gateway.upstream.faults.append(Fault("status", status=500))
    send(page, "hello again")
    expect(error).to_contain_text("502")
    send(page, "and again")  # replaces the unanswered question: turns keep alternating
    expect(page.locator("#send")).to_be_visible(timeout=60_000)
    expect(error).to_have_count(0)
    expect(page.locator("article.message.user .body")).to_have_text(["hello", "and again"])


def test_the_answer_fits_the_models_window(page, gateway):
    """Max tokens above what SmolLM2's 2,048-token window can give is capped, not a 400."""
    page.select_option("#model", "smollm2")
    page.locator("#max-tokens").focus()
    page.keyboard.press("End")  # 4096 tokens
    send(page, "Say hello.")
    expect(page.locator("#send")).to_be_visible(timeout=60_000)
    expect(page.locator("article.message.error")).to_have_count(0)
    expect(last_answer(page).locator(".body")).not_to_be_empty()


def test_a_long_chat_goes_on_without_its_oldest_exchanges(page, gateway):
    """A relayed model with a 60-word window (the fake counts words): each turn adds 14, so
    from the third turn on the oldest exchanges are left out of the request, as the status
    line says; the conversation on the page keeps them."""
    page.select_option("#model", "short")
    words = "one two three four five six seven eight nine ten eleven twelve"
    for turn in range(4):
        send(page, f"{turn}: {words}")
        expect(page.locator("#send")).to_be_visible(timeout=30_000)
        expect(page.locator("article.message.error")).to_have_count(0)
    expect(page.locator("article.message.assistant")).to_have_count(4)
    expect(page.locator("article.message.user")).to_have_count(4)
    sent = [m["content"] for m in gateway.upstream.chat_bodies[-1]["messages"]]
    assert sent[-1].startswith("3:") and not any(m.startswith(("0:", "1:")) for m in sent)
    expect(page.locator("#status")).to_contain_text("older exchanges left out to fit")


def test_a_server_that_is_gone_is_named_so(page, gateway):
    page.select_option("#model", "echo")
    page.route("**/v1/chat/completions", lambda route: route.abort("connectionrefused"))
    send(page, "hello")
    expect(page.locator("article.message.error")).to_contain_text("Cannot reach the server")
    expect(page.locator("#status")).to_contain_text("Answer interrupted")


def test_conversations_are_kept_and_edit_regenerate_work(page, gateway):
    page.select_option("#model", "echo")
    send(page, "first conversation")
    expect(page.locator("#send")).to_be_visible(timeout=30_000)
    page.locator("#new-chat").click()
    send(page, "second conversation")
    expect(page.locator("#send")).to_be_visible(timeout=30_000)
    page.reload()
    titles = page.locator("#conversation-list button.open")
    expect(titles.nth(0)).to_have_text("second conversation")
    expect(titles.nth(1)).to_have_text("first conversation")
    titles.nth(1).click()
    expect(page.locator("article.message.user")).to_contain_text("first conversation")

    bodies_before = len(gateway.upstream.chat_bodies)
    page.get_by_role("button", name="Regenerate answer").click()
    expect(page.locator("#send")).to_be_visible(timeout=30_000)
    assert len(gateway.upstream.chat_bodies) == bodies_before + 1
    expect(page.locator("article.message.assistant")).to_have_count(1)

    page.get_by_role("button", name="Edit and resend this message").click()
    expect(page.locator("#prompt")).to_have_value("first conversation")
    page.locator("#prompt").fill("first conversation, edited")
    page.locator("#prompt").press("Enter")
    expect(page.locator("#send")).to_be_visible(timeout=30_000)
    sent = gateway.upstream.chat_bodies[-1]["messages"]
    assert [m["content"] for m in sent] == ["first conversation, edited"]


def test_shift_enter_is_a_newline_and_the_page_fits_a_phone(browser, gateway):
    context = browser.new_context(viewport={"width": 390, "height": 800}, color_scheme="dark")
    page = context.new_page()
    page.goto(gateway.server.base_url + "/")
    expect(page.locator("#model option")).not_to_have_count(0)
    page.locator("#prompt").press("a")
    page.locator("#prompt").press("Shift+Enter")
    page.locator("#prompt").press("b")
    expect(page.locator("#prompt")).to_have_value("a\nb")
    expect(page.locator("#sidebar")).not_to_be_in_viewport()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat-page-phone-dark.png"))
    page.get_by_role("button", name="Show conversations and settings").click()
    expect(page.locator("#sidebar")).to_be_in_viewport(ratio=1)
    width = page.locator("body").bounding_box()
    assert width is not None and width["width"] <= 390
    page.screenshot(path=str(ARTIFACTS / "chat-page-phone-dark-sidebar.png"))
    page.get_by_role("button", name="Hide conversations and settings").click()
    expect(page.locator("#sidebar")).not_to_be_in_viewport()
    context.close()


def test_a_server_with_keys_asks_for_one(browser, tiny_gguf):
    with contextlib.closing(chat_gateway(tiny_gguf, api_keys=["sk-page-test"])) as gateways:
        keyed = next(gateways)
        context = browser.new_context()
        page = context.new_page()
        page.goto(keyed.server.base_url + "/")
        expect(page.locator("#status")).to_have_text("This server needs an API key")
        send(page, "hello")
        expect(page.locator("article.message.error")).to_contain_text("needs an API key")
        key = page.get_by_label("API key")
        expect(key).to_be_visible()
        key.fill("sk-page-test")
        key.press("Enter")
        key.blur()
        expect(page.locator("#model option")).not_to_have_count(0)
        context.close()


CROSS_ORIGIN_CALL = """async (gateway) => {
    try {
        const reply = await fetch(gateway + "/v1/chat/completions", {
            method: "POST",
            headers: {"Content-Type": "application/json", "Authorization": "Bearer any"},
            body: JSON.stringify({model: "echo", messages: [{role: "user", content: "hi"}]}),
        });
        const body = await reply.json();
        return [reply.status, reply.headers.get("x-request-id") !== null,
                body.choices[0].message.content];
    } catch (error) {
        return ["blocked", String(error)];
    }
}"""


def test_pages_of_this_machine_may_call_the_api_and_other_sites_may_not(
    gateway: ChatGateway, browser: Browser
):
    """A web UI served elsewhere on this machine (another port: another origin) calls the API
    from JavaScript with a key header, so Chromium sends a preflight; the same page served
    under another site's name is blocked by the browser (server.cors_origins unset)."""
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BlankPage)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    port = site.server_address[1]
    args = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP chat.example 127.0.0.1"]
    try:
        # the module's browser, launched again with a name for the other site
        named = browser.browser_type.launch(executable_path=chromium_path(), args=args)
        page = named.new_page()
        page.goto(f"http://localhost:{port}/")
        local = page.evaluate(CROSS_ORIGIN_CALL, gateway.server.base_url)
        page.goto(f"http://chat.example:{port}/")
        foreign = page.evaluate(CROSS_ORIGIN_CALL, gateway.server.base_url)
        named.close()
    finally:
        site.shutdown()
        site.server_close()
    assert local == [200, True, "Noted."]
    assert foreign[0] == "blocked" and "Failed to fetch" in foreign[1]


class _BlankPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>another web UI</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass
