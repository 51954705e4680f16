"""HTTP for the emulator: status lines, OpenAI's error body, reading a request, checking fields.

Every endpoint raises `BadRequest` for input it cannot serve; the router turns it into
OpenAI's error JSON (`{"error": {"message", "type", "param", "code"}}`).
"""
from __future__ import annotations

import json
from typing import Any, Callable, Iterable

MAX_BODY = 1 << 20

StartResponse = Callable[..., Any]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}
_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                429: "rate_limit_error"}
JSON_HEADERS = [("Content-Type", "application/json")]
SSE_HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")]


class BadRequest(Exception):
    """Input the emulator will not serve; `status`, `param`, `code` and `type` go to the error body."""

    def __init__(self, message: str, status: int = 400, param: str | None = None,
                 code: str | None = None, error_type: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code, self.error_type = status, param, code, error_type


def status_line(status: int) -> str:
    return f"{status} {_REASONS.get(status, 'Error')}"


def error_body(status: int, message: str, param: str | None = None, code: str | None = None,
               error_type: str | None = None) -> bytes:
    if error_type is None:
        error_type = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return json.dumps({"error": {"message": message, "type": error_type,
                                 "param": param, "code": code}}).encode()


def error_response(start_response: StartResponse, exc: BadRequest) -> Iterable[bytes]:
    start_response(status_line(exc.status), list(JSON_HEADERS))
    return [error_body(exc.status, str(exc), exc.param, exc.code, exc.error_type)]


def json_response(start_response: StartResponse, status: int, payload: object) -> Iterable[bytes]:
    start_response(status_line(status), list(JSON_HEADERS))
    return [json.dumps(payload).encode()]


def read_json(environ: dict) -> dict:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BadRequest("Invalid Content-Length") from None
    if length > MAX_BODY:
        raise BadRequest("Request body too large", 413)
    raw = environ["wsgi.input"].read(length) if length else b""
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        raise BadRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


def positive_int(body: dict, *names: str, default: int | None = None,
                 most: int | None = None) -> int | None:
    """The first of `names` present in `body`, checked to be an integer from 1 (to `most`)."""
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1 or (most and value > most):
            bound = f" no greater than {most}" if most else ""
            raise BadRequest(f"'{name}' must be a positive integer{bound}.", param=name)
        return value
    return default


def required_model(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required.", param="model")
    return model


def words(content: object) -> int:
    """A prompt's length in tokens, as the emulator counts them: its words (of a content's text parts)."""
    if content is None:
        return 0
    if isinstance(content, list):
        return sum(words(part.get("text") if isinstance(part, dict) else part) for part in content)
    return len(str(content).split())
