"""Errors the service answers with, and the one place they become JSON:
{"error": {"type", "message", "param", "code"}}, OpenAI's shape, on every endpoint.

    ApiError                    any status
    ├── InvalidRequest          400 invalid_request_error (bad input; 404/405/413 come from Werkzeug)
    ├── ClientTimeout           408 request_timeout: the body stalled for CLIENT_TIMEOUT; the connection closes
    ├── ClientClosedRequest     499 client_closed_request: the client left first (nobody reads it)
    └── UpstreamError           502 upstream_error: the model server failed or answered nonsense
        ├── UpstreamRateLimited 429 rate_limit_error, with the upstream's Retry-After
        ├── UpstreamUnavailable 503 upstream_unavailable: connection refused or reset
        └── UpstreamTimeout     504 upstream_timeout: no answer, first token or next chunk in time

`from_status()` maps upstream HTTP statuses onto this tree, `from_openai()` the `openai`
client's exceptions. Upstream messages are never passed on verbatim: an upstream 401
message quotes part of the API key. Knows nothing of Flask: `web/handlers.py` turns
these into responses.
"""
from __future__ import annotations

import openai

# What became of a request, for its log line and metrics.
COMPLETED = "completed"
CLIENT_DISCONNECTED = "client_disconnected"
UPSTREAM_ERROR = "upstream_error"
REJECTED = "rejected"


class ApiError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None  # OpenAI's machine-readable code, where one applies
    outcome = REJECTED

    def __init__(self, message: str, *, retry_after: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self._set(message=message, retry_after=retry_after, param=param)  # param: the request field at fault

    def _set(self, **attributes: object) -> None:
        for name, value in attributes.items():
            BaseException.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        # Immutable once made: an error is shared by the log, the metrics and the response,
        # and a handler that changed one would change what the others report. Python's own
        # bookkeeping (__traceback__, __cause__, __notes__) stays writable.
        if not name.startswith("__"):
            raise AttributeError(f"{type(self).__name__} is immutable: pass {name} when making it")
        BaseException.__setattr__(self, name, value)

    def body(self) -> dict:
        # OpenAI's error shape, so its SDKs read ours as they read theirs.
        return {"error": {"type": self.type, "message": self.message, "param": self.param, "code": self.code}}


class InvalidRequest(ApiError):
    status, type = 400, "invalid_request_error"


class ClientTimeout(ApiError):
    status, type, code = 408, "invalid_request_error", "request_timeout"


class RouteError(ApiError):
    """404, 405, 413 and their kind, from the router: the status is the router's."""

    type = "invalid_request_error"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self._set(status=status)


class ClientClosedRequest(ApiError):
    status, type, outcome = 499, "client_closed_request", CLIENT_DISCONNECTED


class UpstreamError(ApiError):
    status, type, outcome = 502, "upstream_error", UPSTREAM_ERROR

    def __init__(self, message: str, *, retry_after: str | None = None, param: str | None = None,
                 retryable: bool = False) -> None:
        super().__init__(message, retry_after=retry_after, param=param)
        self._set(retryable=retryable)  # whether asking again, before the first byte, may succeed


class UpstreamRateLimited(UpstreamError):
    status, type = 429, "rate_limit_error"


class UpstreamUnavailable(UpstreamError):
    status, type = 503, "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status, type = 504, "upstream_timeout"


def from_status(status: int, retry_after: str | None = None) -> UpstreamError:
    """The error to answer with when the upstream answered with this HTTP status."""
    retryable = status == 429 or status >= 500
    if status == 429:
        return UpstreamRateLimited("The model server is rate limiting requests; retry later.",
                                   retry_after=retry_after, retryable=True)
    if status in (401, 403):
        return UpstreamError("The model server rejected this service's credentials.")
    if status in (400, 404, 422):
        return UpstreamError(f"The model server rejected the request ({status}).")
    if status in (502, 503, 504):
        return UpstreamUnavailable(f"The model server is unavailable ({status}).", retryable=True)
    return UpstreamError(f"The model server failed ({status}).", retryable=retryable)


def unreachable() -> UpstreamError:
    return UpstreamUnavailable("The model server could not be reached.", retryable=True)


def unreadable() -> UpstreamError:
    return UpstreamError("The model server sent a response that could not be read.")


def malformed() -> UpstreamError:
    """The upstream broke HTTP's framing: a 502 like any nonsense, not a 503 (it was reached)."""
    return UpstreamError("The model server sent a malformed HTTP response.")


def too_large(limit: int) -> UpstreamError:
    return UpstreamError(f"The model server's answer was larger than {limit} bytes.")


def withheld() -> UpstreamError:
    """The upstream's answer held this service's key (it was sent the key, and may echo it)."""
    return UpstreamError("The model server's answer was withheld: it held this service's credentials.")


def from_openai(exc: openai.OpenAIError) -> UpstreamError:
    """The error to answer with when the `openai` client raised `exc`."""
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeout("The model server did not answer in time.")
    if isinstance(exc, openai.APIConnectionError):
        return unreachable()
    if isinstance(exc, openai.APIStatusError):
        return from_status(exc.status_code, exc.response.headers.get("retry-after"))
    return unreadable()
