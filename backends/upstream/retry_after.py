"""An upstream's ``Retry-After`` passed on to the client (``upstream_retry_after``)."""

from __future__ import annotations

import email.utils
import time

from backends.errors import GatewayError

# An upstream's Retry-After beyond this many seconds is taken as this (a typo, or a bug)
MAX_RETRY_AFTER = 3600.0


def upstream_retry_after(error: GatewayError, header: str | None) -> GatewayError:
    """``error`` (an upstream's error reply, mapped), told the upstream's ``Retry-After`` (delay
    seconds or an HTTP date) when it has one of its own (429, 503): the later of the two, so
    that clients do not come back before the upstream wants them."""
    if error.retry_after is None or not header:
        return error
    header = header.strip()
    try:
        seconds = float(header) if header.isdigit() else _seconds_until(header)
    except (TypeError, ValueError, OverflowError):
        return error  # unreadable: ours stands
    error.retry_after = max(error.retry_after, min(seconds, MAX_RETRY_AFTER))
    return error


def _seconds_until(http_date: str) -> float:
    when = email.utils.parsedate_to_datetime(http_date)
    return when.timestamp() - time.time()
