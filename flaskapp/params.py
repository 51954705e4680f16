"""What a caller may ask of the prompt views, read and checked before any upstream call.

The same fields come from the query string (`GET`) or a JSON object (`POST`):
`prompt`, `system`, `max_tokens`, `temperature`, `model`. Everything is checked here,
so views never see a value the upstream could choke on.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from flask import Request

from .errors import InvalidRequest

FIELDS = ("prompt", "system", "max_tokens", "temperature", "model")


@dataclass(frozen=True)
class ChatParams:
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


def request_body(request: Request) -> bytes:
    """The whole request body; a body cut short of its Content-Length is refused, not guessed at."""
    raw = request.get_data(cache=True)
    if request.content_length is not None and len(raw) != request.content_length:
        raise InvalidRequest("The request body is shorter than its Content-Length.")
    return raw


def read_fields(request: Request) -> tuple[Mapping[str, Any], bool]:
    """The caller's fields and whether they came typed (JSON) rather than as strings."""
    if request.method != "POST":
        return request.args, False
    raw = request_body(request)
    if not raw.strip():
        return request.args, False
    if request.mimetype == "application/x-www-form-urlencoded":
        return request.form, False
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    unknown = sorted(set(body) - set(FIELDS) - {"format"})
    if unknown:
        raise InvalidRequest(f"Unknown field(s): {', '.join(unknown)}. Known: {', '.join(FIELDS)}.")
    return body, True


def parse(request: Request, config: Mapping[str, Any]) -> ChatParams:
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
    max_tokens = _number(fields, "max_tokens", int, typed)
    if max_tokens is not None and not 1 <= max_tokens <= config["MAX_TOKENS_LIMIT"]:
        raise InvalidRequest(f"'max_tokens' must be between 1 and {config['MAX_TOKENS_LIMIT']}.")
    temperature = _number(fields, "temperature", float, typed)
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise InvalidRequest("'temperature' must be between 0 and 2.")
    output = fields.get("format")
    if output is not None and output not in ("text", "sse"):
        raise InvalidRequest("'format' must be 'text' or 'sse'.")
    return ChatParams(prompt, system, model, max_tokens, temperature, output)


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
