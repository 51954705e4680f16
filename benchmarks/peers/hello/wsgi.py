"""Flask's own per-request cost: a hello-world app, the yardstick for flaskapp's per-request work.

`/` is a plain view; `/stream` streams its one piece through `stream_with_context`, as
flaskapp's streaming views do. Nothing else: no hooks, no extensions.

`/relay` and `/relay/whole` add the one thing a relay cannot skip: a model call, as bare
as it gets. One POST to the upstream (`OPENAI_BASE_URL`) on a kept-alive connection, its
answer passed on unparsed: streamed piece by piece, or whole once it has all come. No
checks, no deadlines, no log, no metrics: the floor under flaskapp's `/stream` and `/`.
With `HELLO_RELAY=1` in its environment, `/stream` and `/` are those relays: the load
tester asks for those paths (`--server-env HELLO_RELAY=1`).
"""
import os
import socket
from urllib.parse import urlsplit

from flask import Flask, Response, request, stream_with_context

app = Flask(__name__)

_UPSTREAM = urlsplit(os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"))
_HEAD = (f"POST {_UPSTREAM.path.rstrip('/')}/chat/completions HTTP/1.1\r\nHost: {_UPSTREAM.netloc}\r\n"
         f"Authorization: Bearer {os.environ.get('OPENAI_API_KEY', '')}\r\n"
         "Content-Type: application/json\r\n").encode()
_RELAY_ALL = os.environ.get("HELLO_RELAY") == "1"
_idle: list[socket.socket] = []  # kept-alive upstream connections, as any pool keeps them


@app.route("/")
def plain() -> Response:
    if _RELAY_ALL:
        return relay_whole()
    return Response("hello\n", content_type="text/plain; charset=utf-8")


@app.route("/stream")
def stream() -> Response:
    if _RELAY_ALL:
        return relay()
    def body():
        yield b"hello\n"
    return Response(stream_with_context(body()), content_type="text/plain; charset=utf-8")


@app.route("/healthz")
def healthz() -> Response:
    return Response("ok\n", content_type="text/plain; charset=utf-8")


def _call(stream: bool):
    """The upstream's answer body as it arrives (chunked framing left in: nobody parses it)."""
    prompt = request.args.get("prompt", "hi")
    max_tokens = request.args.get("max_tokens")
    body = (b'{"model":"gpt-4","stream":%s,%s"messages":[{"role":"user","content":"%s"}]}'
            % (b"true" if stream else b"false", b'"max_tokens":%d,' % int(max_tokens) if max_tokens else b"",
               prompt.encode()))
    upstream = _idle.pop() if _idle else socket.create_connection((_UPSTREAM.hostname, _UPSTREAM.port))
    upstream.sendall(_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    data = upstream.recv(65536)
    head, _, data = data.partition(b"\r\n\r\n")
    chunked = b"chunked" in head.lower()
    length = None if chunked else int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    received = len(data)
    while True:
        if data:
            yield data
        if (data.endswith(b"0\r\n\r\n") if chunked else received >= length):
            break
        data = upstream.recv(65536)
        if not data:
            upstream.close()
            return
        received += len(data)
    _idle.append(upstream)


@app.route("/relay")
def relay() -> Response:
    return Response(stream_with_context(_call(stream=True)), content_type="text/event-stream")


@app.route("/relay/whole")
def relay_whole() -> Response:
    return Response(b"".join(_call(stream=False)), content_type="application/json")
