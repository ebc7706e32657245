"""The one table from an upstream's HTTP error status to the error tree, for every upstream.

Each upstream kind parses its own error body into an ``UpstreamReply`` (Ollama's
``{"error": "text"}``, OpenAI's envelope) and says whether it reports an over-long prompt;
``status_error`` picks the class. Whether the request may go to another replica or a fallback
is then the class's ``retryable``: 429, 503 and 5xx yes, a client's 4xx no. A 500 that carries
the upstream's own error body is the request's failure, not the replica's
(``UpstreamAnswerError``: no cool-down for it).
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    RateLimitError,
    UpstreamAnswerError,
    UpstreamError,
)


@dataclass(frozen=True)
class UpstreamReply:
    """An upstream's error reply, parsed. ``context_exceeded``: the upstream says the prompt
    does not fit the model's window (then ``message`` says so in the client's terms)."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    context_exceeded: bool = False
    enveloped: bool = False  # the body was the upstream's own error object, not a proxy's page


def status_error(reply: UpstreamReply, *, model: str, upstream: str, missing: str) -> GatewayError:
    """``upstream`` names the server kind in messages ("upstream ollama"); ``missing`` says
    what a 404 means there and what to do about it."""
    status, text = reply.status, reply.message
    if status in (400, 422):
        if reply.context_exceeded:
            return ContextLengthExceededError(text, param=reply.param or "messages")
        return InvalidRequestError(text, param=reply.param, code=reply.code or "invalid_request")
    if status == 404:
        return ModelNotFoundError(f"model '{model}': {missing} ({text})")
    if status == 429:
        return RateLimitError(f"{upstream} is rate limiting: {text}", retry_after=1)
    if status in (401, 403):
        return UpstreamError(
            f"model '{model}': {upstream} refused our credentials ({status}); "
            "check this model's api_key"
        )
    if status == 503:
        return BackendUnavailableError(f"{upstream} is unavailable: {text}", retry_after=2)
    if status == 500 and reply.enveloped:  # it answered, in its own words: this request failed
        return UpstreamAnswerError(f"model '{model}': {upstream} failed ({status}): {text}")
    return UpstreamError(f"model '{model}': {upstream} failed ({status}): {text}")
