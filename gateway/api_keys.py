"""Matching a presented API key against the configured ones, plain or hashed.

A configured ``key`` is the key itself or ``sha256:<64 hex>`` of it. The presented key is
hashed once and compared with ``hmac.compare_digest`` against every configured key, hashed
ones by digest and plain ones by value, with no early exit: the time taken does not say which
key matched or how much of one did. ``hash_key`` is what ``llmgate hash-key`` prints.

``authenticate`` is the check of one HTTP request (called by
``gateway.middleware.RequestMiddleware``): the model routes (``/v1/*``, Ollama's ``/api/*`` but
``/api/version``, the tutorials' ``POST /``) and ``/admin/*`` need a configured key; the chat
page, ``/health`` and ``/metrics`` stay open. A matched key's allowed models go in
``scope["state"]["allowed_models"]`` (the handlers' 403 check), its ``admin`` flag and its
non-secret ``key_id`` there too, and the ``key_id`` in the request record.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from starlette.types import Scope

from backends.errors import AuthenticationError
from gateway.config import ApiKey
from gateway.errors import surface_of
from gateway.request_record import current_record


def hash_key(key: str) -> str:
    """The config form of a key that is stored hashed: ``sha256:<64 hex>``."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def match_key(keys: Sequence[ApiKey], presented: str) -> ApiKey | None:
    """The configured key ``presented`` is, or None. Compares against every key."""
    digest = hash_key(presented).encode()
    plain = presented.encode()
    found: ApiKey | None = None
    for key in keys:
        candidate = key.key.encode()
        same = hmac.compare_digest(candidate, digest if key.hashed else plain)
        if same and found is None:
            found = key
    return found


def authenticate(keys: Sequence[ApiKey], scope: Scope) -> AuthenticationError | None:
    """The 401 for a request that needs a key and has none that matches (None: it may pass;
    a matched key is noted in the scope's state and the request record)."""
    if not keys or not needs_key(scope):
        return None
    presented = presented_key(scope)
    match = match_key(keys, presented) if presented is not None else None
    if match is None:
        reason = "missing API key" if presented is None else "invalid API key"
        anthropic = surface_of(scope["path"]) == "anthropic"
        how = "'x-api-key: <key>'" if anthropic else "'Authorization: Bearer <key>'"
        return AuthenticationError(f"{reason}: send {how} with a configured key")
    state = scope.setdefault("state", {})
    state["allowed_models"] = match.models
    state["admin"] = match.admin
    state["key_id"] = match.key_id
    record = current_record()
    if record is not None:
        record.key_id = match.key_id
    return None


def needs_key(scope: Scope) -> bool:
    path: str = scope["path"]
    if path.startswith("/api/"):
        return path != "/api/version"
    if path.startswith(("/v1/", "/admin/")):
        return True
    return path == "/" and scope.get("method") == "POST"


def presented_key(scope: Scope) -> str | None:
    headers = dict(scope.get("headers") or [])
    auth = headers.get(b"authorization", b"").decode("latin-1").strip()
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    api_key = headers.get(b"x-api-key") or headers.get(b"api-key")
    return api_key.decode("latin-1").strip() if api_key else None
