"""`GET /demo`: blocking and streaming side by side in the browser; `POST /demo/run`: the load experiment.

The page itself (templates/demo.html, static/demo.js, static/demo.css) calls the
public `/` and `/stream` endpoints from the browser, exactly as any client would;
`/demo` only renders it with the settings the script needs. The concurrent mode is
run by the server (`demo_run`), which streams each request's events to the page.

`/demo` is open; `/demo/run` is guarded like `/` and `/stream` (it spends 2N model calls),
and passes the caller's gateway key on to each of its requests. The page keeps the key
in its own memory only.
"""
from __future__ import annotations

import re

from flask import Blueprint, Response, current_app, g, render_template, request

from ..errors import InvalidRequest
from ..ops import limits
from . import demo_run, params
from .relay import STREAM_HEADERS

bp = Blueprint("demo", __name__)

# The page runs only its own files: no inline script, nothing from elsewhere.
# `img-src data:` is for the empty inline favicon, which spares a 404 in the console.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
DEFAULT_CONCURRENCY = 10


@bp.route("/demo")
def demo() -> Response:
    config = current_app.config
    max_concurrency = config["DEMO_MAX_CONCURRENCY"]
    html = render_template(
        "demo.html",
        default_prompt=config["DEFAULT_PROMPT"],
        max_tokens_limit=config["MAX_TOKENS_LIMIT"],
        max_concurrency=max_concurrency,
        default_concurrency=min(DEFAULT_CONCURRENCY, max_concurrency),
        needs_key=bool(config["API_KEYS"]),
    )
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


@bp.route("/demo/run", methods=["POST"])
def run() -> Response:
    """N of each kind at once (`?count=N`, the body as for `/`), each request's events as SSE."""
    config = current_app.config
    count = _count(request.args.get("count"), config["DEMO_MAX_CONCURRENCY"])
    chat = params.parse(request, config)
    g.record.model = chat.model
    body = {"prompt": chat.prompt, "system": chat.system, "model": chat.model}
    if chat.max_tokens is not None:
        body["max_tokens"] = chat.max_tokens
    if chat.temperature is not None:
        body["temperature"] = chat.temperature
    # A request may be silent until its whole answer is ready: as long as a blocking call may take.
    timeout = config["REQUEST_TIMEOUT"] + config["CONNECT_TIMEOUT"]
    experiment = demo_run.Experiment.for_request(
        request.environ, count, body, request.headers.get("Authorization"), timeout,
        limits.on_behalf_headers() if config["RATE_LIMIT"] else None)  # 2N calls from the caller's budget
    return Response(demo_run.events(experiment, request.environ, g.record),
                    content_type="text/event-stream; charset=utf-8", headers=STREAM_HEADERS)


def _count(value: str | None, cap: int) -> int:
    if value is None or not re.fullmatch(r"[0-9]{1,9}", value) or not 1 <= int(value) <= cap:
        raise InvalidRequest(f"'count' must be a whole number from 1 to {cap}.", param="count")
    return int(value)
