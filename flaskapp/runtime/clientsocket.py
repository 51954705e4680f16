"""Client connections of gunicorn's gevent worker: one system call per write, and a stall timeout.

A relayed stream is many small writes: one per upstream read, often a single token.
gevent's `sendall` prepares every one of them for a payload larger than the socket
buffer, which a token never is: a memoryview, a getsockopt(SO_SNDBUF) system call, a
clock read and three nested calls, costing more than the send itself. Here a write
that fits the buffer, nearly all of them, is one send(); only what is left over, on
a slow client, waits for room.

Every connection also gets `FLASKAPP_CLIENT_TIMEOUT` as its socket timeout, as nginx's
`client_body_timeout` and `send_timeout`: a client that sends no byte of its request
body, or takes no byte of our answer, for that long is dropped. A stalled body raises
`socket.timeout` in the view (a 408, `errors.py`); a stalled write raises it from
gunicorn's write, which ends the relay and its upstream call, and closes the
connection here without a traceback. Waiting for the next request on a kept-alive
connection stays bounded by gunicorn's `keepalive`.

Each piece of a chunked body goes out through `ChunkedResponse.write`: gunicorn's own
write of one piece makes five calls (its write, send_headers, _emit_body, util.write,
write_chunk), each checking again what cannot change once the headers are out; a relayed
stream writes once per token. The bytes sent are the same.

Written for the versions in `runtime.WRITTEN_FOR`: `GeventWorker.handle` makes each
connection blocking (dropping any timeout) before serving it, and the keep-alive loop
waits for each request's head inside `worker.timeout_ctx()`, and HTTP/1 responses are
made from `gunicorn.http.wsgi.Response` (`wsgi.create`). TLS connections keep
gevent's own socket and get no timeout (TLS ends at nginx in deploy/).
"""
from __future__ import annotations

import contextlib
import socket
from typing import Any, Iterator

import gevent
import gevent.socket
from gunicorn.http import wsgi


class ClientSocket(gevent.socket.socket):
    __slots__ = ()  # the same layout as gevent's socket, so a connection can become one
    stall_timeout: float | None = None  # seconds without progress; set per worker by install()

    def setblocking(self, flag: bool) -> None:
        # gunicorn's worker makes every connection blocking, which would clear the timeout.
        super().setblocking(flag)
        if flag:
            self.settimeout(self.stall_timeout)

    def sendall(self, data: Any, flags: int = 0) -> None:
        try:
            sent = self._sock.send(data, flags)  # the real, non-blocking socket
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            view = memoryview(data)
            while sent < len(data):
                # gevent's send waits up to the timeout for room. Its sendall counts the
                # timeout over the whole write: a slow reader still reading would be dropped.
                sent += self.send(view[sent:], flags)


class ChunkedResponse(wsgi.Response):
    """gunicorn's HTTP/1 response, writing a chunked body's piece as one format and one send."""

    def write(self, arg: bytes) -> None:
        # Once the headers are out, chunked means a body is allowed and has no length to keep
        # to (gunicorn's is_chunked); an empty piece would end the body, and is gunicorn's case.
        if self.chunked and self.headers_sent and arg.__class__ is bytes and arg:
            self.sent += len(arg)
            self.sock.sendall(b"%X\r\n%s\r\n" % (len(arg), arg))
        else:
            super().write(arg)


def install(worker: Any) -> None:
    """gunicorn's post_worker_init hook, for gevent workers: hand requests ClientSockets."""
    config = getattr(worker.wsgi, "config", {})  # worker.wsgi: the Flask app
    socket_class = type("ClientSocket", (ClientSocket,),
                        {"__slots__": (), "stall_timeout": config.get("CLIENT_TIMEOUT")})
    handle, serve, keepalive = worker.handle, worker.handle_request, worker.timeout_ctx

    def handle_client(listener: Any, client: Any, address: Any) -> None:
        if type(client) is gevent.socket.socket:  # plain TCP; a TLS socket has its own sendall
            client.__class__ = socket_class
        handle(listener, client, address)

    def handle_request(*args: Any) -> Any:
        try:
            return serve(*args)
        except socket.timeout:
            # The client took no byte of the answer for CLIENT_TIMEOUT. gunicorn would log
            # a traceback for it; end the connection quietly, as a client leaving is.
            raise StopIteration from None

    @contextlib.contextmanager
    def wait_for_next_request() -> Iterator[None]:
        # Where CLIENT_TIMEOUT is shorter than keepalive, it ends an idle connection first:
        # as quietly as gunicorn's own keep-alive timeout does (no request: the loop ends).
        with keepalive():
            try:
                yield
            except socket.timeout:
                pass

    wsgi.Response = ChunkedResponse  # what wsgi.create makes for each HTTP/1 request of this worker
    # The worker's servers are made after this hook, from these.
    worker.handle, worker.handle_request, worker.timeout_ctx = handle_client, handle_request, wait_for_next_request
