"""The one place errors become responses: the JSON body of every error, on every endpoint.

Our own `ApiError`s, Werkzeug's 404/405/413, a client's broken chunked framing and, as a
last resort, any bug: each answered with `{"error": {"type", "message", "param", "code"}}`
and never a traceback.
"""
from __future__ import annotations

import logging
import socket

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import ApiError, ClientTimeout, InvalidRequest, RouteError
from ..ops.requestlog import current_record
from ..runtime import client_socket

log = logging.getLogger("flaskapp")


def error_response(error: ApiError) -> Response:
    record = current_record()
    if record is not None:
        record.failure = error  # the outcome the request log writes
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
    client = client_socket(request.environ)
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
        response = error_response(RouteError(exc.description or exc.name, exc.code or 500))
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
