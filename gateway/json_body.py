"""A JSON body is read as JSON whatever the Content-Type says.

``curl URL -d '{...}'`` (the way the Ollama and llama.cpp docs show requests) sends
``application/x-www-form-urlencoded``; FastAPI then hands the routes bytes, not a JSON object,
and the client got a 400 saying its object was not one. Ollama and llama-server read such a
body as JSON, and so does every llmgate surface: when the body of a POST looks like JSON
(``{`` or ``[`` first) and the Content-Type is missing, a form, or plain text, the request
is relabelled ``application/json``. Any other type (say ``application/xml``) is left as sent.
"""

from __future__ import annotations

from starlette.types import Message, Scope

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
