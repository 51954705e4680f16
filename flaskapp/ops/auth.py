"""Gateway keys: with `FLASKAPP_API_KEYS` set, callers must send `Authorization: Bearer <key>`.

One request step guards every endpoint whose policy (ops/policy.py) asks for a key;
a view that declares none needs one, so routes added later are covered. With no keys
configured the step is not installed at all. Open without a key, on purpose:

    /healthz          liveness probe: says nothing but "the process answers"
    /readyz           readiness probe: load balancers rarely send credentials, and it says
                      only up or down (its upstream check is cached, so it cannot be used
                      to hammer the model server)
    /demo, /static/*  the demo page itself holds no secret; the answers it asks for
                      are guarded like any other call, so with keys on it shows the 401
    OPTIONS           CORS preflights, which browsers send without credentials

/metrics needs a key: traffic, models and error counts are the operator's business
(Prometheus sends one with `authorization: {credentials: ...}` in its scrape config).

Keys are compared as SHA-256 digests with `hmac.compare_digest`, against every key
whether or not an earlier one matched, so neither the time taken nor its length tells
a caller how close a guess was. The key itself is never logged or stored: rate limits
see only the record's `key_id`, a short digest that names the key.
"""
from __future__ import annotations

import hashlib
import hmac

from typing import Callable

from flask import Flask, Response, request

from ..errors import ApiError
from .policy import GUARDED, Policy
from .requestlog import current_record


class AuthenticationError(ApiError):
    """401 authentication_error: no gateway key, or not one of ours."""

    status, type, code = 401, "authentication_error", "invalid_api_key"


class KeyRing:
    """The gateway keys, kept only as digests."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._digests = [(_digest(key), _digest(key).hex()[:12]) for key in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def identify(self, key: str) -> str | None:
        """The id of the key that matches `key`, or None; the same work whatever the answer."""
        candidate = _digest(key)
        found = None
        for digest, key_id in self._digests:
            if hmac.compare_digest(digest, candidate):
                found = key_id
        return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def bearer_token(header: str | None) -> str | None:
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def steps(app: Flask, policies: dict[str | None, Policy]) -> tuple[list[Callable[[], None]], list]:
    """The request and response steps for the app's keys: none at all when there are no keys."""
    keys = app.extensions["gateway_keys"] = KeyRing(app.config["API_KEYS"])
    if not keys:
        return [], []

    def require_key() -> None:
        if not policies.get(request.endpoint, GUARDED).key or request.method == "OPTIONS":
            return
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            raise AuthenticationError("This gateway needs an API key: send `Authorization: Bearer <key>`.")
        key_id = keys.identify(token)
        if key_id is None:
            raise AuthenticationError("Incorrect API key provided.")
        record = current_record()
        if record is not None:
            record.key_id = key_id

    return [require_key], [challenge]


def challenge(response: Response) -> Response:
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="flaskapp"'
    return response
