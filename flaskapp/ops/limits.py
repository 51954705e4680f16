"""Rate limits (Flask-Limiter): `FLASKAPP_RATE_LIMIT` requests per gateway key.

One budget per caller across all endpoints: per gateway key when keys are on, per
client address when they are off (behind a proxy, make the proxy's address header
count first: see docs/operations.md). Routes whose policy says `limited=False` (probes,
the metrics scrape, static files: ops/policy.py), CORS preflights and unknown paths
(404, which cost nothing) are never limited. Past the limit: 429 `rate_limit_error`
with a `Retry-After` in seconds. With no limit configured nothing is installed at all.

Counts live in `FLASKAPP_RATE_LIMIT_STORAGE_URI`: `memory://` is per worker process
(so with N workers a caller may get up to N times the limit); `redis://host:6379`
shares one count between every worker and instance. If that storage is unreachable
the limiter lets requests through and logs it (it fails open): an outage of the
limiter's store should not become an outage of the gateway.
"""
from __future__ import annotations

import math
import time

from flask import Flask, g, request
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit
from flask_limiter.util import get_remote_address

from ..config import ConfigError
from ..errors import ApiError
from ..web.handlers import error_response
from .policy import GUARDED, Policy
from .requestlog import current_record


class RateLimited(ApiError):
    """429 rate_limit_error: this caller used up its budget; `Retry-After` says when to return."""

    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"


def caller() -> str:
    """Whom a request counts against: its gateway key's id, else its address."""
    record = current_record()
    key_id = record.key_id if record is not None else None
    return f"key:{key_id}" if key_id else f"addr:{get_remote_address()}"


def _note_reset(limit: RequestLimit) -> None:
    g.rate_limit_reset_at = limit.reset_at  # for rate_limited() below: this module's own


def init_app(app: Flask, policies: dict[str | None, Policy]) -> None:
    """Call after the app's own request steps are installed: the limit is per key, so the key
    must be known first (Flask-Limiter adds its own `before_request`, which runs after them)."""
    rate = app.config["RATE_LIMIT"]
    if not rate:
        return
    try:
        limiter = Limiter(
            caller, app=app, application_limits=[rate], storage_uri=app.config["RATE_LIMIT_STORAGE_URI"],
            strategy="sliding-window-counter",  # no double bursts at window edges, O(1) storage a caller
            key_prefix="flaskapp", headers_enabled=False, swallow_errors=True, on_breach=_note_reset)
    except Exception as exc:  # an unknown scheme, or redis:// without the redis package
        # Not the URI itself: it may hold a password.
        scheme = app.config["RATE_LIMIT_STORAGE_URI"].partition(":")[0]
        raise ConfigError(f"FLASKAPP_RATE_LIMIT_STORAGE_URI: cannot use a {scheme}: storage "
                          f"({type(exc).__name__}; redis:// needs `pip install redis`)") from None

    @limiter.request_filter
    def exempt() -> bool:
        return not policies.get(request.endpoint, GUARDED).limited or request.method == "OPTIONS"

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc: RateLimitExceeded):
        reset_at = g.get("rate_limit_reset_at") or time.time() + 1
        retry_after = max(1, math.ceil(reset_at - time.time()))
        return error_response(RateLimited(
            f"Rate limit reached: {exc.limit.limit}. Retry after {retry_after} s.",
            retry_after=str(retry_after)))
