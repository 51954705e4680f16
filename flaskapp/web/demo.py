"""`GET /demo`: blocking and streaming side by side in the browser.

The page itself (templates/demo.html, static/demo.js, static/demo.css) calls the
public `/` and `/stream` endpoints from the browser, exactly as any client would;
this view only renders it with the settings the script needs.
"""
from __future__ import annotations

from flask import Blueprint, Response, current_app, render_template

bp = Blueprint("demo", __name__)

DEFAULT_MAX_CONCURRENCY = 20

# The page runs only its own files: no inline script, nothing from elsewhere.
# `img-src data:` is for the empty inline favicon, which spares a 404 in the console.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@bp.route("/demo")
def demo() -> Response:
    config = current_app.config
    max_concurrency = max(1, int(config.get("DEMO_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY)))
    html = render_template(
        "demo.html",
        default_prompt=config["DEFAULT_PROMPT"],
        max_tokens_limit=config["MAX_TOKENS_LIMIT"],
        max_concurrency=max_concurrency,
        # Browsers open at most six HTTP/1.1 connections to one server: three of each
        # kind is the largest batch that is not queued inside the browser.
        default_concurrency=min(3, max_concurrency),
    )
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response
