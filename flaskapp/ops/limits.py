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

Requests the service sends itself on a caller's behalf (the demo's run: 2N model calls to
its own loopback address) count against that caller, not against 127.0.0.1: they carry
`on_behalf_headers()`, the caller's id signed with a secret the gunicorn master hands its
workers, and the limiter trusts that header only from a loopback address with a valid
signature.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
import secrets
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


ON_BEHALF_HEADER = "X-Flaskapp-On-Behalf-Of"
# Set by gunicorn.conf.py's master for all its workers: a request one worker sends may reach another.
SECRET_ENV = "_FLASKAPP_LOOPBACK_SECRET"
_secret = os.environ.get(SECRET_ENV, "").encode() or secrets.token_bytes(32)  # else: this process only


def _signature(identity: str) -> str:
    return hmac.new(_secret, identity.encode(), hashlib.sha256).hexdigest()


def on_behalf_headers() -> dict[str, str]:
    """Headers that make a request this process sends to itself count against the current caller."""
    identity = caller()
    return {ON_BEHALF_HEADER: f"{identity} {_signature(identity)}"}


def _on_behalf_of() -> str | None:
    header = request.headers.get(ON_BEHALF_HEADER)
    if header is None:
        return None
    identity, _, signature = header.rpartition(" ")
    try:
        loopback = ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        loopback = False
    if loopback and identity and hmac.compare_digest(signature, _signature(identity)):
        return identity
    return None


def caller() -> str:
    """Whom a request counts against: its gateway key's id, else the caller the service
    itself sends it for, else its address."""
    record = current_record()
    key_id = record.key_id if record is not None else None
    if key_id:
        return f"key:{key_id}"
    return _on_behalf_of() or f"addr:{get_remote_address()}"


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
