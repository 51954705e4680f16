"""What a caller may ask of the prompt views, read and checked before any upstream call.

The same fields come from the query string (`GET`) or a JSON object (`POST`):
`prompt`, `system`, `max_tokens`, `temperature`, `model`. Everything is checked here,
so views never see a value the upstream could choke on.
"""
from __future__ import annotations

import json
import math
import socket
from typing import Any, Mapping, NamedTuple

from flask import Request, current_app
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from ..errors import ClientTimeout, InvalidRequest

FIELDS = ("prompt", "system", "max_tokens", "temperature", "model")
MAX_JSON_DEPTH = 100  # levels of nesting in a request body: far more than a chat request needs
TOO_DEEP = f"The request body is nested too deeply (more than {MAX_JSON_DEPTH} levels)."


class ChatParams(NamedTuple):  # made once a request: a frozen dataclass's __init__ costs four times as much
    prompt: str
    system: str
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    format: str | None = None  # /stream only: "text" or "sse"; None lets Accept decide

    def messages(self) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": self.prompt})
        return messages

    def chat_body(self, stream: bool = False) -> dict[str, Any]:
        """The chat-completions request body for this request."""
        body: dict[str, Any] = {"model": self.model, "messages": self.messages()}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if stream:
            body["stream_options"] = {"include_usage": True}  # for the `done` event and the log
        return body


def request_body(request: Request) -> bytes:
    """The whole request body; a body cut short of its Content-Length is refused, not guessed at.

    A body that stalls for CLIENT_TIMEOUT is a 408; a chunked body past
    MAX_CONTENT_LENGTH a 413, as one whose Content-Length says so.
    """
    try:
        raw = request.get_data(cache=True)
    except ClientDisconnected as exc:
        # Werkzeug turns every read error into ClientDisconnected; the socket's timeout is its cause.
        if isinstance(exc.__context__, socket.timeout):
            raise _stalled() from None
        raise
    if request.content_length is None:
        _refuse_beyond_limit(request, len(raw))
    elif len(raw) != request.content_length:
        raise InvalidRequest("The request body is shorter than its Content-Length.")
    return raw


def _refuse_beyond_limit(request: Request, size: int) -> None:
    # Werkzeug reads a body without Content-Length (chunked) up to MAX_CONTENT_LENGTH and
    # stops there, silently: whatever lies beyond would be dropped. One byte more from
    # the server's stream tells a body that ends at the limit from one that goes on.
    limit = request.max_content_length
    if limit is not None and size >= limit and request.environ.get("wsgi.input_terminated"):
        try:
            more = request.input_stream.read(1)
        except socket.timeout:
            raise _stalled() from None
        if more:
            raise RequestEntityTooLarge()


def _stalled() -> ClientTimeout:
    return ClientTimeout(f"No byte of the request body came for {current_app.config['CLIENT_TIMEOUT']:g} s.")


INVALID_JSON = "The request body is not valid JSON."


def load_json(raw: bytes) -> Any:
    """The request body's JSON, for every endpoint; a 400 when it is not JSON, or nests too deeply.

    Python's JSON parser and writer recurse once per level, up to the interpreter's
    limit (1,000 frames, less what the server stack already holds): a body that parses
    may still fail to be written back out to the upstream. MAX_JSON_DEPTH keeps both
    far from it.
    """
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(INVALID_JSON) from None
    except RecursionError:
        raise InvalidRequest(TOO_DEEP) from None
    # Nesting that deep takes as many brackets: most bodies need no walk.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _deeper_than(body, MAX_JSON_DEPTH):
        raise InvalidRequest(TOO_DEEP)
    return body


def _deeper_than(value: Any, limit: int) -> bool:
    # Level by level, each a list comprehension: a worst-case body (256 KiB of `[]`) walks
    # in a few ms, an eighth of its parse; json.loads makes only exact dicts and lists.
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        level = [child for item in level for child in (item.values() if type(item) is dict else item)
                 if type(child) is dict or type(child) is list]
    return False


