"""Flask's own per-request cost: a hello-world app, the yardstick for flaskapp's per-request work.

`/` is a plain view; `/stream` streams its one piece through `stream_with_context`, as
flaskapp's streaming views do. Nothing else: no hooks, no extensions.
"""
from flask import Flask, Response, stream_with_context

app = Flask(__name__)


@app.route("/")
def plain() -> Response:
    return Response("hello\n", content_type="text/plain; charset=utf-8")


@app.route("/stream")
def stream() -> Response:
    def body():
        yield b"hello\n"
    return Response(stream_with_context(body()), content_type="text/plain; charset=utf-8")


@app.route("/healthz")
def healthz() -> Response:
    return Response("ok\n", content_type="text/plain; charset=utf-8")
