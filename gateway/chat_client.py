"""The HTTP side of ``llmgate chat``: the few calls it makes to an OpenAI-compatible server,
Server-Sent Events parsed as the spec frames them, and the one error type it raises; plus
``printable``, which keeps model output from writing control sequences to the terminal."""

from __future__ import annotations

import json
import re
from collections.abc import Generator
from typing import Any

import httpx


class ChatError(Exception):
    """The server answered with an error, or could not be reached; the message says which.
    ``code``: the error envelope's code, when the server sent one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


def api_url(url: str) -> str:
    """The OpenAI API's base URL for what a user typed: ``http://`` when no scheme is given,
    ``/v1`` when no path is (``http://127.0.0.1:8000`` is where the README's server is)."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ChatError(f"{url!r} is not a URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ChatError(f"{url!r} is not an http:// or https:// URL of a server")
    url = url.rstrip("/")
    return url + "/v1" if parsed.path in ("", "/") else url


def is_chat_model(card: dict[str, Any]) -> bool:
    """Cards that list their endpoints say whether they chat (embedding models do not); others
    are taken as chat models (as the chat page does)."""
    endpoints = card.get("endpoints")
    return not isinstance(endpoints, list) or any("chat" in str(e) for e in endpoints)


# Model output may carry terminal control sequences (clipboard writes, title changes, a fake
# prompt): only newlines and tabs of the C0/C1 controls reach the terminal.
# Whole escape sequences go (CSI such as ESC[2J, OSC such as ESC]52;...BEL), then any other
# control character.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


class ChatClient:
    """The few calls the chat makes, over one ``httpx.Client``."""

    def __init__(self, url: str, api_key: str | None) -> None:
        """``url``: the server's OpenAI API (``api_url``); raises ``ChatError`` for one that is
        not a URL."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = api_url(url)
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=None)
        self.windows: dict[str, int] = {}  # model -> context window, as /models last said

    def close(self) -> None:
        self._http.close()

    def model_cards(self) -> list[dict[str, Any]]:
        """``/models``' cards (and each model's context window noted in ``windows``)."""
        try:
            reply = self._http.get("/models", timeout=10)
        except httpx.HTTPError as exc:
            raise ChatError(
                f"cannot reach {self.url} ({exc}): is `llmgate serve` running?"
            ) from exc
        if reply.status_code == 404:
            raise ChatError(f"{self.url}/models is not an OpenAI-compatible model list (404)")
        if reply.status_code != 200:
            raise _error(reply)
        try:
            cards = [card for card in reply.json()["data"] if isinstance(card["id"], str)]
        except (ValueError, KeyError, TypeError) as exc:
            raise ChatError(f"{self.url}/models did not answer with a model list") from exc
        for card in cards:
            window = card.get("max_model_len") or card.get("context_length")
            if isinstance(window, int) and window > 0:
                self.windows[card["id"]] = window
        return cards

    def models(self) -> list[str]:
        """The chat models served there (embedding models left out)."""
        return [card["id"] for card in self.model_cards() if is_chat_model(card)]

    def stream(self, body: dict[str, Any]) -> Generator[dict[str, Any], None, None]:
        """The chunks of a streamed chat completion; closing the iterator closes the request."""
        try:
            with self._http.stream("POST", "/chat/completions", json=body) as reply:
                if reply.status_code != 200:
                    reply.read()
                    raise _error(reply)
                data: list[str] = []
                for line in reply.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                        continue
                    if line or not data:
                        continue  # comments, other fields; an event ends at a blank line
                    payload, data = "\n".join(data), []
                    if payload == "[DONE]":
                        return
                    yield _chunk(payload)
                if data and data != ["[DONE]"]:
                    yield _chunk("\n".join(data))
        except httpx.HTTPError as exc:
            raise ChatError(f"cannot reach {self.url}: {exc}") from exc


def _chunk(payload: str) -> dict[str, Any]:
    try:
        chunk = json.loads(payload)
    except ValueError as exc:
        raise ChatError(f"the server sent a chunk that is not JSON: {payload[:200]!r}") from exc
    if not isinstance(chunk, dict):
        raise ChatError("the server sent an unexpected chunk")
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else error
        code = error.get("code") if isinstance(error, dict) else None
        raise ChatError(
            str(message or "the stream failed"), code if isinstance(code, str) else None
        )
    return chunk


def _error(reply: httpx.Response) -> ChatError:
    try:
        error = reply.json()["error"]
        code = error.get("code")
        return ChatError(
            f"{reply.status_code}: {error['message']}", code if isinstance(code, str) else None
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return ChatError(f"{reply.status_code}: {reply.text.strip()[:500]}")
