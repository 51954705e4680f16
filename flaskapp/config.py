"""Settings: defaults here, overridden by `FLASKAPP_*` environment variables, then by tests.

Every setting is cast and checked once at start-up, so a typo fails loudly before the
first request instead of as a 500 later. The upstream's own settings (`OPENAI_API_KEY`,
`OPENAI_BASE_URL`) are read by the `openai` client itself, as its users expect.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from flask import Flask

SEED_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer thoroughly, in well-organised paragraphs of plain prose."
)
SEED_PROMPT = (
    "Write a long, detailed essay on why streaming responses improve the experience of people "
    "waiting for answers from large language models."
)

DEFAULTS: dict[str, Any] = {
    "MODEL": "gpt-4",
    "ALLOWED_MODELS": "",  # comma-separated; MODEL is always allowed
    "SYSTEM_PROMPT": SEED_SYSTEM_PROMPT,
    "DEFAULT_PROMPT": SEED_PROMPT,
    "MAX_PROMPT_CHARS": 32_000,
    "MAX_TOKENS_LIMIT": 16_384,  # largest max_tokens a caller may ask for
    "MAX_CONTENT_LENGTH": 256 * 1024,  # Flask's own cap on request bodies (413)
    "CONNECT_TIMEOUT": 5.0,  # seconds to open the upstream connection
    "FIRST_TOKEN_TIMEOUT": 60.0,  # seconds from request to the first streamed token
    "IDLE_TIMEOUT": 60.0,  # longest silence between two streamed chunks
    "REQUEST_TIMEOUT": 600.0,  # whole blocking call
    "STREAM_TIMEOUT": 1800.0,  # whole streamed answer
    "MAX_ANSWER_BYTES": 32 * 1024 * 1024,  # largest upstream answer, streamed or blocking
    # A client that stalls this long, sending its body (408) or taking our bytes, is dropped.
    # As nginx's client_body_timeout and send_timeout.
    "CLIENT_TIMEOUT": 60.0,
    "MAX_RETRIES": 2,  # upstream retries before the first byte (connection errors, 429, 5xx)
    "UPSTREAM_MAX_CONNECTIONS": 10_000,  # per worker; one per concurrent stream
    "UPSTREAM_TRANSPORT": "lean",  # "httpx" for httpx's own transport (proxies, HTTP/2)
    "FAIR_SLICE": 0.001,  # seconds a stream may relay without letting others run; 0: never yield
    # Seconds between a stream's writes: tokens arriving meanwhile go out together, in one
    # write. 0: each upstream read is written at once. Up to 1 s.
    "STREAM_INTERVAL": 0.0,
    # Reliability: concurrent upstream calls per worker before 503 + Retry-After (0: no cap).
    # Half gunicorn's worker_connections (4000), so rejections and /healthz still get through.
    "MAX_INFLIGHT": 2000,
    # Gateway operations (docs/operations.md)
    "API_KEYS": "",  # comma-separated, or @/path/to/file with one key a line; empty: no keys needed
    "RATE_LIMIT": "",  # per key (or client address), e.g. "60/minute" or "5/second;100/hour"; empty: off
    "RATE_LIMIT_STORAGE_URI": "memory://",  # redis://host:6379 to share limits between instances
    "CORS_ORIGINS": "",  # comma-separated origins allowed to call from browsers; empty: CORS off
    "READY_CACHE_SECONDS": 5.0,  # how long /readyz reuses its last upstream check
    "READY_TIMEOUT": 2.0,  # seconds /readyz waits for the upstream's model list
    "DEMO_MAX_CONCURRENCY": 20,  # most requests of each kind the /demo page may fire at once
}


def _positive(cast: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        value = cast(value)
        if value <= 0:
            raise ValueError("must be positive")
        return value
    return check


def _non_negative(cast: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        value = cast(value)
        if value < 0:
            raise ValueError("must be zero or more")
        return value
    return check


def _at_most(limit: float, cast: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        value = cast(value)
        if value > limit:
            raise ValueError(f"must be at most {limit:g}")
        return value
    return check


def _models(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def _choice(*allowed: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if str(value) not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return str(value)
    return check


def _text(value: Any) -> str:
    value = str(value)
    if not value.strip():
        raise ValueError("must not be empty")
    return value


class Secrets(tuple):
    """A tuple of secrets that never shows them: not in repr, logs, or error messages."""

    def __repr__(self) -> str:
        return f"<{len(self)} hidden>"

    __str__ = __repr__


def _api_keys(value: Any) -> Secrets:
    if isinstance(value, (list, tuple)):
        keys = [str(v).strip() for v in value]
    elif str(value).strip().startswith("@"):
        path = str(value).strip()[1:]
        try:
            with open(path, encoding="utf-8") as file:
                keys = [line.strip() for line in file if not line.lstrip().startswith("#")]
        except OSError as exc:
            raise ValueError(f"cannot read the key file {path}: {exc.strerror}") from None
        if not any(keys):
            raise ValueError(f"the key file {path} holds no key")
    else:
        keys = [part.strip() for part in str(value).split(",")]
    keys = [key for key in keys if key]
    for number, key in enumerate(keys, 1):
        if not key.isascii() or not key.isprintable() or " " in key:
            raise ValueError(f"key {number} has a space or a character that cannot travel in a header")
    return Secrets(dict.fromkeys(keys))


def _rate_limit(value: Any) -> str:
    value = str(value).strip()
    if value:
        import limits  # Flask-Limiter's own parser: a typo fails here, not on the first request

        limits.parse_many(value)
    return value


def _origins(value: Any) -> tuple[str, ...]:
    origins = _models(value)  # the same comma-separated list
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError(f"{origin!r} is not * or an http(s):// origin")
    return origins


_CASTS: dict[str, Callable[[Any], Any]] = {
    "MODEL": _text,
    "ALLOWED_MODELS": _models,
    "SYSTEM_PROMPT": str,
    "DEFAULT_PROMPT": _text,
    "MAX_PROMPT_CHARS": _positive(int),
    "MAX_TOKENS_LIMIT": _positive(int),
    "MAX_CONTENT_LENGTH": _positive(int),
    "CONNECT_TIMEOUT": _positive(float),
    "FIRST_TOKEN_TIMEOUT": _positive(float),
    "IDLE_TIMEOUT": _positive(float),
    "REQUEST_TIMEOUT": _positive(float),
    "STREAM_TIMEOUT": _positive(float),
    "MAX_ANSWER_BYTES": _positive(int),
    "CLIENT_TIMEOUT": _positive(float),
    "MAX_RETRIES": _non_negative(int),
    "UPSTREAM_MAX_CONNECTIONS": _positive(int),
    "UPSTREAM_TRANSPORT": _choice("lean", "httpx"),
    "FAIR_SLICE": _non_negative(float),
    "STREAM_INTERVAL": _at_most(1.0, _non_negative(float)),
    "DEMO_MAX_CONCURRENCY": _positive(int),
    "MAX_INFLIGHT": _non_negative(int),
    "API_KEYS": _api_keys,
    "RATE_LIMIT": _rate_limit,
    "RATE_LIMIT_STORAGE_URI": _text,
    "CORS_ORIGINS": _origins,
    "READY_CACHE_SECONDS": _positive(float),
    "READY_TIMEOUT": _positive(float),
}

# Never quoted in an error message: keys, and storage URIs that may hold a password.
_SECRET = {"API_KEYS", "RATE_LIMIT_STORAGE_URI"}


class ConfigError(RuntimeError):
    """A setting has a value the service cannot run with."""


def load(app: Flask, overrides: dict[str, Any] | None = None) -> None:
    """Defaults, then `FLASKAPP_*` from the environment, then `overrides`; cast and check all."""
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("FLASKAPP")
    if overrides:
        app.config.from_mapping(overrides)
    for name, cast in _CASTS.items():
        try:
            app.config[name] = cast(app.config[name])
        except (TypeError, ValueError) as exc:
            shown = "hidden" if name in _SECRET else repr(app.config[name])
            raise ConfigError(f"FLASKAPP_{name}: {exc} (got {shown})") from None
    if app.config["STREAM_INTERVAL"] >= app.config["IDLE_TIMEOUT"]:
        raise ConfigError("FLASKAPP_STREAM_INTERVAL: must be shorter than FLASKAPP_IDLE_TIMEOUT "
                          f"(got {app.config['STREAM_INTERVAL']:g} s and {app.config['IDLE_TIMEOUT']:g} s)")
    # The configured model is always on the allow-list.
    app.config["ALLOWED_MODELS"] = (app.config["MODEL"],) + tuple(
        m for m in app.config["ALLOWED_MODELS"] if m != app.config["MODEL"])
