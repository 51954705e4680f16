"""CORS (flask-cors): off unless `FLASKAPP_CORS_ORIGINS` names the origins allowed to call.

Callers authenticate with a bearer key, never with cookies, so credentials are not
allowed across origins. Preflights (OPTIONS) pass without a key or a rate-limit hit:
browsers send them without credentials. The request id and `Retry-After` are
exposed so browser code can read them.
"""
from __future__ import annotations

from flask import Flask
from flask_cors import CORS

ALLOWED_HEADERS = ["Authorization", "Content-Type", "X-Request-ID"]
EXPOSED_HEADERS = ["X-Request-ID", "Retry-After"]


def init_app(app: Flask) -> None:
    origins = app.config["CORS_ORIGINS"]
    if origins:
        CORS(app, origins=list(origins), allow_headers=ALLOWED_HEADERS, expose_headers=EXPOSED_HEADERS,
             supports_credentials=False, max_age=600)
