"""The error tree every backend raises and the gateway maps to HTTP in one place.

Each class carries its OpenAI error ``type``, default ``code`` and HTTP ``status``. Backends
raise only these; anything else escaping a backend is a bug (500, generic message).
This module is a leaf: it imports nothing from the project.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar


class GatewayError(Exception):
    """Base of every error llmgate reports to a client.

    ``retry_after`` (seconds) becomes a ``Retry-After`` header where the status allows it.
    ``retryable`` says whether another replica or a fallback model may serve the request
    instead (the one retry policy: read only by ``may_retry``).
    """

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = "internal_error"
    retryable: ClassVar[bool] = False
    # an upstream replica's failure (counts towards its cool-down) rather than the request's
    replica_fault: ClassVar[bool] = True

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after

    def to_body(self) -> dict[str, Any]:
        """The OpenAI error envelope: always all four keys."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        # whole seconds, rounded up: a client that waits exactly this long is not early
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class InvalidRequestError(GatewayError):
    """400: the request is malformed or has a bad value (``param`` names the field)."""

    status = 400
    error_type = "invalid_request_error"
    default_code = "invalid_request"


class ContextLengthExceededError(InvalidRequestError):
    """400: prompt tokens plus requested completion tokens exceed the context window."""

    default_code = "context_length_exceeded"


class UnsupportedParameterError(InvalidRequestError):
    """400: a valid OpenAI parameter this engine cannot honour (never silently dropped)."""

    default_code = "unsupported_parameter"


class AuthenticationError(GatewayError):
    """401: missing or wrong API key."""

    status = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    """403: the key is valid but not allowed to use this model."""

    status = 403
    error_type = "permission_error"
    default_code = "model_not_allowed"


class NotFoundError(GatewayError):
    """404: an unknown route."""

    status = 404
    error_type = "invalid_request_error"
    default_code: ClassVar[str | None] = None


class ModelNotFoundError(NotFoundError):
    """404: no configured model or alias has this name."""

    default_code = "model_not_found"

    def __init__(self, message: str, *, param: str | None = "model") -> None:
        super().__init__(message, param=param)


class MethodNotAllowedError(GatewayError):
    """405: the route exists but not with this method."""

    status = 405
    error_type = "invalid_request_error"
    default_code: ClassVar[str | None] = None


class PayloadTooLargeError(GatewayError):
    """413: the request body is larger than the server accepts (``server.max_body_bytes``)."""

    status = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimitError(GatewayError):
    """429: a rate limit was hit; ``retry_after`` says when to come back."""

    status = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"
    retryable = True


class QueueFullError(RateLimitError):
    """429: the engine's bounded wait queue is full; the request was not queued."""

    default_code = "queue_full"


class UpstreamError(GatewayError):
    """502: an upstream server answered with an error."""

    status = 502
    error_type = "api_error"
    default_code = "upstream_error"
    retryable = True


class UpstreamAnswerError(UpstreamError):
    """502: the upstream answered this request with an error of its own (a 500 with an error
    body): it is up and answering, so the failure is the request's, not the replica's. Another
    replica may still try it, but it does not count towards the replica's cool-down (a client
    must not be able to take a model down for everyone by repeating a bad request)."""

    replica_fault = False


class BackendUnavailableError(GatewayError):
    """503: the engine is not loaded (or failed to load) or the upstream is unreachable."""

    status = 503
    error_type = "api_error"
    default_code = "backend_unavailable"
    retryable = True


class BackendTimeoutError(GatewayError):
    """504: an engine or upstream deadline passed."""

    status = 504
    error_type = "api_error"
    default_code = "backend_timeout"
    retryable = True


class DeadlineExceededError(BackendTimeoutError):
    """504: the request's own deadline (``request_timeout``) passed; its work was stopped. Not
    retryable: the deadline is the request's, so a fallback would have no time left."""

    retryable = False


class InternalError(GatewayError):
    """500: a bug. The client gets a generic message; details go to the log only."""

    status = 500
    error_type = "api_error"
    default_code = "internal_error"


def may_retry(error: BaseException) -> bool:
    """Whether another replica or a fallback model may serve a request that failed with
    ``error`` before anything reached the client: the engine or upstream was unavailable,
    overloaded, timed out or broke; never for a client's mistake (4xx) or a bug."""
    return isinstance(error, GatewayError) and error.retryable
