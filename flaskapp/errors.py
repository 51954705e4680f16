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
client's exceptions. Upstream messages
are never passed on verbatim: an upstream 401 message quotes part of the API key.
"""
from __future__ import annotations

import logging
import socket

import openai
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger("flaskapp")


class ApiError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None  # OpenAI's machine-readable code, where one applies
    outcome = "rejected"  # for the request log: what became of the request

    def __init__(self, message: str, *, retry_after: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.param = param  # the request field at fault

    def body(self) -> dict:
        # OpenAI's error shape, so its SDKs read ours as they read theirs.
        return {"error": {"type": self.type, "message": self.message, "param": self.param, "code": self.code}}


class InvalidRequest(ApiError):
    status, type = 400, "invalid_request_error"


class ClientTimeout(ApiError):
    status, type, code = 408, "invalid_request_error", "request_timeout"


class ClientClosedRequest(ApiError):
    status, type, outcome = 499, "client_closed_request", "client_disconnected"


class UpstreamError(ApiError):
    status, type, outcome = 502, "upstream_error", "upstream_error"
    retryable = False  # whether asking again, before the first byte, may succeed


class UpstreamRateLimited(UpstreamError):
    status, type = 429, "rate_limit_error"


class UpstreamUnavailable(UpstreamError):
    status, type = 503, "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status, type = 504, "upstream_timeout"


def from_status(status: int, retry_after: str | None = None) -> UpstreamError:
    """The error to answer with when the upstream answered with this HTTP status."""
    if status == 429:
        error: UpstreamError = UpstreamRateLimited("The model server is rate limiting requests; retry later.",
                                                   retry_after=retry_after)
    elif status in (401, 403):
        error = UpstreamError("The model server rejected this service's credentials.")
    elif status in (400, 404, 422):
        error = UpstreamError(f"The model server rejected the request ({status}).")
    elif status in (502, 503, 504):
        error = UpstreamUnavailable(f"The model server is unavailable ({status}).")
    else:
        error = UpstreamError(f"The model server failed ({status}).")
    error.retryable = status == 429 or status >= 500
    return error


def unreachable() -> UpstreamError:
    error = UpstreamUnavailable("The model server could not be reached.")
    error.retryable = True
    return error


def unreadable() -> UpstreamError:
    return UpstreamError("The model server sent a response that could not be read.")


def from_openai(exc: openai.OpenAIError) -> UpstreamError:
    """The error to answer with when the `openai` client raised `exc`."""
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeout("The model server did not answer in time.")
    if isinstance(exc, openai.APIConnectionError):
        return unreachable()
    if isinstance(exc, openai.APIStatusError):
        return from_status(exc.status_code, exc.response.headers.get("retry-after"))
    return unreadable()


def error_response(error: ApiError) -> Response:
    g.error = error  # for the request log
    response = jsonify(error.body())
    response.status_code = error.status
    if error.retry_after:
        response.headers["Retry-After"] = error.retry_after
    if isinstance(error, ClientTimeout):
        _close_after_answer()
    return response


def _close_after_answer() -> None:
    # The rest of the body may still come: the connection cannot carry another request.
    # gunicorn drops an application's `Connection: close`; a socket shut for reading
    # makes its next read see the end, so it closes once the 408 is written.
    client = request.environ.get("gunicorn.socket")
    if client is not None:
        try:
            client.shutdown(socket.SHUT_RD)
        except OSError:
            pass


def init_app(app: Flask) -> None:
    app.register_error_handler(ApiError, error_response)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        # 404, 405, 413 and friends: the same JSON shape as our own errors.
        error = ApiError(exc.description or exc.name)
        error.status, error.type = exc.code or 500, "invalid_request_error"
        response = error_response(error)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    try:  # gunicorn parses a chunked body only as the view reads it, and raises from there
        from gunicorn.http.errors import NoMoreData, ParseException
    except ImportError:
        pass
    else:
        @app.errorhandler(ParseException)
        @app.errorhandler(NoMoreData)
        def malformed_body(exc: Exception) -> Response:
            # The client's framing is broken (bad chunk size, missing terminator, body cut
            # short): a 400, not a bug of ours to log with a traceback.
            return error_response(InvalidRequest("The request body is malformed HTTP (bad chunked encoding)."))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        # A bug: log it for us, never show the traceback to the caller.
        log.exception("unhandled error")
        return error_response(ApiError("The server failed to handle this request."))
