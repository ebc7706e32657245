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
    """The server answered with an error, or could not be reached; the message says which."""


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
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=None)

    def close(self) -> None:
        self._http.close()

    def models(self) -> list[str]:
        try:
            reply = self._http.get("/models", timeout=10)
        except httpx.HTTPError as exc:
            raise ChatError(f"cannot reach {self.url}: {exc}. Is `llmgate serve` running?") from exc
        if reply.status_code != 200:
            raise ChatError(_error_message(reply))
        try:
            return [str(card["id"]) for card in reply.json()["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ChatError(f"{self.url}/models did not answer with a model list") from exc

    def stream(self, body: dict[str, Any]) -> Generator[dict[str, Any], None, None]:
        """The chunks of a streamed chat completion; closing the iterator closes the request."""
        try:
            with self._http.stream("POST", "/chat/completions", json=body) as reply:
                if reply.status_code != 200:
                    reply.read()
                    raise ChatError(_error_message(reply))
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
        raise ChatError(str(message or "the stream failed"))
    return chunk


def _error_message(reply: httpx.Response) -> str:
    try:
        return f"{reply.status_code}: {reply.json()['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{reply.status_code}: {reply.text.strip()[:500]}"