def read_fields(request: Request) -> tuple[Mapping[str, Any], bool]:
    """The caller's fields and whether they came typed (JSON) rather than as strings."""
    # Plain dicts of first values: a MultiDict's `get` raises and catches an HTTP exception
    # for every field the caller left out.
    if request.method != "POST":
        return request.args.to_dict(), False
    raw = request_body(request)
    if not raw.strip():
        return request.args.to_dict(), False
    if request.mimetype == "application/x-www-form-urlencoded":
        return request.form.to_dict(), False
    body = load_json(raw)
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    unknown = sorted(set(body) - set(FIELDS) - {"format"})
    if unknown:
        raise InvalidRequest(f"Unknown field(s): {', '.join(unknown)}. Known: {', '.join(FIELDS)}.")
    return body, True


def parse(request: Request, config: Mapping[str, Any], record: Any = None) -> ChatParams:
    """The prompt views' parameters, every one checked; the model noted on `record` once allowed."""
    fields, typed = read_fields(request)
    prompt = _string(fields, "prompt", config["DEFAULT_PROMPT"])
    if not prompt.strip():
        raise InvalidRequest("'prompt' must not be empty.")
    if len(prompt) > config["MAX_PROMPT_CHARS"]:
        raise InvalidRequest(f"'prompt' is longer than {config['MAX_PROMPT_CHARS']} characters.")
    system = _string(fields, "system", config["SYSTEM_PROMPT"])
    if len(system) > config["MAX_PROMPT_CHARS"]:
        raise InvalidRequest(f"'system' is longer than {config['MAX_PROMPT_CHARS']} characters.")
    model = _string(fields, "model", config["MODEL"])
    if model not in config["ALLOWED_MODELS"]:
        raise InvalidRequest(f"Model {model[:100]!r} is not allowed here. "
                             f"Allowed: {', '.join(config['ALLOWED_MODELS'])}.")
    if record is not None:
        record.model = model
    max_tokens = _number(fields, "max_tokens", int, typed)
    temperature = _number(fields, "temperature", float, typed)
    check_sampling({"max_tokens": max_tokens, "temperature": temperature}, config)
    output = fields.get("format")
    if output is not None and output not in ("text", "sse"):
        raise InvalidRequest("'format' must be 'text' or 'sse'.")
    return ChatParams(prompt, system, model, max_tokens, temperature, output)


TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")


def check_sampling(fields: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """The token budget and temperature this deployment allows, for `/`, `/stream` and `/v1` alike.

    Values come as JSON gives them: `true` is not 1, and 1.5 is not an integer.
    """
    limit = config["MAX_TOKENS_LIMIT"]
    for name in TOKEN_FIELDS:
        value = fields.get(name)
        if value is not None and (type(value) is not int or not 1 <= value <= limit):
            raise InvalidRequest(f"'{name}' must be an integer between 1 and {limit}.", param=name)
    temperature = fields.get("temperature")
    if temperature is not None and (type(temperature) not in (int, float) or not 0 <= temperature <= 2):
        raise InvalidRequest("'temperature' must be a number between 0 and 2.", param="temperature")


def _string(fields: Mapping[str, Any], name: str, default: str) -> str:
    value = fields.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string.")
    if "\x00" in value:
        raise InvalidRequest(f"'{name}' must not contain NUL characters.")
    return value


def _number(fields: Mapping[str, Any], name: str, kind: type, typed: bool) -> Any:
    value = fields.get(name)
    if value is None or (not typed and value == ""):
        return None
    what = "an integer" if kind is int else "a number"
    if typed:
        # JSON: true is not 1, and 1.5 is not an integer.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                kind is int and not isinstance(value, int)):
            raise InvalidRequest(f"'{name}' must be {what}.")
        number = kind(value)
    else:
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise InvalidRequest(f"'{name}' must be {what}.") from None
    if kind is float and not math.isfinite(number):
        raise InvalidRequest(f"'{name}' must be a finite number.")
    return number
