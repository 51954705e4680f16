"""flaskapp: large-language-model answers from Flask, blocking or streamed as they are written."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(test_config: dict[str, Any] | None = None) -> "Flask":
    # Imported here, not at the top: gunicorn's master imports this package for the
    # embedded emulator, and the openai client and its HTTP stack belong in the workers,
    # imported after gevent has patched them.
    _hide_trio_from_gevent_workers()
    from flask import Flask

    from . import cli, config
    from .ops import auth, cors, health, limits, metrics, requestlog
    from .web import demo, handlers, prompt, v1
    from .upstream.client import Upstream, UpstreamSettings

    app = Flask(__name__)
    config.load(app, test_config)

    upstream_options = app.config.get("UPSTREAM_CLIENT_OPTIONS", {})  # tests: a fake transport
    app.extensions["upstream"] = Upstream(UpstreamSettings.from_config(app.config), **upstream_options)

    handlers.init_app(app)
    # Request hooks run in this order: request id and record, gateway key, rate limit.
    requestlog.init_app(app)
    auth.init_app(app)
    limits.init_app(app)
    cors.init_app(app)
    metrics.init_app(app)
    health.init_app(app)
    app.register_blueprint(prompt.bp)
    app.register_blueprint(v1.bp)
    app.register_blueprint(demo.bp)
    cli.init_app(app)
    _share_gunicorn_logging()
    return app


def _hide_trio_from_gevent_workers() -> None:
    # httpcore2 imports trio when it is installed, and trio fails to import once gevent
    # has patched `select` (no epoll): every upstream call would fail. The sync client
    # never uses trio, so under gevent it is made to look absent.
    import select
    import sys

    if not hasattr(select, "epoll") and "trio" not in sys.modules:
        sys.modules["trio"] = None  # type: ignore[assignment]


def _share_gunicorn_logging() -> None:
    # Under gunicorn, our log lines go where its error log goes, at its level.
    gunicorn_log = logging.getLogger("gunicorn.error")
    ours = logging.getLogger("flaskapp")
    if gunicorn_log.handlers and not ours.handlers:
        ours.handlers = gunicorn_log.handlers
        ours.setLevel(gunicorn_log.level)
        ours.propagate = False
        # No line in gunicorn's format names a thread; asking for one on every record would
        # make gevent build a dummy Thread object for each request's greenlet.
        logging.logThreads = False
