"""Matching a presented API key against the configured ones, plain or hashed.

A configured ``key`` is the key itself or ``sha256:<64 hex>`` of it. The presented key is
hashed once and compared with ``hmac.compare_digest`` against every configured key, hashed
ones by digest and plain ones by value, with no early exit: the time taken does not say which
key matched or how much of one did. ``hash_key`` is what ``llmgate hash-key`` prints.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from gateway.config import ApiKey


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
