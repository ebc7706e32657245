"""A JSON body is read as JSON whatever the Content-Type says.

``curl URL -d '{...}'`` (the way the Ollama and llama.cpp docs show requests) sends
``application/x-www-form-urlencoded``; FastAPI then hands the routes bytes, not a JSON object,
and the client got a 400 saying its object was not one. Ollama and llama-server read such a
body as JSON, and so does every llmgate surface: when the body of a POST looks like JSON
(``{`` or ``[`` first) and the Content-Type is missing, a form, or plain text, the request
is relabelled ``application/json``. Any other type (say ``application/xml``) is left as sent.

A JSON body may escape a lone UTF-16 surrogate (``"\\ud83d"``: a JavaScript client that cut a
string inside an emoji sends one). Python's ``json`` reads it into a string that is not text
(no UTF-8 encodes it), which would fail deep in a tokenizer or a response encoder; such a body
is refused up front, on every surface, as the Ollama surface's strict parser refuses it.
"""

from __future__ import annotations

import json
import re

from starlette.types import Message, Scope

from backends.errors import InvalidRequestError

_RELABELLED = {b"", b"application/x-www-form-urlencoded", b"text/plain"}


def read_as_json(scope: Scope, body: Message) -> None:
    """Relabel ``scope``'s Content-Type as JSON when ``body`` is JSON sent as a form."""
    kind = b""
    for name, value in scope["headers"]:
        if name == b"content-type":
            kind = value.split(b";")[0].strip().lower()
            break
    if kind not in _RELABELLED or body.get("body", b"")[:64].lstrip()[:1] not in (b"{", b"["):
        return
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    scope["headers"] = [*headers, (b"content-type", b"application/json")]


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def lone_surrogate(body: Message) -> InvalidRequestError | None:
    """The 400 for a JSON body that escapes a lone UTF-16 surrogate; None for any other body
    (one that is not JSON is left to the route to refuse)."""
    data = body.get("body", b"")
    if b"\\u" not in data or _SURROGATE_ESCAPE.search(data) is None:
        return None  # the common case: no surrogate escapes at all
    try:
        json.dumps(json.loads(data), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        char = exc.object[exc.start : exc.start + 1]
        return InvalidRequestError(
            f"request body is not valid JSON: it escapes a lone UTF-16 surrogate "
            f"(\\u{ord(char):04x}), which is not a character; send a complete surrogate pair "
            "or the character as UTF-8"
        )
    except (ValueError, RecursionError):  # not JSON: the route says so
        return None
    return None
