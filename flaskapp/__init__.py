"""flaskapp: large-language-model answers from Flask, blocking or streamed as they are written."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask, Response


def create_app(test_config: dict[str, Any] | None = None) -> "Flask":
    # Imported here, not at the top: gunicorn's master imports this package for the
    # embedded emulator, and the openai client and its HTTP stack belong in the workers,
    # imported after gevent has patched them.
    _hide_trio_from_gevent_workers()
    from flask import Flask

    class App(Flask):
        def ensure_sync(self, func):  # type: ignore[no-untyped-def]
            # Every view and hook here is synchronous (gevent does the waiting): skip Flask's
            # check for a coroutine function, paid on every hook and view of every request.
            return func

    from . import cli, config
    from .ops import health, metrics, policy
    from .web import demo, handlers, prompt, v1
    from .upstream.client import Upstream, UpstreamSettings

    app = App(__name__)
    config.load(app, test_config)

    upstream_options = app.config.get("UPSTREAM_CLIENT_OPTIONS", {})  # tests: a fake transport
    app.extensions["upstream"] = Upstream(UpstreamSettings.from_config(app.config), **upstream_options)

    handlers.init_app(app)
    metrics.init_app(app)
    health.init_app(app)
    app.register_blueprint(prompt.bp)
    app.register_blueprint(v1.bp)
    app.register_blueprint(demo.bp)
    # The demo's views are declared here, beside their blueprint's registration.
    policy.declare(demo.demo, policy.Policy(key=False))  # the page holds no secret; its calls are guarded
    policy.declare(demo.run, policy.GUARDED)  # 2N model calls
    _install_steps(app, policy.compile_table(app))
    cli.init_app(app)
    _share_gunicorn_logging()
    return app


def _install_steps(app: "Flask", policies: dict) -> None:
    """Every request hook, in the order it must run: one list before the view, one after it.

    The record first (a request refused by any later step is logged), then the gateway
    key, then the rate limit (per key, so after it: Flask-Limiter adds its own
    `before_request`, registered last). A step with nothing to do (no keys, no limit, no
    CORS origins) is not installed at all.
    """
    from .ops import auth, cors, limits, metrics, requestlog

    key_steps, key_responses = auth.steps(app, policies)
    before = [requestlog.start(policies), *key_steps]
    # Response steps run in list order; the request log's last: it finishes the record.
    after = [*key_responses, metrics.count_stream, requestlog.end]
    app.extensions["request_steps"] = (before, after)

    @app.before_request
    def before_view() -> None:
        for step in before:
            step()

    @app.after_request
    def after_view(response: "Response") -> "Response":
        for step in after:
            response = step(response)
        return response

    limits.init_app(app, policies)
    cors.init_app(app)


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
        from .ops import requestlog

        requestlog.write_directly()
