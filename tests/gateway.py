"""A test app for the gateway-operations tests: settings on top of an upstream that is not there."""
from __future__ import annotations

from flask import Flask

from flaskapp import create_app
from servers import SECRET_KEY

NOWHERE = "http://127.0.0.1:9/v1"  # the discard port: nothing listens, so no upstream call succeeds


def make_app(base_url: str = NOWHERE, **settings) -> Flask:
    return create_app({"TESTING": True, "MAX_RETRIES": 0, "UPSTREAM_CLIENT_OPTIONS": {
        "api_key": SECRET_KEY, "base_url": base_url}, **settings})


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
